"""What a format reader yields, one item per input record; extract.py does all the counting.

A reader (warc, wat, html, tabular) turns one input file into a stream of these items, so the
accounting (records read and skipped, candidates kept and dropped) lives in one place.
"""

from __future__ import annotations

from typing import NamedTuple



class Image(NamedTuple):
    """One `<img>` (or WAT `IMG@/src` link), attribute values as written in the page."""
    src: str | None
    alt: str | None
    title: str | None


class Page(NamedTuple):
    """An HTML page (WARC response, WAT metadata record, saved page) and its images."""
    page_url: str | None
    base_href: str | None  # `<base href>` as written in the page (resolved by extract)
    images: list[Image]
    # A page cut at max_page_bytes: the `<img>` tags in the part not read (None: read whole).
    images_cut: int | None = None
    # Images with neither alt nor title, counted rather than listed (WAT): each is one candidate,
    # its alt, dropped as `empty_text`.
    textless: int = 0


class Row(NamedTuple):
    """A tabular record: an (image URL, caption) pair, optionally with its page."""
    url: str | None
    text: str | None
    page_url: str | None


class Table(NamedTuple):
    """Tabular records as Arrow string arrays of raw values (url, text, page_url may be null)."""
    url: object
    text: object
    page_url: object


class Skip(NamedTuple):
    """A record that holds no candidates by nature (a request, a PNG, ...): not a drop."""
    reason: str


# A file that is not in the format given for it at all (a JSONL list given --format parquet):
# the user's mistake, which extract turns into an error, not a drop.
WRONG_FORMAT = Skip("wrong_format")


class Corrupt(NamedTuple):
    """A record that could not be read whole (truncated, bad gzip, bad JSON): a counted drop."""
    reason: str = "corrupt_record"


CORRUPT = Corrupt()
# A record (a WAT record, a JSONL line, a CSV row) longer than [extract] max_record_bytes:
# skipped unread, so that no input holds more than that in memory.
TOO_LONG = Corrupt("record_too_long")
