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
"""

from __future__ import annotations

import json
from typing import Iterator

from wit_builder.extract.html import Image
from wit_builder.extract.records import CORRUPT, Page, Skip
from wit_builder.extract.urls import page_url_of, scrub
from wit_builder.extract.warc import Payload, complete_records

IMG_SRC = "IMG@/src"


def _select_metadata(record) -> str | None:
    return None if record.rec_type == "metadata" else "not_metadata"


def page_of(envelope: dict) -> Page | Skip:
    """The page one WAT envelope describes, or why it holds no candidates."""
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
    images = [Image(scrub(link.get("url")), scrub(link.get("alt")), scrub(link.get("title")))
              for link in meta.get("Links") or () if link.get("path") == IMG_SRC]
    page_url = page_url_of(scrub(warc_header.get("WARC-Target-URI")))
    return Page(page_url, scrub((meta.get("Head") or {}).get("Base")), images)


def read(fileobj, max_bytes: int) -> Iterator:
    """Items of one WAT file: a `Page` per HTML response described, `Skip`s, and `CORRUPT`."""
    for item in complete_records(fileobj, _select_metadata, max_bytes):
        if not isinstance(item, Payload):
            yield item
            continue
        try:
            page = page_of(json.loads(item.data)["Envelope"])
        except (ValueError, KeyError, TypeError, AttributeError):  # bad JSON or not the layout
            page = CORRUPT
        yield page
