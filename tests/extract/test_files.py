"""The batch (Arrow) checks of extract agree with the per-row reference functions on real data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa

from wit_builder import urls
from wit_builder.extract import html

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EDGE_URLS = [
    None, "", "  ", "http://a.com", "HTTP://A.com/X", "https://a.com/x?", "https://a.com/x#",
    "https://a.com/x?#f", "https://a.com:80/x", "https://a.com:/x", "https://a.com:99999/x",
    "http://user@a.com/x", "http://[::1]/x", "http://a.com/x y.jpg", "http://a.com/ü.jpg",
    "http://bücher.de/x.jpg", "//cdn.a.com/x.jpg", "//cdn.a.com", "///x.jpg", "/x.jpg", "/",
    "/?q=1", "/#f", "x.jpg", "./x.jpg", "../x.jpg", "a/../x.jpg", "a/./x.jpg", "a//x.jpg",
    "a.jpg?u=http://b/c", "a.jpg:x", "mailto:x@y", "data:image/png;base64,AAA", "javascript:void(0)",
    "?q=1", "#top", "a;p=1.jpg", "a%20b.jpg", "a%zz.jpg", "\tx.jpg\n", "x\ufffd.jpg",
    "http://a.com/a/../b.jpg", "http://a.com//b.jpg", "img/x.jpg?w=100&h=50", "~user/x.png",
    "http://a.com/x.jpg" + "a" * 3000, "-x.jpg", "x.jpg#", "x.jpg?", "x.jpg?#",
    # schemes and blanks decided without urllib, and the look-alikes that are not
    "DATA:x", "Data:image/png;base64,AA", " data:x", "data:\ufffd", "data:\t//x", "data://[x",
    "ftp://[x/", "h:x", "1a:x", "a+b.c-d:x", "a_b:x", "http:x", "https:", "HTTP:x", ":x",
    "\u3000", "\u00a0 \t", "\x1c", "\u200b",
    # path-absolute references keep ':' and '//' (urljoin takes only the base's origin)
    "/web/2011im_/http://b.de/x.gif", "/a//b.jpg", "/a/../b.jpg", "/a:b.jpg", "/a/./b:c//d",
    "//cdn.a.com/a//b.jpg", "//cdn.a.com/a/../b.jpg",
    # leading "./" and "../" segments climb the base's folder, not above its root
    "../../x.jpg", "../../../../../x.jpg", "./../x.jpg", ".././x.jpg", "../x/../y.jpg", "../x/./y.jpg",
    "../?a", "../#f", "../", "./", "..//x.jpg", "../x.jpg?", "../x.jpg#", "...//x.jpg", ".../x.jpg",
    "../..x/y.jpg", "../x y.jpg", "../ü.jpg", "../x.jpg?u=../y", "../a:b.jpg", ".x.jpg", "..x.jpg",
    "./x.jpg?q=1#f", "../../a/b/c.jpg", "./.", "../..", "./%2e%2e/x.jpg",
    # runs of '?' and '#' in absolute URLs (an empty query or fragment is dropped by urlunsplit)
    "https://a.com?x", "https://a.com#?x", "https://a.com/#?", "https://a.com/x??y", "https://a.com/x##y",
    "https://a.com/x#?#y", "https://a.com/?", "https://a.com#", "https://a.com/x?y#", "https://a.com/x?y#z?",
    "https://a.com/x?#", "https://a.com/x#??y", "https://a.com??", "https://a.com/x?y?#z",
]
EDGE_BASES = [None, "", "http://p.com", "http://p.com/", "http://p.com/a/b.html",
              "HTTPS://P.com/a/b/?q=1#f", "http://p.com:8080/a/", "http://p.com/a/./b/",
              "http://p.com/a//b/c", "http://p.com/a;x/b", "ftp://p.com/a/", "http://p.com?q=a/b",
              "http://user@p.com/a/", "http://p.com/a/b.html?x=//y",
              "https://web.archive.org/web/2011/http://p.com/i.php?a=1", "http://p.com/a/../b/",
              "http://p.com/a/b/c/d.html", "HTTP://p.com:81/a/b/c/?x=1", "http://p.com/a/b/c/"]


def _reference(raw, text, base, max_text=1000, max_url=2048):
    reason = urls.check_text(text, max_text)
    if reason is None:
        url, reason = urls.resolve(raw, base, max_url)
        return (url, reason)
    return (None, reason)


def _compare(raws, texts, bases, max_text=1000, max_url=2048):
    """check_texts, then check_urls for the rows whose text passes (as extract runs them), give
    what check_text and resolve give row by row."""
    text_reasons = urls.check_texts(pa.array(texts, pa.string()), max_text).to_pylist()
    got_urls, got_reasons = urls.check_urls(pa.array(raws, pa.string()), pa.array(bases, pa.string()), max_url)
    got_urls, got_reasons = got_urls.to_pylist(), got_reasons.to_pylist()
    for raw, text, base, text_reason, url, reason in zip(raws, texts, bases, text_reasons, got_urls, got_reasons):
        want = _reference(raw, text, base, max_text, max_url)
        got = (None, text_reason) if text_reason else (url if reason is None else None, reason)
        assert got == want, (raw, text, base)


def test_clean_texts_is_clean_text():
    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    values = [None, "", " ", spaces, f"a{spaces}b", " x  y ", "\u00a0a\u3000b\u2028", "\x1ca\x1fb",
              "a\u200bb"]  # U+200B is not whitespace
    got = urls.clean_texts(pa.array(values, pa.string())).to_pylist()
    assert got == [urls.clean_text(v) for v in values]


def test_edge_cases_agree_with_resolve():
    raws, texts, bases = [], [], []
    for raw in EDGE_URLS:
        for base in EDGE_BASES:
            for text in ("a dog", ""):
                raws.append(raw), texts.append(text), bases.append(base)
    _compare(raws, texts, bases)
    _compare(raws, ["a dog"] * len(raws), bases, max_url=30)


def test_real_candidates_agree(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "candidates/alt_text_pairs.jsonl")]
    texts = urls.clean_texts(pa.array([r.get("text") for r in rows], pa.string())).to_pylist()
    assert texts == [urls.clean_text(r.get("text")) for r in rows]
    _compare([r.get("url") for r in rows], texts, [r.get("page_url") for r in rows])
    kept_urls = [r["url"] for r in rows if r.get("url")]
    kept_texts = [r["text"] or "" for r in rows if r.get("url")]
    assert urls.uid_array(pa.array(kept_urls), pa.array(kept_texts)).to_pylist() == \
        [urls.uid(u, t) for u, t in zip(kept_urls, kept_texts)]


def test_real_page_images_agree(shared_data):
    """Raw `<img src>` values (relative ones too) of the shared saved pages, joined to their URLs."""
    from crawl_helpers import read_pages_tsv

    raws, texts, bases = [], [], []
    folder = shared_data / "crawl/html"
    for name, page_url in sorted(read_pages_tsv(folder).items()):
        base_href, images = html.parse_page(html.decode((folder / name).read_bytes()))
        base = urls.base_url(page_url, base_href)
        for image in images:
            raws.append(image.src), texts.append(urls.clean_text(image.alt) or "x"), bases.append(base)
    assert len(raws) > 1000
    _compare(raws, texts, bases)
