"""The extract stage: crawl files (WARC, WAT, saved HTML) and candidate lists -> candidate rows.

The driver only plans (lists the inputs, picks each file's format, deals the files out to
tasks) and adds up a few counters. A Spark task streams each of its files through a format
reader (warc.py, wat.py, html.py, tabular.py), turns every image element or tabular row into a
row or a counted drop, writes the rows as Parquet into the stage folder itself (as img2dataset's
workers write their shards), and returns only a small tally per file (records read and skipped,
drops by reason). The tallies are summed by Spark, so the manifest's counts are exact; the rows
never pass through the JVM, and the stage is one Spark job. Local files of a few megabytes
(runner.tasks_on_driver), or of one task, skip Spark when the master is local: the driver runs
the same tasks in turn.

Accounting (NOTES.md): rows_in = candidate elements seen (one per `<img>` alt, per distinct
title, per WAT `IMG@/src` link, per tabular row) + one per corrupt record + one per `<img>`
tag in the part of a page beyond max_page_bytes (`page_truncated` drops; `pages_truncated`
counts those pages) + one per record longer than max_record_bytes (`record_too_long`: a WAT
record, a JSONL line, WARC header lines; skipped unread); records_read and records_skipped
count the records that hold no candidates by nature (requests, images, ...).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder import runner, safety, stages, storage
from wit_builder.extract import tabular, warc
from wit_builder.extract.files import ARCHIVES, COLUMNS, ROWS_SCHEMA, Options, archive_head, extract_file
from wit_builder.extract.plan import InputFile, plan_files
from wit_builder.extract.records import WRONG_FORMAT, Skip
from wit_builder.errors import UserError

TALLY_SCHEMA = pa.schema([("tally", pa.string()), ("n", pa.int64())])
ROWS_PER_FILE = 1_000_000  # a task starts a new Parquet file after this many rows


class _Parts:
    """One task's Parquet files in the stage folder: part-TTTTT-KKK.parquet, a new one every
    ROWS_PER_FILE rows. Names depend only on the task, so a retried task overwrites its own."""

    def __init__(self, out_dir: str, task: int):
        self.out_dir, self.task = out_dir, task
        self.file, self.writer, self.count, self.rows = None, None, 0, 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is not None and self.rows >= ROWS_PER_FILE:
            self.close()
        if self.writer is None:
            name = f"part-{self.task:05d}-{self.count:03d}.parquet"
            self.file = storage.open_file(storage.join(self.out_dir, name), "wb")
            self.writer = pq.ParquetWriter(self.file, ROWS_SCHEMA, compression="zstd")
            self.count, self.rows = self.count + 1, 0
        self.writer.write_batch(batch.select(COLUMNS))
        self.rows += batch.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.file.close()
        self.file, self.writer = None, None


def _run_task(opts: Options, out_dir: str, files: list[InputFile],
              task: int) -> Iterator[pa.RecordBatch]:
    """Task `task` (on the driver or a Spark task): its files' candidate rows written to the
    stage folder itself, so the rows never pass through the JVM; their tallies returned."""
    parts = _Parts(out_dir, task)
    try:
        for f in files:
            for out in extract_file(f, opts):
                if not out.num_rows:
                    continue
                if out.column("tally").null_count == out.num_rows:
                    parts.write(out)
                else:
                    yield out.select(["tally", "n"])
    finally:
        parts.close()


# --- the stage (driver) -------------------------------------------------------------------------

def _missing_columns(n_files: int, section) -> UserError:
    return UserError(f"{n_files} tabular input file(s) lack the url/text columns "
                     f"{section.url_column!r}/{section.text_column!r} (set --url-column/--text-column)")


def _file_problem(f: InputFile, opts: Options) -> Skip | None:
    """What makes a whole file unreadable, from its first bytes and header (tabular.problem;
    warc.in_format), checked on the driver to fail before Spark starts. A file not there or
    refused this time is left to its task to count."""
    try:
        if f.format in tabular.FORMATS:
            return tabular.problem(lambda: storage.open_file(f.path), f.format, opts.columns)
        if f.format in ARCHIVES and not warc.in_format(archive_head(f.path)):
            return WRONG_FORMAT
    except (FileNotFoundError, safety.Refused):
        pass
    return None


def _wrong_format(what: str) -> UserError:
    return UserError(f"{what} (the format --format gives, or the name when --format is auto): "
                     "give --format the format the files are in")


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The planned input files (Plan.detail); what is missing or unreadable fails here, before
    Spark starts."""
    section = cfg.extract
    opts = Options.from_config(cfg)
    notes = []
    files = plan_files(inputs, section.format, section.listing_prefix, opts.networks,
                 section.listing_local_files, log=notes.append)
    first_of_each_format = {f.format: f for f in reversed(files)}.values()
    with storage.networks(opts.networks):
        for f in first_of_each_format:
            problem = _file_problem(f, opts)
            if problem == tabular.MISSING:
                raise _missing_columns(1, section)
            if problem == WRONG_FORMAT:
                raise _wrong_format(f"{f.path} is not a {f.format} file")
    return stages.Plan(inputs, detail=files, notes=notes)


def _tasks(files: list[InputFile], partitions: int, cores: int) -> list[list[InputFile]]:
    """The files dealt out to the tasks: `partitions` of them, or up to four per core (a task
    per file when there are fewer files)."""
    n = min(len(files), partitions or 4 * cores)
    return [files[i::n] for i in range(n)]


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    spark, cfg, out_dir, files = ctx.spark, ctx.cfg, ctx.out, plan.detail
    section = cfg.extract
    opts = Options.from_config(cfg)
    tasks = _tasks(files, section.partitions, spark.default_parallelism)
    fs, path = storage.filesystem(out_dir)
    fs.makedirs(path, exist_ok=True)
    on_driver = runner.tasks_on_driver(ctx, [[f.path for f in task] for task in tasks])
    tallies = runner.run_tasks(ctx, tasks, partial(_run_task, opts, out_dir), TALLY_SCHEMA,
                               on_driver)
    sums = runner.sum_by(tallies, ["tally"], "n")
    tally = dict(zip(sums.column("tally").to_pylist(), sums.column("n").to_pylist()))
    skipped = {k.split(":", 1)[1]: v for k, v in tally.items() if k.startswith("skip:")}
    if skipped.get("missing_columns"):
        raise _missing_columns(skipped["missing_columns"], section)
    if skipped.get("wrong_format"):
        raise _wrong_format(f"{skipped['wrong_format']} input file(s) are not in their format")
    rows_out = tally.get("rows_out", 0)
    if not rows_out:  # the next stage reads a schema even when there are no rows
        with storage.open_file(storage.join(out_dir, "part-00000-000.parquet"), "wb") as f:
            pq.write_table(ROWS_SCHEMA.empty_table(), f, compression="zstd")
    if tally.get("files_missing"):
        ctx.log(f"extract: warning: {tally['files_missing']} listed input file(s) not found")
    if tally.get("files_refused"):
        ctx.log(f"extract: warning: {tally['files_refused']} input file(s) not read: their host "
                "resolved to a refused address (download.allow_networks)")
    drops = {k.split(":", 1)[1]: v for k, v in tally.items() if k.startswith("drop:")}
    return stages.StageResult(
        rows_in=rows_out + sum(drops.values()), rows_out=rows_out, drops=drops,
        extra={"records_read": tally.get("records_read", 0),
               "records_skipped": dict(sorted(skipped.items(), key=lambda kv: -kv[1])),
               "pages_truncated": tally.get("pages_truncated", 0),
               "files": len(files), "files_missing": tally.get("files_missing", 0),
               "files_refused": tally.get("files_refused", 0),
               "formats": dict(Counter(f.format for f in files))})
