"""WARC files -> HTML responses -> pages with images; records streamed one at a time (warcio).

`complete_records` is shared with wat.py (a WAT is a WARC file of JSON metadata records). It
yields a record's payload only once the whole record has been read: warcio silently cuts a
record whose gzip member is truncated, so each record's Content-Length and gzip member end are
checked here, and a damaged record becomes one `Corrupt` item that ends the file (after damage
there is no reliable next record boundary). A WARC gzipped as one whole file, which warcio
refuses after its first record, is read again as one decompressed stream.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Callable, Iterator, NamedTuple

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

from wit_builder.extract import html
from wit_builder.extract.records import CORRUPT, TOO_LONG, Page, Skip
from wit_builder.urls import page_url_of

# What warcio raises on damaged bytes: bad gzip data (a bad CRC too, in a whole-file gzip),
# garbage where a header should be, a non-numeric length, a header that lost its target URI
# (AttributeError). Raised only by the warcio calls inside `complete_records`.
_DAMAGE = (ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error, gzip.BadGzipFile,
           AttributeError, EOFError, ValueError)
_CHUNK = 1 << 16


class Payload(NamedTuple):
    record: object  # warcio's ArcWarcRecord (headers; its stream is already consumed)
    data: object  # what the reader's `read` made of the payload stream


def _read_capped(stream, max_bytes: int) -> bytes:
    """At most `max_bytes` of a payload (Common Crawl itself truncates at 1 MiB); the rest is
    skipped unread by warcio."""
    parts, left = [], max_bytes
    while left > 0:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _HeaderTooLong(Exception):
    """A record's header lines ran past their bound."""


class _BoundedReader(DecompressingBufferedReader):
    """warcio's reader, with the header lines it reads one after another (a record's WARC
    header, then its HTTP header) bounded: past `limit` bytes in all they raise _HeaderTooLong
    instead of growing in memory (warcio reads a line whole, and a few kilobytes of gzip make a
    gigabyte-long header line). Reading a payload, or a new gzip member, starts the count again."""

    def __init__(self, fileobj, limit: int, **kwargs):
        super().__init__(fileobj, **kwargs)
        self.limit, self._lines = limit, 0

    def readline(self, length=None):
        left = self.limit - self._lines + 1  # one more: a line that reaches it is too long
        line = super().readline(left if length is None else min(length, left))
        self._lines += len(line)
        if self._lines > self.limit:
            raise _HeaderTooLong
        return line

    def read(self, length=None):
        self._lines = 0
        return super().read(length)

    def read_next_member(self):
        self._lines = 0
        return super().read_next_member()


def _archive(stream, max_header: int) -> ArchiveIterator:
    """warcio's ArchiveIterator over `stream`, its header lines bounded (_BoundedReader)."""
    iterator = ArchiveIterator(stream)
    iterator.reader = _BoundedReader(iterator.fh, max_header)
    return iterator


class _MemberGoesOn(Exception):
    """A whole record was read but its gzip member did not end with it."""


def _cut_short(iterator: ArchiveIterator, record) -> bool:
    """True when the record ended before its Content-Length; `_MemberGoesOn` when it is whole
    but inside a longer gzip member (a whole-file gzip, or a member cut before its end)."""
    iterator.read_to_end()  # drains the record and the blank lines after it
    if getattr(record.raw_stream, "limit", 0) > 0:
        return True
    decompressor = iterator.reader.decompressor
    if decompressor is not None and not decompressor.eof:
        raise _MemberGoesOn
    return False


def _records(iterator: ArchiveIterator, select, max_bytes: int, read) -> Iterator:
    for record in iterator:
        reason = select(record)
        payload = None if reason else read(record.content_stream(), max_bytes)
        if _cut_short(iterator, record):
            yield CORRUPT
            return
        yield Skip(reason) if reason else Payload(record, payload)


def _whole_file_gzip(fileobj, select, max_bytes: int, max_header: int, read,
                     done: int) -> Iterator:
    """The records after the first `done` of a WARC gzipped as a whole (`gzip x.warc`, not a
    member per record), read as one decompressed stream; a cut member ends in `CORRUPT` here.
    A cut gzip raises EOFError, which warcio takes for the end of the file when it comes
    between records, hence the last check."""
    fileobj.seek(0)
    stream = gzip.GzipFile(fileobj=fileobj, mode="rb")
    for i, item in enumerate(_records(_archive(stream, max_header), select, max_bytes, read)):
        if i >= done:
            yield item
        if item is CORRUPT:
            return
    stream.read(1)  # raises EOFError when the gzip stream was cut


def complete_records(fileobj, select: Callable[[object], str | None], max_bytes: int,
                     max_header: int, read=_read_capped) -> Iterator:
    """Yield `Skip(reason)` for records `select` rejects, a `Payload` for the others
    (payload = `read(stream, max_bytes)` of the HTTP body for responses, of the block for other
    records, de-chunked and decompressed), and one `CORRUPT` for a damaged record, or one
    `TOO_LONG` for a record whose header lines pass `max_header` bytes, which ends the file."""
    done = 0
    try:
        try:
            for item in _records(_archive(fileobj, max_header), select, max_bytes, read):
                yield item
                done += 1
        except (_MemberGoesOn, ArchiveLoadFailed) as exc:
            if isinstance(exc, ArchiveLoadFailed) and "non-chunked gzip" not in str(exc):
                yield CORRUPT
                return
            yield from _whole_file_gzip(fileobj, select, max_bytes, max_header, read, done)
    except _HeaderTooLong:
        yield TOO_LONG
    except _DAMAGE:
        yield CORRUPT


def _select_html_response(record) -> str | None:
    if record.rec_type != "response":
        return "not_response"
    if record.http_headers is None or not record.http_headers.protocol.upper().startswith("HTTP"):
        return "not_http"
    if not record.http_headers.get_statuscode().startswith("2"):
        return "not_ok"
    if "html" not in (record.http_headers.get_header("Content-Type") or "").lower():
        return "not_html"
    return None


def in_format(head: bytes) -> bool:
    """Whether a file's first bytes (decompressed) can begin a WARC file (a WAT is one): the
    first record's version line, or an ARC file's header. Damage further on does not change
    them (its records are counted drops); another format (a JSONL list given --format warc) is
    the user's mistake. An empty file holds no records."""
    return not head or head.startswith((b"WARC/", b"filedesc://"))


def read(fileobj, max_bytes: int, max_header: int) -> Iterator:
    """Items of one WARC file: a `Page` per HTML response (its first `max_bytes` parsed),
    `Skip`s, and `CORRUPT` or `TOO_LONG` (header lines past `max_header` bytes)."""
    for item in complete_records(fileobj, _select_html_response, max_bytes, max_header,
                                 html.read_page):
        if not isinstance(item, Payload):
            yield item
            continue
        body, images_cut = item.data
        headers = item.record.http_headers
        charset = html.charset_from_content_type(headers.get_header("Content-Type"))
        base_href, images = html.parse_page(html.decode(body, charset))
        page_url = page_url_of(item.record.rec_headers.get_header("WARC-Target-URI"))
        yield Page(page_url, base_href, images, images_cut)
