"""The per-row tabular reader of before issue 12 (wit_builder/extract/tabular.py at 5e12195), kept
as the reference the Arrow-column reader must agree with: one `Row` per record, values converted
one by one in Python (json for JSONL). Shared by tests/extract/test_tabular.py and
tests/benchmarks/bench_tabular.py.
"""

from __future__ import annotations

import csv
import json
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from wit_builder.extract.records import CORRUPT, Row
from wit_builder.extract.tabular import _DAMAGE, MISSING, Columns, _opener, match_columns
from wit_builder.urls import scrub


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _batch_rows(batch: pa.RecordBatch, names: list[str | None]) -> Iterator[Row]:
    url, text, page = [batch.column(name).to_pylist() if name else None for name in names]
    for i in range(batch.num_rows):
        yield Row(_as_text(url[i]), _as_text(text[i]), _as_text(page[i]) if page else None)


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
    with open_stream() as f:
        return next(csv.reader([f.readline().decode("utf-8", "replace")], delimiter=delimiter), [])


def _delimited(open_stream, wanted: Columns, batch_rows: int, delimiter: str) -> Iterator:
    names = match_columns(_header(open_stream, delimiter), wanted)
    if names is None:
        yield MISSING
        return
    bad = []
    quoted = delimiter == ","
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                       newlines_in_values=quoted,
                                       invalid_row_handler=lambda row: bad.append(1) or "skip")
    keep = [n for n in names if n]
    convert_options = pacsv.ConvertOptions(column_types={n: pa.binary() for n in keep},
                                           include_columns=keep)
    with open_stream() as f:
        reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 22),
                                parse_options=parse_options, convert_options=convert_options)
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


def read(open_raw, fmt: str, wanted: Columns, batch_rows: int) -> Iterator:
    """Items of one tabular file: a `Row` per record, `CORRUPT`, `MISSING` (as before)."""
    open_stream = _opener(open_raw)
    try:
        if fmt == "parquet":
            yield from _parquet(open_stream, wanted, batch_rows)
        elif fmt == "jsonl":
            yield from _jsonl(open_stream, wanted)
        else:
            yield from _delimited(open_stream, wanted, batch_rows, "\t" if fmt == "tsv" else ",")
    except _DAMAGE:
        yield CORRUPT
