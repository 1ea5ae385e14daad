"""The extract stage: crawl files (WARC, WAT, saved HTML) and candidate lists -> candidate rows.

The driver only plans (lists the inputs, picks each file's format) and adds up a few counters.
Each input file is one Spark task: it streams its file through a format reader (warc.py, wat.py,
html.py, tabular.py), turns every image element or tabular row into a row or a counted drop,
and returns Arrow batches plus one small tally (records read and skipped, drops by reason). The
tallies are summed by Spark, so the manifest's counts are exact without collecting any rows.

Accounting (NOTES.md): rows_in = candidate elements seen (one per `<img>` alt, per distinct
title, per WAT `IMG@/src` link, per tabular row) + one per corrupt record; records_read and
records_skipped count the records that hold no candidates by nature (requests, images, ...).
"""

from __future__ import annotations

import gzip
import math
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import pyarrow as pa

from wit_builder import storage
from wit_builder.download.safety import check_inputs, parse_networks
from wit_builder.extract import html, tabular, urls, warc, wat
from wit_builder.extract.records import Corrupt, Page, Row, Skip
from wit_builder.errors import UserError
from wit_builder.stages import StageResult

COLUMNS = ["uid", "url", "text", "page_url", "source", "kind"]
# The task output: candidate rows (tally null) and tally rows (key in `tally`, count in `n`).
SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS] + [("tally", pa.string()), ("n", pa.int64())])
SCHEMA_DDL = ", ".join(f"{name} string" for name in COLUMNS) + ", tally string, n bigint"
ROWS_PER_FILE = 1_000_000  # output Parquet files hold about this many rows ([extract] partitions = 0)


# --- planning (driver) ------------------------------------------------------------------------

_SUFFIXES = (((".paths",), "listing"), ((".wat",), "wat"), ((".warc", ".arc"), "warc"),
             ((".html", ".htm"), "html"), ((".parquet",), "parquet"), ((".csv",), "csv"),
             ((".tsv",), "tsv"), ((".jsonl", ".ndjson"), "jsonl"))


def format_of(path: str) -> str | None:
    """The format a file's name implies (`listing` for Common Crawl's *.paths[.gz])."""
    name = posixpath.basename(path).lower()
    name = name[:-3] if name.endswith(".gz") else name
    return next((fmt for suffixes, fmt in _SUFFIXES if name.endswith(suffixes)), None)


def _lines(path: str) -> Iterator[str]:
    with storage.open_file(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
        for line in stream:
            yield line.decode("utf-8", errors="replace")


def _listing_entries(listing: str, prefix: str) -> list[str]:
    """A *.paths[.gz] file's entries; relative ones resolved against `prefix` (default: the
    listing's own folder), e.g. s3://commoncrawl/ for Common Crawl's wat.paths.gz."""
    base = prefix or (listing.rsplit("/", 1)[0] if "/" in listing else ".")
    entries = []
    for line in _lines(listing):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            absolute = "://" in entry or entry.startswith("/")
            entries.append(entry if absolute else storage.join(base, entry.lstrip("/")))
    return entries


def _expand(path: str) -> tuple[list[str], bool]:
    """(files, named directly): a folder (recursively) or a glob expands, a file is itself."""
    fs, stripped = storage.filesystem(path)
    direct = not any(ch in stripped for ch in "*?[") and not fs.isdir(stripped)
    return storage.list_files(path), direct


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    page_url: str | None = None


def plan(inputs: list[str], fmt: str = "auto", listing_prefix: str = "",
         allowed: tuple = ()) -> list[InputFile]:
    """Every input file with its format (and, for saved pages, its URL from a listing).

    Inputs and listing entries are checked against the network rules before anything reads
    them (safety.check_inputs, with `allowed` = `[download] allow_networks`).
    """
    found: dict[str, bool] = {}  # path -> named directly (or by a *.paths listing)
    check_inputs(inputs, allowed)
    for item in inputs:
        files, direct = _expand(item)
        for path in files:
            if format_of(path) == "listing":
                entries = _listing_entries(path, listing_prefix)
                check_inputs(entries, allowed)
                found.update(dict.fromkeys(entries, True))
            else:
                found[path] = found.get(path, False) or direct
    formats = {path: fmt if fmt != "auto" else format_of(path) for path in found}
    # Saved pages: a .tsv beside them (or any .tsv under --format html) lists their URLs.
    page_dirs = {posixpath.dirname(p) for p, f in formats.items() if f == "html"}
    listings = [p for p in found if format_of(p) == "tsv" and
                (fmt == "html" or (fmt == "auto" and posixpath.dirname(p) in page_dirs))]
    page_urls: dict[str, str] = {}
    for listing in listings:
        page_urls.update(html.read_listing(_lines(listing)))
        del formats[listing]
    unknown = sorted(p for p, f in formats.items() if f is None)
    named = [p for p in unknown if found[p]]
    if named:
        raise UserError(f"cannot tell the format of {named[0]} (name it *.warc[.gz], *.wat[.gz], "
                        "*.html, *.parquet, *.csv, *.tsv, *.jsonl[.gz] or *.paths[.gz], or give --format)")
    if unknown:
        print(f"extract: ignoring {len(unknown)} file(s) of unknown format, e.g. {unknown[0]}",
              file=sys.stderr)
    planned = [InputFile(p, f, page_urls.get(posixpath.basename(p)) if f == "html" else None)
               for p, f in sorted(formats.items()) if f]
    if not planned:
        raise UserError(f"no input files of a known format in {', '.join(inputs)} "
                        "(give files, folders, globs or a *.paths listing; --format picks one)")
    return planned


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

    @classmethod
    def from_config(cls, cfg) -> "Options":
        s = cfg.extract
        return cls(s.max_text_chars, s.max_url_chars, s.max_page_bytes, s.include_title,
                   tabular.Columns(s.url_column, s.text_column, s.page_url_column),
                   cfg.spark.arrow_batch_rows)


def _items(f: InputFile, opts: Options) -> Iterator:
    """The reader items of one file."""
    if f.format in tabular.FORMATS:
        yield from tabular.read(lambda: storage.open_file(f.path), f.path, f.format, opts.columns,
                                opts.batch_rows)
        return
    with storage.open_file(f.path) as fileobj:
        if f.format == "warc":
            yield from warc.read(fileobj, opts.max_page_bytes)
        elif f.format == "wat":
            yield from wat.read(fileobj, opts.max_page_bytes)
        else:
            yield from html.read_saved(fileobj, f.path, f.page_url, opts.max_page_bytes)


class _Rows:
    """Candidate rows of one file, built column by column, and the file's tally."""

    def __init__(self, source: str, opts: Options):
        self.source, self.opts = source, opts
        self.columns = {name: [] for name in COLUMNS}
        self.tally = Counter()

    def __len__(self) -> int:
        return len(self.columns["uid"])

    def add(self, item) -> None:
        self.tally["records_read"] += 1
        if isinstance(item, Page):
            if not item.images:
                self.tally["skip:no_images"] += 1
                return
            base = urls.base_url(item.page_url, item.base_href)
            for image in item.images:
                self._image(image, base, item.page_url)
        elif isinstance(item, Row):
            self._candidate(item.url, urls.clean_text(item.text), "tabular",
                            urls.base_url(item.page_url, None), item.page_url)
        elif isinstance(item, Skip):
            self.tally["skip:" + item.reason] += 1
        elif isinstance(item, Corrupt):
            self.tally["drop:" + item.reason] += 1

    def _image(self, image, base: str | None, page_url: str | None) -> None:
        resolved = None  # the URL is checked once per image, and only when a text passed
        for kind, text in html.texts(image, self.opts.include_title):
            reason = urls.check_text(text, self.opts.max_text_chars)
            if reason is None:
                resolved = resolved or urls.resolve(image.src, base, self.opts.max_url_chars)
                url, reason = resolved
            if reason:
                self.tally["drop:" + reason] += 1
            else:
                self._keep(url, text, page_url, kind)

    def _candidate(self, raw_url, text: str, kind: str, base, page_url) -> None:
        reason = urls.check_text(text, self.opts.max_text_chars)
        if reason is None:
            url, reason = urls.resolve(raw_url, base, self.opts.max_url_chars)
        if reason:
            self.tally["drop:" + reason] += 1
        else:
            self._keep(url, text, page_url, kind)

    def _keep(self, url: str, text: str, page_url, kind: str) -> None:
        c = self.columns
        c["uid"].append(urls.uid(url, text))
        c["url"].append(url)
        c["text"].append(text)
        c["page_url"].append(page_url)
        c["kind"].append(kind)
        self.tally["rows_out"] += 1

    def flush(self) -> pa.RecordBatch:
        n = len(self)
        self.columns["source"] = [self.source] * n
        arrays = [pa.array(self.columns[name], pa.string()) for name in COLUMNS]
        arrays += [pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())]
        self.columns = {name: [] for name in COLUMNS}
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

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
        for item in _items(f, opts):
            rows.add(item)
            if len(rows) >= opts.batch_rows:
                yield rows.flush()
    except FileNotFoundError:  # a *.paths entry that is not there: counted, reported
        rows.tally["files_missing"] += 1
    if len(rows):
        yield rows.flush()
    yield rows.tally_batch()


def _extract_partition(opts: Options, files, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A task: its input is file indexes (one), `files` the broadcast plan."""
    for batch in batches:
        for index in batch.column(0).to_pylist():
            yield from extract_file(files.value[index], opts)


# --- the stage (driver) -------------------------------------------------------------------------

def _missing_columns(n_files: int, section) -> UserError:
    return UserError(f"{n_files} tabular input file(s) lack the url/text columns "
                     f"{section.url_column!r}/{section.text_column!r} (set --url-column/--text-column)")


def run(spark, cfg, inputs: list[str], out_dir: str) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    section = cfg.extract
    files = plan(inputs, section.format, section.listing_prefix,
                 parse_networks(cfg.download.allow_networks))
    opts = Options.from_config(cfg)
    first_table = next((f for f in files if f.format in tabular.FORMATS), None)
    if first_table and not tabular.has_columns(lambda: storage.open_file(first_table.path),
                                               first_table.path, first_table.format, opts.columns):
        raise _missing_columns(1, section)
    # One file per task: range() splits n ids into n partitions of one id each.
    indexes = spark.range(0, len(files), 1, numPartitions=len(files))
    plan_bc = spark.sparkContext.broadcast(files)
    # Cached: the tallies are summed first (they decide the number of output files), then the
    # rows are written from the cache, so every file is read once.
    out = indexes.mapInArrow(partial(_extract_partition, opts, plan_bc), SCHEMA_DDL)
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        sums = out.where(F.col("tally").isNotNull()).groupBy("tally").agg(F.sum("n").alias("n"))
        tally = {row["tally"]: row["n"] for row in sums.collect()}
        skipped = {k.split(":", 1)[1]: v for k, v in tally.items() if k.startswith("skip:")}
        if skipped.get("missing_columns"):
            raise _missing_columns(skipped["missing_columns"], section)
        rows_out = tally.get("rows_out", 0)
        rows = out.where(F.col("tally").isNull()).select(*COLUMNS)
        rows = rows.repartition(section.partitions) if section.partitions else \
            rows.coalesce(min(len(files), max(1, math.ceil(rows_out / ROWS_PER_FILE))))
        rows.write.mode("overwrite").parquet(storage.spark_path(out_dir))
    finally:
        out.unpersist()
        plan_bc.destroy()
    if tally.get("files_missing"):
        print(f"extract: warning: {tally['files_missing']} listed input file(s) not found",
              file=sys.stderr)
    drops = {k.split(":", 1)[1]: v for k, v in tally.items() if k.startswith("drop:")}
    return StageResult(
        rows_in=rows_out + sum(drops.values()), rows_out=rows_out, drops=drops,
        extra={"records_read": tally.get("records_read", 0),
               "records_skipped": dict(sorted(skipped.items(), key=lambda kv: -kv[1])),
               "files": len(files), "files_missing": tally.get("files_missing", 0),
               "formats": dict(Counter(f.format for f in files))})
