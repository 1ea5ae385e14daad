"""A candidate list's raw values as Arrow strings, the way the per-row reader of the past made
them (tests/tabular_reference.py): strings as they are, bytes decoded as UTF-8 with U+FFFD for
what is not (an `undecodable` drop later), anything else as Python's `str()` of the value; and
the file's names for the url, text and page_url columns."""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from wit_builder.extract.records import Table
from wit_builder.urls import scrub


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


def as_text(value) -> str | None:
    """One raw value as a string (the per-value rule every column conversion follows)."""
    if value is None or isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")  # U+FFFD -> an `undecodable` drop
    return str(value)


def strings(values: list) -> pa.Array:
    """A list of str/None as an Arrow string array (lone surrogates as U+FFFD)."""
    try:
        return pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowInvalid):
        return pa.array([scrub(v) for v in values], pa.string())


def as_strings(column) -> pa.Array:
    """`as_text` of every value of an Arrow column, by Arrow casts where they give the same."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        return as_strings(column.dictionary_decode())
    if kind == pa.string() or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        # Parquet readers do not check that strings are UTF-8: a file whose are not is damaged
        column.validate(full=True)  # (ArrowInvalid: one corrupt record, as before)
        return column.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        try:
            return column.cast(pa.string())  # checks the bytes are UTF-8
        except pa.ArrowInvalid:  # some are not: those values decoded with U+FFFD
            pass
    return pa.array([as_text(v) for v in column.to_pylist()], pa.string())


def table(batch: pa.RecordBatch, names: list[str | None]) -> Table:
    url, text, page = (as_strings(batch.column(name)) if name else None for name in names)
    return Table(url, text, page if page is not None else pa.nulls(len(url), pa.string()))
