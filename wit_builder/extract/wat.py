"""Common Crawl WAT files -> pages with images, without parsing any HTML.

A WAT is a WARC file of `metadata` records whose JSON payload describes one WARC record
(https://commoncrawl.org/the-data/get-started/, the layout of ia-web-commons):

    {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": ...},
                  "Payload-Metadata": {"HTTP-Response-Metadata": {
                      "Response-Message": {"Status": "200", ...},
                      "HTML-Metadata": {"Head": {"Base": ...},
                                        "Links": [{"path": "IMG@/src", "url": ..., "alt": ...,
                                                   "title": ...}, {"path": "A@/href", ...}]}}}}}

Links keep their URLs as written in the page (relative ones too); extract resolves them.

Records are read with fastwarc (`read`). Their JSON is decoded by msgspec straight into the few
fields above (`_Record`): the other fields, and the `A@/href` links' texts, are skipped without
making Python objects, which is most of a WAT's bytes. A record that does not fit those types,
that is not valid UTF-8, or that msgspec rejects, is read again by the general path (`_page_any`:
orjson, then `json` for what orjson rejects: lone surrogates, NaN, huge numbers), so every record
reads as it does with the warcio + json reader (`read_warcio`, kept as the reference). Damage is
detected the way warc.complete_records does it: a record shorter than its Content-Length, a
truncated or bad gzip member, or garbage after the last record becomes one `CORRUPT` that ends
the file.
"""

from __future__ import annotations

import gc
import json
import os
import zlib
from contextlib import contextmanager
from typing import Iterator

import msgspec
import orjson

from wit_builder.extract.html import Image
from wit_builder.extract.records import CORRUPT, TOO_LONG, Page, Skip
from wit_builder.urls import page_url_of, scrub
from wit_builder.extract.warc import Payload, complete_records

IMG_SRC = "IMG@/src"


def _select_metadata(record) -> str | None:
    return None if record.rec_type == "metadata" else "not_metadata"


def page_of(envelope: dict) -> Page | Skip:
    """The page one WAT envelope (any JSON values) describes, or why it holds no candidates;
    raises AttributeError where the layout does not hold (a string where an object belongs)."""
    warc_header = envelope.get("WARC-Header-Metadata") or {}
    if warc_header.get("WARC-Type") != "response":
        return Skip("not_response")
    response = (envelope.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata")
    if not isinstance(response, dict):
        return Skip("not_http")
    status = str((response.get("Response-Message") or {}).get("Status", "200"))
    if not status.startswith("2"):
        return Skip("not_ok")
    meta = response.get("HTML-Metadata")
    if not isinstance(meta, dict):
        return Skip("not_html")
    found = [Image(scrub(link.get("url")), scrub(link.get("alt")), scrub(link.get("title")))
             for link in meta.get("Links") or () if link.get("path") == IMG_SRC]
    images = [image for image in found if image.alt or image.title]
    page_url = page_url_of(scrub(warc_header.get("WARC-Target-URI")))
    return Page(page_url, scrub((meta.get("Head") or {}).get("Base")), images,
                textless=len(found) - len(images))


# The layout `page_of` reads, as msgspec types: a field that is missing or null takes its
# default, as `dict.get` gives None; a value of another type fails the decode (and the record
# takes the general path), so `_typed_page` only ever sees strings where page_of expects them.
# gc=False: a decoded record is a tree, never a reference cycle, so the collector skips it.
class _Link(msgspec.Struct, gc=False):
    path: str | None = None
    url: str | None = None
    alt: str | None = None
    title: str | None = None


class _Head(msgspec.Struct, gc=False):
    base: str | None = msgspec.field(default=None, name="Base")


class _Html(msgspec.Struct, gc=False):
    head: _Head | None = msgspec.field(default=None, name="Head")
    links: list[_Link] | None = msgspec.field(default=None, name="Links")


class _Message(msgspec.Struct, gc=False):
    status: object = msgspec.field(default="200", name="Status")  # page_of takes str() of it


class _Response(msgspec.Struct, gc=False):
    message: _Message | None = msgspec.field(default=None, name="Response-Message")
    html: _Html | None = msgspec.field(default=None, name="HTML-Metadata")


class _Payload(msgspec.Struct, gc=False):
    response: _Response | None = msgspec.field(default=None, name="HTTP-Response-Metadata")


class _Header(msgspec.Struct, gc=False):
    type: str | None = msgspec.field(default=None, name="WARC-Type")
    target_uri: str | None = msgspec.field(default=None, name="WARC-Target-URI")


class _Envelope(msgspec.Struct, gc=False):
    header: _Header | None = msgspec.field(default=None, name="WARC-Header-Metadata")
    payload: _Payload | None = msgspec.field(default=None, name="Payload-Metadata")


class _Record(msgspec.Struct, gc=False):
    envelope: _Envelope = msgspec.field(name="Envelope")


_RECORD = msgspec.json.Decoder(_Record)


def _typed_page(envelope: _Envelope) -> Page | Skip:
    """`page_of` for a decoded `_Record`'s envelope (the same tests in the same order)."""
    if envelope.header is None or envelope.header.type != "response":
        return Skip("not_response")
    response = envelope.payload and envelope.payload.response
    if response is None:
        return Skip("not_http")
    if not str(response.message.status if response.message else "200").startswith("2"):
        return Skip("not_ok")
    meta = response.html
    if meta is None:
        return Skip("not_html")
    found = [link for link in meta.links or () if link.path == IMG_SRC]
    # Image's fields as plain tuples (equal to Images): a NamedTuple's constructor costs more
    images = [(link.url, link.alt, link.title) for link in found if link.alt or link.title]
    return Page(page_url_of(envelope.header.target_uri), meta.head and meta.head.base, images,
                textless=len(found) - len(images))


def _utf8(data: bytes) -> bool:
    # msgspec checks UTF-8 only in the strings it decodes, json and orjson in the whole record.
    if data.isascii():
        return True
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


def _page(data: bytes):
    if _utf8(data):
        try:
            return _typed_page(_RECORD.decode(data).envelope)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            pass
    return _page_any(data)


def _page_any(data: bytes):
    """A record that is not the layout's types, or is no JSON, read the way `json` reads it."""
    # orjson (>= 3.13) rejects what it would read differently from json (lone surrogates, NaN,
    # huge numbers): those records take json.
    try:
        return page_of(orjson.loads(data)["Envelope"])
    except orjson.JSONDecodeError:
        pass
    except (KeyError, TypeError, AttributeError):
        return CORRUPT
    try:
        return page_of(json.loads(data)["Envelope"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # not the layout
        return CORRUPT


_CHUNK = 1 << 16


def _tail_intact(stream) -> tuple[bool, bool]:
    """(the first record is whole, nothing follows it but blank space) for the rest of `stream`,
    from the start of the last record fastwarc read. Streamed in chunks (the record may be
    gigabytes of compressible bytes): the first gzip member is inflated with its output thrown
    away, a plain record is skipped by its Content-Length."""
    start = stream.tell()
    first = stream.read(_CHUNK)
    if first[:2] == b"\x1f\x8b":
        d, data = zlib.decompressobj(31), first
        try:
            while not d.eof and data:
                d.decompress(data, _CHUNK)
                data = d.unconsumed_tail or (b"" if d.eof else stream.read(_CHUNK))
        except zlib.error:
            return False, False
        return d.eof, d.eof and not (d.unused_data or stream.read(1))
    head, sep, _ = first.partition(b"\r\n\r\n")
    length = next((int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                   if k.strip().lower() == b"content-length" and v.strip().isdigit()), None)
    if not sep or length is None:
        return False, False
    end = start + len(head) + 4 + length
    if stream.seek(0, os.SEEK_END) < end:
        return False, False
    stream.seek(end)
    return True, not any(chunk.strip() for chunk in iter(lambda: stream.read(_CHUNK), b""))


@contextmanager
def _rare_collections():
    """A WAT file makes millions of short-lived objects (links, their lists, image tuples), none
    of them in a reference cycle: the cycle collector's youngest-generation passes (every 700
    new objects by default) only cost."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 100_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def read(fileobj, max_bytes: int) -> Iterator:
    """Items of one WAT file: a `Page` per HTML response described, `Skip`s, `CORRUPT`, and
    `TOO_LONG` for a record of more than `max_bytes` (skipped unread).

    Stricter than `read_warcio` in one way: a file cut inside a record's header (or in the first
    bytes of a gzip member), or a file of junk, ends with a `CORRUPT` where warcio saw a clean
    end of file or read the partial header as one `not_metadata` record."""
    with _rare_collections():
        yield from _read(fileobj, max_bytes)


def _read(fileobj, max_bytes: int) -> Iterator:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    held, last_pos = None, None  # the last item is yielded once the file's end checked out
    try:
        for record in ArchiveIterator(fileobj, parse_http=False):
            if held is not None:
                yield held
            last_pos = record.stream_pos
            if record.record_type != WarcRecordType.metadata:
                held = Skip("not_metadata")
                continue
            # At most max_bytes + 1: a record is JSON, useless cut, so a longer one is skipped
            # unread (fastwarc streams past it) and counted, never held whole.
            data = record.reader.read(max_bytes + 1)
            length = len(data) + (record.reader.consume() if len(data) > max_bytes else 0)
            if length < record.content_length:
                held = None
                yield CORRUPT
                return
            held = TOO_LONG if len(data) > max_bytes else _page(data)
    except Exception:  # what fastwarc raises on damaged bytes: the record before it may stand
        if held is not None and last_pos is not None:
            fileobj.seek(last_pos)
            if _tail_intact(fileobj)[0]:
                yield held
        yield CORRUPT
        return
    if last_pos is None:  # no record: an empty file, or one warcio would call damaged
        fileobj.seek(0)
        if fileobj.read(1 << 16).strip():
            yield CORRUPT
        return
    fileobj.seek(last_pos)
    whole, clean_end = _tail_intact(fileobj)
    if whole:
        yield held
    if not (whole and clean_end):
        yield CORRUPT


def read_warcio(fileobj, max_bytes: int) -> Iterator:
    """`read` with warcio and json (the reference the tests compare `read` with)."""
    for item in complete_records(fileobj, _select_metadata, max_bytes, max_bytes):
        if not isinstance(item, Payload):
            yield item
            continue
        try:
            page = page_of(json.loads(item.data)["Envelope"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # not the layout
            page = CORRUPT
        yield page
