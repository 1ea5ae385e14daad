"""Test helpers that write crawl files: WARC responses from saved pages, and WAT files from WARCs.

The WAT writer follows Common Crawl's documented JSON layout (ia-web-commons; the real envelope
is in ../shared/data/crawl/commoncrawl/whirlwind.warc.wat.gz): one `metadata` record per WARC
record, `Envelope.WARC-Header-Metadata`, `Envelope.Payload-Metadata.HTTP-Response-Metadata`
with `Response-Message`, `Headers` and, for HTML, `HTML-Metadata.Head` (`Title`, `Base`) and
`HTML-Metadata.Links` (`IMG@/src` with `alt`/`title`, `A@/href`), URLs as written in the page.

It parses HTML with the standard library's html.parser, not with the extractor's selectolax, so
the WAT-vs-WARC comparison checks two independent parsers. One liberty: for an `<img>` with an
empty `src`, the link's `url` is srcset's first candidate (which the WARC path also uses), so
both paths describe the same images.
"""

from __future__ import annotations

import gzip
import io
import json
from html.parser import HTMLParser
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from wit_builder.extract.html import charset_from_content_type, decode, first_srcset_url


def write_warc(path: Path, pages: list[tuple[str, bytes]], content_type: str = "text/html",
               whole_file_gzip: bool = False) -> Path:
    """A gzipped WARC with one request and one 200 response record per (url, body): a gzip
    member per record (the standard), or with `whole_file_gzip` the plain WARC gzipped as one
    member (what `gzip x.warc` makes)."""
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=not whole_file_gzip)
        for url, body in pages:
            request = StatusAndHeaders("GET / HTTP/1.1", [("Host", url.split("/")[2])],
                                       is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", http_headers=request))
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type),
                                                  ("Content-Length", str(len(body)))],
                                       protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))
    if whole_file_gzip:
        path.write_bytes(gzip.compress(path.read_bytes()))
    return path


class _Links(HTMLParser):
    """What ia-web-commons' ExtractingParseObserver records, for the parts we use."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.head: dict = {}
        self.links: list[dict] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        first = {}
        for name, value in attrs:  # HTML: the first of repeated attributes wins
            first.setdefault(name, value)
        if tag == "img":
            src = (first.get("src") or "").strip() or first_srcset_url(first.get("srcset")) or ""
            link = {"path": "IMG@/src", "url": src}
            link.update({k: first[k] for k in ("alt", "title") if k in first and first[k] is not None})
            if "alt" in first and first["alt"] is None:  # <img alt>: present, empty
                link["alt"] = ""
            self.links.append(link)
        elif tag == "a" and first.get("href"):
            self.links.append({"path": "A@/href", "url": first["href"]})
        elif tag == "base" and first.get("href") and "Base" not in self.head:
            self.head["Base"] = first["href"]
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.head["Title"] = self.head.get("Title", "") + data


def _envelope(record, body: bytes | None) -> dict:
    warc_headers = dict(record.rec_headers.headers)
    payload: dict = {"Actual-Content-Type": warc_headers.get("Content-Type", "")}
    http = record.http_headers
    if http is not None and record.rec_type == "response":
        response = {"Response-Message": {"Version": http.protocol,
                                         "Status": http.get_statuscode(),
                                         "Reason": http.statusline.partition(" ")[2]},
                    "Headers": dict(http.headers)}
        content_type = http.get_header("Content-Type") or ""
        if body is not None and "html" in content_type.lower():
            parser = _Links()
            parser.feed(decode(body, charset_from_content_type(content_type)))
            parser.close()
            response["HTML-Metadata"] = {"Head": parser.head, "Links": parser.links}
        payload["HTTP-Response-Metadata"] = response
    elif http is not None and record.rec_type == "request":
        payload["HTTP-Request-Metadata"] = {"Request-Message": {"Method": http.protocol},
                                            "Headers": dict(http.headers)}
    return {"Format": "WARC", "WARC-Header-Metadata": warc_headers, "Payload-Metadata": payload}


def write_wat(warc_path: Path, wat_path: Path) -> Path:
    """The WAT Common Crawl would derive from `warc_path` (readable records only)."""
    with open(warc_path, "rb") as src, open(wat_path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(
            wat_path.name, {"software": "wit-builder tests/crawl_helpers.py"}))
        for record in ArchiveIterator(src):
            body = record.content_stream().read() if record.rec_type == "response" else None
            envelope = {"Container": {"Filename": warc_path.name, "Compressed": True},
                        "Envelope": _envelope(record, body)}
            data = json.dumps(envelope).encode()
            uri = record.rec_headers.get_header("WARC-Target-URI") or ""
            headers = {"WARC-Refers-To": record.rec_headers.get_header("WARC-Record-ID") or ""}
            writer.write_record(writer.create_warc_record(
                uri, "metadata", payload=io.BytesIO(data), warc_content_type="application/json",
                warc_headers_dict=headers))
    return wat_path


def read_pages_tsv(html_dir: Path) -> dict[str, str]:
    """{file name: URL} of the saved pages that have a known URL."""
    urls = {}
    for line in (html_dir / "pages.tsv").read_text().splitlines()[1:]:
        name, url = line.split("\t")[:2]
        if url:
            urls[name] = url
    return urls
