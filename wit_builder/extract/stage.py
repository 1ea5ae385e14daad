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

import zlib
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder import runner, safety, stages, storage, urls
from wit_builder.extract import html, tabular, warc, wat
from wit_builder.extract.plan import InputFile, plan_files
from wit_builder.extract.records import WRONG_FORMAT, Corrupt, Page, Row, Skip, Table
from wit_builder.errors import UserError

COLUMNS = ["uid", "url", "text", "page_url", "source", "kind"]
ROWS_SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS])
# What extract_file yields: candidate rows (tally null) and tally rows (key in `tally`, count in `n`).
SCHEMA = pa.schema([*ROWS_SCHEMA, ("tally", pa.string()), ("n", pa.int64())])
TALLY_SCHEMA = pa.schema([("tally", pa.string()), ("n", pa.int64())])
ROWS_PER_FILE = 1_000_000  # a task starts a new Parquet file after this many rows


# --- the per-file task (executors) ------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """What a task needs from the config (small and picklable)."""
    max_text_chars: int
    max_url_chars: int
    max_page_bytes: int
    include_title: bool
    columns: tabular.Columns
    batch_rows: int
    max_record_bytes: int
    networks: tuple  # http(s) inputs: [download] allow_networks (ip_network objects)

    @classmethod
    def from_config(cls, cfg) -> "Options":
        s = cfg.extract
        return cls(s.max_text_chars, s.max_url_chars, s.max_page_bytes, s.include_title,
                   tabular.Columns(s.url_column, s.text_column, s.page_url_column),
                   cfg.spark.arrow_batch_rows, s.max_record_bytes,
                   safety.parse_networks(cfg.download.allow_networks))


_ARCHIVES = ("warc", "wat")


def _archive_head(path: str) -> bytes:
    """A WARC or WAT file's first bytes, decompressed when gzipped; b"" when they do not
    decompress (damage: the reader counts it)."""
    with storage.open_file(path) as raw:
        try:
            return storage.gunzipped(raw).read(64)
        except (EOFError, OSError, zlib.error):  # gzip.BadGzipFile is an OSError
            return b""


def _items(f: InputFile, opts: Options) -> Iterator:
    """The reader items of one file."""
    if f.format in tabular.FORMATS:
        yield from tabular.read(lambda: storage.open_file(f.path), f.format, opts.columns,
                                opts.batch_rows, opts.max_record_bytes)
        return
    if f.format in _ARCHIVES and not warc.in_format(_archive_head(f.path)):
        yield WRONG_FORMAT
        return
    with storage.open_file(f.path) as fileobj:
        if f.format == "warc":
            yield from warc.read(fileobj, opts.max_page_bytes, opts.max_record_bytes)
        elif f.format == "wat":
            yield from wat.read(fileobj, opts.max_record_bytes)
        else:
            yield from html.read_saved(fileobj, f.page_url, opts.max_page_bytes)


class _Rows:
    """Candidate rows of one file and the file's tally. Readers' items are gathered column by
    column (raw values); the checks, URL resolution and uids run on whole batches
    (urls.check_texts, urls.check_urls), with the same results as the per-row functions."""

    def __init__(self, source: str, opts: Options):
        self.source, self.opts = source, opts
        self.tally = Counter()
        self._reset()

    def _reset(self) -> None:
        # images of pages: src, alt, title (one entry per image); base URL, page URL and image
        # count (one entry per page)
        self.img = ([], [], [])
        self.pages = ([], [], [])
        self.tables: list[Table] = []
        self.pending = 0

    def add(self, item) -> None:
        if isinstance(item, Table):
            self.tally["records_read"] += len(item.url)
            self.tables.append(item)
            self.pending += len(item.url)
            return
        self.tally["records_read"] += 1
        if isinstance(item, Page):
            if item.images_cut is not None:
                self.tally["pages_truncated"] += 1
                if item.images_cut:  # their titles are unknown: one candidate each, the alt
                    self.tally["drop:page_truncated"] += item.images_cut
            if item.textless:
                self.tally["drop:empty_text"] += item.textless
            if not item.images:
                if not item.textless:
                    self.tally["skip:no_images"] += 1
                return
            for column, values in zip(self.img, zip(*item.images)):
                column.extend(values)
            bases, pages, counts = self.pages
            bases.append(urls.base_url(item.page_url, item.base_href))
            pages.append(item.page_url)
            counts.append(len(item.images))
            self.pending += len(item.images)
        elif isinstance(item, Row):
            self.add(Table(*(pa.array([v], pa.string()) for v in item)))
            self.tally["records_read"] -= 1
        elif isinstance(item, Skip):
            self.tally["skip:" + item.reason] += 1
        elif isinstance(item, Corrupt):
            self.tally["drop:" + item.reason] += 1

    def _image_candidates(self):
        """(text, kind, raw url, base, page url) of the gathered images' candidates: each image's
        alt, then its title when wanted, present and not the alt (html.texts), texts cleaned.
        The last three are dictionary arrays over the images and pages: only the rows whose
        text passes are ever spelled out."""
        src, alt, title = (pa.array(c, pa.string()) for c in self.img)
        bases, pages, counts = self.pages
        page_of_image = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        n = len(src)
        image = np.arange(n, dtype=np.int32)
        text, kind = urls.clean_texts(alt), pa.repeat("alt", n)
        titled = np.flatnonzero(pc.is_valid(title).to_numpy(zero_copy_only=False))
        if self.opts.include_title and len(titled):
            title = urls.clean_texts(title.take(titled))
            extra = pc.and_(pc.not_equal(title, ""), pc.not_equal(title, text.take(titled)))
            has_extra = np.zeros(n, bool)
            has_extra[titled[extra.to_numpy(zero_copy_only=False)]] = True
            if has_extra.any():  # such an image has two candidates: its alt, then its title
                image = np.repeat(image, has_extra + 1)
                is_title = np.concatenate([[False], image[1:] == image[:-1]])
                # texts: the alts (n), then the extra titles in order
                take = np.where(is_title, n + np.cumsum(is_title) - 1, image)
                text = pa.concat_arrays([text, title.filter(extra)]).take(take)
                kind = pc.if_else(is_title, "title", "alt")
        page = pa.array(page_of_image[image])
        return (text, kind, pa.DictionaryArray.from_arrays(image, src),
                pa.DictionaryArray.from_arrays(page, pa.array(bases, pa.string())),
                pa.DictionaryArray.from_arrays(page, pa.array(pages, pa.string())))

    def _table_candidates(self):
        t = self.tables
        text = urls.clean_texts(pa.concat_arrays([x.text for x in t]))
        page = pa.concat_arrays([x.page_url for x in t])
        return text, pa.repeat("tabular", len(text)), pa.concat_arrays([x.url for x in t]), page, page

    def _drop(self, reasons: pa.Array) -> pa.Array:
        """Counts the rows' drop reasons; the mask of the rows kept (reason null)."""
        keep = pc.is_null(reasons)
        for count in pc.value_counts(reasons.drop_null()).to_pylist():
            self.tally["drop:" + count["values"]] += count["counts"]
        return keep

    def flush(self) -> Iterator[pa.RecordBatch]:
        """The checked rows gathered so far (nothing when there are none)."""
        parts = []
        if self.img[0]:
            parts.append(self._image_candidates())
        if self.tables:
            parts.append(self._table_candidates())
        self._reset()
        for columns in parts:
            # A row whose text fails is dropped for its text: its URL is not looked at.
            keep = self._drop(urls.check_texts(columns[0], self.opts.max_text_chars))
            text, kind, raw, base, page = (_plain(c.filter(keep)) for c in columns)
            url, reasons = urls.check_urls(raw, base, self.opts.max_url_chars)
            keep = self._drop(reasons)
            kept = pc.sum(keep).as_py() or 0
            if not kept:
                continue
            self.tally["rows_out"] += kept
            url, text, page, kind = url.filter(keep), text.filter(keep), page.filter(keep), kind.filter(keep)
            uid = urls.uid_array(url, text)
            arrays = [uid, url, text, page.cast(pa.string()), pa.repeat(self.source, kept), kind,
                      pa.nulls(kept, pa.string()), pa.nulls(kept, pa.int64())]
            batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
            for start in range(0, kept, self.opts.batch_rows):
                yield batch.slice(start, self.opts.batch_rows)

    def tally_batch(self) -> pa.RecordBatch:
        keys = sorted(self.tally)
        n = len(keys)
        nulls = [pa.nulls(n, pa.string()) for _ in COLUMNS]
        return pa.RecordBatch.from_arrays(
            nulls + [pa.array(keys, pa.string()), pa.array([self.tally[k] for k in keys], pa.int64())],
            schema=SCHEMA)


def extract_file(f: InputFile, opts: Options) -> Iterator[pa.RecordBatch]:
    """Stream one file: Arrow batches of at most `batch_rows` rows, then its tally."""
    rows = _Rows(f.path, opts)
    try:
        with storage.networks(opts.networks):
            for item in _items(f, opts):
                rows.add(item)
                if rows.pending >= opts.batch_rows:
                    yield from rows.flush()
    except (FileNotFoundError, safety.Refused) as exc:
        # a *.paths entry that is not there, or whose host resolved to a refused address this
        # time (fsspec reports that as a missing file): counted, reported
        refused = isinstance(exc, safety.Refused) or isinstance(exc.__cause__, safety.Refused)
        rows.tally["files_refused" if refused else "files_missing"] += 1
    yield from rows.flush()
    yield rows.tally_batch()


def _plain(column: pa.Array) -> pa.Array:
    return column.dictionary_decode() if isinstance(column, pa.DictionaryArray) else column


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
        if f.format in _ARCHIVES and not warc.in_format(_archive_head(f.path)):
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
    tally = {k: int(n) for k, n in runner.sum_by(tallies, ["tally"], "n").itertuples(index=False)}
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
