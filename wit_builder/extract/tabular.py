"""Candidate lists (parquet, csv, tsv, jsonl; the text ones optionally gzipped) -> `Table`s.

Files are read in batches and handed on as Arrow columns (`records.Table`, at most `batch_rows`
rows each): pyarrow for parquet/csv/tsv, orjson line by line for jsonl. Column names match
exactly, else case-insensitively (img2dataset lists often say `URL`, `TEXT`). A file without the
url or text column yields one `Skip("missing_columns")`, and a file that is not in its declared
format at all (a JSONL file given as Parquet) one `Skip("wrong_format")`: extract turns both into
a user error. Malformed lines, damaged files and undecodable bytes are counted drops.

Values become strings the way the per-row reader of the past did (tests/tabular_reference.py;
tests/extract/test_tabular.py shows both agree on the real candidate lists): strings as
they are, bytes decoded as UTF-8 with U+FFFD for what is not (an `undecodable` drop later),
anything else as Python's `str()` of the value.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from wit_builder import storage
from wit_builder.extract.records import CORRUPT, TOO_LONG, WRONG_FORMAT, Skip, Table
from wit_builder.extract.values import Columns, as_text, match_columns, strings, table

FORMATS = ("parquet", "csv", "tsv", "jsonl")
MISSING = Skip("missing_columns")
# What a damaged file raises from pyarrow or gzip mid-read.
_DAMAGE = (pa.ArrowInvalid, EOFError, gzip.BadGzipFile, UnicodeDecodeError)


def _parquet(open_stream, wanted: Columns, batch_rows: int) -> Iterator:
    with open_stream() as f:
        parquet = pq.ParquetFile(f)
        names = match_columns(parquet.schema_arrow.names, wanted)
        if names is None:
            yield MISSING
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[n for n in names if n]):
            if batch.num_rows:
                yield table(batch, names)


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
                yield table(batch.slice(start, batch_rows), names)
    for _ in range(len(bad)):
        yield CORRUPT


def _pick(obj: dict, name: str):
    if not name:
        return None
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lowered), None)


def _json_line(line: bytes):
    """A line as the standard json module reads it (what orjson refuses or reads differently:
    NaN, huge numbers, lone surrogates, bytes that are not UTF-8); None for a malformed one (or
    one nested deeper than json's recursion limit)."""
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None


_UNREAD = object()  # what orjson could not read


def _record(line: bytes, obj, wanted: Columns):
    """(url, text, page_url) of a line that orjson could not read, or read as something else
    than an object with string (or null) values: the json module's reading and `as_text`, or
    None for a malformed record (not JSON, not an object), () for a blank line."""
    if obj is _UNREAD:
        if not line.strip():
            return ()  # a blank line: not a record
        obj = _json_line(line)
    elif not isinstance(obj, dict):
        return None
    else:
        # numbers, lists, ...: str() of what the json module reads (orjson reads a huge integer
        # as a float); also names that match only case-insensitively
        values = tuple(_pick(obj, name) for name in wanted)
        if all(v is None or v.__class__ is str for v in values):
            return values
        obj = _json_line(line)
    if not isinstance(obj, dict):
        return None
    return tuple(as_text(_pick(obj, name)) for name in wanted)


_CHUNK = 1 << 16


def _bounded_lines(f, limit: int) -> Iterator[bytes]:
    """The lines of a binary stream, each read with at most `limit` bytes and its newline: one
    longer than `limit` is cut there (see `_cut`)."""
    return iter(partial(f.readline, limit + 1), b"")


def _cut(line: bytes, f) -> bool:
    """Whether a line of `_bounded_lines` longer than its limit was cut (it has no newline);
    then the rest of it is skipped in chunks, never held whole."""
    if line[-1:] == b"\n":
        return False
    while (rest := f.readline(_CHUNK)) and rest[-1:] != b"\n":
        pass
    return True


def _jsonl(open_stream, wanted: Columns, batch_rows: int, max_line: int) -> Iterator:
    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    url_name, text_name, page_name = wanted
    # url, text, page_url values as orjson read them, and each record's line (None: checked)
    url, text, page, lines = [], [], [], []
    add_url, add_text, add_page, add_line = url.append, text.append, page.append, lines.append

    def table() -> Table:
        try:
            columns = [pa.array(c, pa.string()) for c in (url, text, page)]
        except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):
            # numbers, lists, ...: as the json module reads them; then lone surrogates (json's
            # reading of "\ud800") as U+FFFD
            for i, line in enumerate(lines):
                if line is not None and not all(v is None or v.__class__ is str
                                                for v in (url[i], text[i], page[i])):
                    url[i], text[i], page[i] = _record(line, loads(line), wanted)
            columns = [strings(c) for c in (url, text, page)]
        for c in (url, text, page, lines):
            c.clear()
        return Table(*columns)

    def slow(line: bytes, obj) -> Iterator:
        record = _record(line, obj, wanted)
        if record is None:
            yield CORRUPT
        elif record:
            add_url(record[0]), add_text(record[1]), add_page(record[2]), add_line(None)

    with open_stream() as stream:
        # fsspec's remote files take no readline size: read them through a buffer that does
        f = stream if hasattr(stream, "peek") else io.BufferedReader(stream)
        try:
            for line in _bounded_lines(f, max_line):
                if len(line) > max_line and _cut(line, f):
                    yield TOO_LONG
                    continue
                try:
                    obj = loads(line)
                    u, t, p = obj[url_name], obj[text_name], obj[page_name] if page_name else None
                except JSONDecodeError:
                    yield from slow(line, _UNREAD)
                except (KeyError, TypeError):  # a name missing or in another case; not an object
                    yield from slow(line, obj)
                else:
                    add_url(u), add_text(t), add_page(p), add_line(line)
                if len(lines) >= batch_rows:
                    yield table()
        except _DAMAGE:
            if lines:
                yield table()  # the rows before the damage
            raise
    if lines:
        yield table()


def _opener(open_raw: Callable[[], io.IOBase]):
    @contextmanager
    def open_stream():
        with open_raw() as raw:
            yield storage.gunzipped(raw)
    return open_stream


_HEAD_BYTES = 4096
_BOM = b"\xef\xbb\xbf"


def in_format(head: bytes, fmt: str) -> bool:
    """Whether a file's first bytes (decompressed) can begin a `fmt` file: Parquet's magic
    number; text without NUL bytes for csv, tsv and jsonl, and a JSON object first for jsonl.

    Damage does not change a file's first bytes (a truncated Parquet file still starts with
    PAR1), so a damaged file passes and its bad records are counted drops; a file in another
    format (JSONL given as Parquet, Parquet as JSONL) is the user's mistake, not the data's. An
    empty file passes (it holds no records)."""
    if not head:
        return True
    if fmt == "parquet":
        return head.startswith(b"PAR1")
    if b"\0" in head:
        return False
    return fmt != "jsonl" or head.removeprefix(_BOM).lstrip()[:1] in (b"{", b"")


def _head(open_stream) -> bytes:
    """A file's first bytes, decompressed; those before the damage in a damaged gzip stream
    (read piecewise: one read that meets the damage loses what it decompressed)."""
    head = b""
    with open_stream() as f:
        read = getattr(f, "read1", f.read)
        try:
            while len(head) < _HEAD_BYTES and (chunk := read(_HEAD_BYTES - len(head))):
                head += chunk
        except _DAMAGE:
            pass  # the reader counts the damage
    return head


def problem(open_raw: Callable[[], io.IOBase], fmt: str, wanted: Columns) -> Skip | None:
    """What makes a whole tabular file unreadable, from its first bytes and header alone:
    `WRONG_FORMAT`, `MISSING` (no url or text column; jsonl rows may vary, their missing fields
    are per-row drops), or None. Read on the driver to fail fast."""
    open_stream = _opener(open_raw)
    try:
        if not in_format(_head(open_stream), fmt):
            return WRONG_FORMAT
        if fmt == "parquet":
            with open_stream() as f:
                names = pq.ParquetFile(f).schema_arrow.names
        elif fmt in ("csv", "tsv"):
            names = _header(open_stream, "\t" if fmt == "tsv" else ",")
        else:
            return None
    except _DAMAGE:
        return None  # a damaged file: its task counts it as a corrupt record
    return MISSING if match_columns(names, wanted) is None else None


def read(open_raw: Callable[[], io.IOBase], fmt: str, wanted: Columns,
         batch_rows: int, max_line: int) -> Iterator:
    """Items of one tabular file: `Table`s of at most `batch_rows` records (raw values as Arrow
    strings), `CORRUPT` for a malformed record (and one for a damaged file tail), `TOO_LONG` for
    a JSONL line of more than `max_line` bytes, `MISSING` when the columns are not there,
    `WRONG_FORMAT` when the file is not a `fmt` file at all (`in_format`). (CSV and TSV rows are
    bounded by pyarrow's read block: a longer row is a damaged file tail.)"""
    open_stream = _opener(open_raw)
    try:
        if not in_format(_head(open_stream), fmt):
            yield WRONG_FORMAT
        elif fmt == "parquet":
            yield from _parquet(open_stream, wanted, batch_rows)
        elif fmt == "jsonl":
            yield from _jsonl(open_stream, wanted, batch_rows, max_line)
        else:
            yield from _delimited(open_stream, wanted, batch_rows, "\t" if fmt == "tsv" else ",")
    except _DAMAGE:
        yield CORRUPT
