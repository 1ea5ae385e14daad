"""Candidate lists (parquet, csv, tsv, jsonl; the text ones optionally gzipped) -> `Row`s.

Files are read in batches (pyarrow for parquet/csv/tsv, line by line for jsonl). Column names
match exactly, else case-insensitively (img2dataset lists often say `URL`, `TEXT`). A file
without the url or text column yields one `Skip("missing_columns")`, which extract turns into a
user error. Malformed lines and undecodable bytes are counted drops, never a failed file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from wit_builder.extract.records import CORRUPT, Row, Skip
from wit_builder.extract.urls import scrub

FORMATS = ("parquet", "csv", "tsv", "jsonl")
MISSING = Skip("missing_columns")
# What a damaged file raises from pyarrow or gzip mid-read.
_DAMAGE = (pa.ArrowInvalid, EOFError, gzip.BadGzipFile, UnicodeDecodeError)


class Columns(NamedTuple):
    url: str
    text: str
    page_url: str  # "" = none


def match_columns(names: list[str], wanted: Columns) -> list[str | None] | None:
    """The file's actual names for (url, text, page_url): exact, else case-insensitive; None when
    the url or text column is missing (a page_url column is optional)."""
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), name)
    found = [(w if w in names else lower.get(w.lower())) if w else None for w in wanted]
    return None if found[0] is None or found[1] is None else found


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")  # U+FFFD -> an `undecodable` drop
    return str(value)


def _rows(columns: list[list], n: int) -> Iterator[Row]:
    url, text, page = columns
    for i in range(n):
        yield Row(_as_text(url[i]), _as_text(text[i]), _as_text(page[i]) if page else None)


def _batch_rows(batch: pa.RecordBatch, names: list[str | None]) -> Iterator[Row]:
    columns = [batch.column(name).to_pylist() if name else None for name in names]
    return _rows(columns, batch.num_rows)


def _parquet(open_stream, wanted: Columns, batch_rows: int) -> Iterator:
    with open_stream() as f:
        parquet = pq.ParquetFile(f)
        names = match_columns(parquet.schema_arrow.names, wanted)
        if names is None:
            yield MISSING
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[n for n in names if n]):
            yield from _batch_rows(batch, names)


def _header(open_stream, delimiter: str) -> list[str]:
    with open_stream() as f:  # parsed the way csv writers quote it
        return next(csv.reader([f.readline().decode("utf-8", "replace")], delimiter=delimiter), [])


def _delimited(open_stream, wanted: Columns, batch_rows: int, delimiter: str) -> Iterator:
    names = match_columns(_header(open_stream, delimiter), wanted)
    if names is None:
        yield MISSING
        return
    bad = []
    read_options = pacsv.ReadOptions(block_size=1 << 22)
    # TSV has no quoting convention (a caption may start with a quote); CSV follows RFC 4180.
    quoted = delimiter == ","
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                       newlines_in_values=quoted,
                                       invalid_row_handler=lambda row: bad.append(1) or "skip")
    # Binary columns: bytes that are not UTF-8 become per-row `undecodable` drops, not an error.
    keep = [n for n in names if n]
    convert_options = pacsv.ConvertOptions(column_types={n: pa.binary() for n in keep},
                                           include_columns=keep)
    with open_stream() as f:
        reader = pacsv.open_csv(f, read_options=read_options, parse_options=parse_options,
                                convert_options=convert_options)
        for batch in reader:
            for _ in range(len(bad)):
                yield CORRUPT
            bad.clear()
            for start in range(0, batch.num_rows, batch_rows):
                yield from _batch_rows(batch.slice(start, batch_rows), names)
    for _ in range(len(bad)):
        yield CORRUPT


def _pick(obj: dict, name: str):
    if not name:
        return None
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lowered), None)


def _jsonl(open_stream, wanted: Columns) -> Iterator:
    with open_stream() as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))
            except ValueError:
                yield CORRUPT
                continue
            if not isinstance(obj, dict):
                yield CORRUPT
                continue
            yield Row(*(_as_text(_pick(obj, name)) for name in wanted))


def _opener(open_raw: Callable[[], io.IOBase], path: str):
    @contextmanager
    def open_stream():
        with open_raw() as raw:
            yield gzip.GzipFile(fileobj=raw, mode="rb") if path.lower().endswith(".gz") else raw
    return open_stream


def has_columns(open_raw: Callable[[], io.IOBase], path: str, fmt: str, wanted: Columns) -> bool:
    """Whether a parquet/csv/tsv file has the url and text columns (jsonl rows may vary: their
    missing fields are per-row drops). Read on the driver to fail fast on a wrong column name."""
    open_stream = _opener(open_raw, path)
    try:
        if fmt == "parquet":
            with open_stream() as f:
                names = pq.ParquetFile(f).schema_arrow.names
        elif fmt in ("csv", "tsv"):
            names = _header(open_stream, "\t" if fmt == "tsv" else ",")
        else:
            return True
    except _DAMAGE:
        return True  # a damaged file: its task counts it as a corrupt record
    return match_columns(names, wanted) is not None


def read(open_raw: Callable[[], io.IOBase], path: str, fmt: str, wanted: Columns,
         batch_rows: int) -> Iterator:
    """Items of one tabular file: a `Row` per record, `CORRUPT` for a malformed one (and one for
    a damaged file tail), `MISSING` when the columns are not there."""
    open_stream = _opener(open_raw, path)
    try:
        if fmt == "parquet":
            yield from _parquet(open_stream, wanted, batch_rows)
        elif fmt == "jsonl":
            yield from _jsonl(open_stream, wanted)
        else:
            yield from _delimited(open_stream, wanted, batch_rows, "\t" if fmt == "tsv" else ",")
    except _DAMAGE:
        yield CORRUPT
