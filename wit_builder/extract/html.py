"""HTML pages -> images: charset decoding, `<base href>`, `<img>` alt/title/src/srcset.

Parsing uses selectolax's lexbor engine (a real HTML5 parser, written in C). Also the `html`
input format: saved pages (one page per file, no HTTP headers) with an optional
`file<TAB>url` listing that gives each page its URL.
"""

from __future__ import annotations

import codecs
import gzip
import posixpath
import re
import zlib
from typing import Iterator

from selectolax.lexbor import LexborHTMLParser

from wit_builder import storage
from wit_builder.extract.records import CORRUPT, Image, Page
from wit_builder.urls import clean_text


# --- charset --------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-z0-9_:.-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# WHATWG: browsers decode these labels with a superset (latin-1 as windows-1252, which also keeps
# latin-1 from accepting any bytes and so hiding a wrong declaration from the strict decode).
_SUPERSET = {"latin_1": "cp1252", "iso8859_1": "cp1252", "ascii": "cp1252", "gb2312": "gb18030",
             "gbk": "gb18030", "euc_kr": "cp949", "shift_jis": "cp932", "iso8859_9": "cp1254"}
_HTML_LANG = re.compile(rb"""<html[^>]{0,500}?\slang\s*=\s*["']?([a-z]{2,3})(?:-([a-z]{2}))?""", re.I)
# The HTML spec's suggested legacy encoding per page language (the encoding a browser assumes
# for an undeclared page in that locale); tried when the declared charset does not decode.
_LEGACY = {
    "ar": "cp1256", "fa": "cp1256", "he": "cp1255", "el": "iso8859_7", "th": "cp874",
    "tr": "cp1254", "ku": "cp1254", "vi": "cp1258", "lt": "cp1257", "lv": "iso8859_13",
    "cs": "cp1250", "sk": "cp1250", "hr": "cp1250", "pl": "iso8859_2", "hu": "iso8859_2",
    "sl": "iso8859_2", "ja": "shift_jis", "ko": "euc_kr", "zh": "gb18030", "zh-tw": "big5",
    **dict.fromkeys(["ru", "uk", "be", "bg", "mk", "sr", "kk", "ky", "tt", "tg", "ba", "sah"],
                    "cp1251"),
}


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None
    return _SUPERSET.get(name.replace("-", "_"), name)


def charset_from_content_type(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip()
    return None


def _legacy_for_lang(body: bytes) -> str | None:
    lang = _HTML_LANG.search(body, 0, 4096)
    if not lang:
        return None
    code = lang.group(1).decode().lower()
    region = f"{code}-{lang.group(2).decode().lower()}" if lang.group(2) else code
    return _LEGACY.get(region, _LEGACY.get(code))


def _strict(body: bytes, names) -> str | None:
    for name in dict.fromkeys(n for n in names if n):
        try:
            return body.decode(name)
        except UnicodeDecodeError:
            continue
    return None


def _lenient(body: bytes, names, errors_per_char: float = 0.5) -> str | None:
    """The first of `names` that decodes `body` with few errors, each replaced by U+FFFD where
    it is. Few: at most `errors_per_char` errors per non-ASCII character decoded. A page in
    another encoding than the one tried breaks at (nearly) every non-ASCII character (a cp1251
    or latin-1 page read as UTF-8 holds no valid multi-byte sequence); a page in it with a stray
    byte or a cut character breaks there only."""
    for name in dict.fromkeys(n for n in names if n):
        text = body.decode(name, errors="replace")
        broken = text.count("\ufffd")
        decoded = len(text) - len(text.encode("ascii", errors="ignore")) - broken
        if broken <= errors_per_char * decoded:
            return text
    return None


def _http_utf8(body: bytes, declared: str | None) -> str | None:
    """The page as UTF-8 when the HTTP header says UTF-8 and it decodes at least as many
    non-ASCII characters as it breaks: a browser follows the header, and a mostly-ASCII page
    with one `é` and one stray byte is UTF-8 with one error, not cp1250. Only UTF-8: a page in
    another encoding holds (nearly) no valid UTF-8 sequence, whereas a multi-byte legacy charset
    (Shift_JIS, GBK) reads much of any high-bit text as characters."""
    return _lenient(body, ["utf-8"], errors_per_char=1.0) if _codec(declared) == "utf-8" else None


def decode(body: bytes, declared: str | None = None) -> str:
    """Bytes -> text, the way a browser would, but checked: the BOM, the HTTP charset, `<meta
    charset>`, then UTF-8, each tried strictly. Then the same again with errors replaced where
    they are, if they are few (a stray byte must not turn a whole UTF-8 page into cp1251). Then
    UTF-8 declared by the HTTP header (`declared`), with errors at up to as many places as it
    decodes non-ASCII characters (`_http_utf8`). A wrong declaration is common, so then: the
    legacy encoding of the page's `<html lang>`; else charset_normalizer's guess. Only bytes
    nothing decodes become U+FFFD, which makes the texts holding them `undecodable` drops."""
    boms = [name for bom, name in _BOMS if body.startswith(bom)]
    meta = _META_CHARSET.search(body, 0, 4096)
    tried = boms + [_codec(declared), _codec(meta and meta.group(1).decode()), "utf-8"]
    for attempt in (lambda: _strict(body, tried), lambda: _lenient(body, tried),
                    lambda: _http_utf8(body, declared),
                    lambda: _strict(body, [_legacy_for_lang(body)])):
        found = attempt()
        if found is not None:
            return found
    from charset_normalizer import from_bytes  # only for the few mis-declared pages

    guess = from_bytes(body).best()
    return str(guess) if guess is not None else body.decode("utf-8", errors="replace")


# --- oversized pages --------------------------------------------------------------------------

_IMG_TAG = re.compile(rb"<img[\s/>]", re.I)


def read_page(stream, max_bytes: int, chunk: int = 1 << 16) -> tuple[bytes, int | None]:
    """(the first `max_bytes` of a page, the `<img>` tags after them, or None when the page is
    no longer). The rest is scanned, not kept, so that the images of an oversized page are
    counted (`page_truncated` drops) instead of vanishing. A tag cut in two goes with the rest:
    the parser would drop it anyway."""
    parts, left = [], max_bytes
    while left > 0:
        data = stream.read(min(chunk, left))
        if not data:
            return b"".join(parts), None
        parts.append(data)
        left -= len(data)
    body, data = b"".join(parts), stream.read(chunk)
    if not data:
        return body, None
    cut = body.rfind(b"<")
    if cut > body.rfind(b">"):
        body, data = body[:cut], body[cut:] + data
    images, carry = 0, b""
    while data:
        # `carry` is too short to hold a whole match, so none is counted twice
        window = carry + data
        images += len(_IMG_TAG.findall(window))
        carry, data = window[-4:], stream.read(chunk)
    return body, images


# --- images ---------------------------------------------------------------------------------

def first_srcset_url(srcset: str | None) -> str | None:
    """The first candidate's URL in a srcset ("a.jpg 1x, b.jpg 2x" -> "a.jpg"), per the HTML
    spec: the URL runs to the first whitespace, trailing commas are not part of it."""
    parts = (srcset or "").split(None, 1)
    return (parts[0].rstrip(",") or None) if parts else None


def parse_page(text: str) -> tuple[str | None, list[Image]]:
    """(`<base href>` as written or None, the page's images in document order)."""
    tree = LexborHTMLParser(text)
    base = tree.css_first("base[href]")
    images = []
    for node in tree.css("img"):
        attrs = node.attributes
        src = (attrs.get("src") or "").strip() or first_srcset_url(attrs.get("srcset"))
        images.append(Image(src, attrs.get("alt"), attrs.get("title")))
    return (base.attributes.get("href") if base else None), images


def texts(image: Image, include_title: bool) -> Iterator[tuple[str, str]]:
    """(kind, cleaned text) candidates of one image: always its alt (an empty one is counted as
    an `empty_text` drop), and its title when present and different from the alt."""
    alt = clean_text(image.alt)
    yield "alt", alt
    if include_title:
        title = clean_text(image.title)
        if title and title != alt:
            yield "title", title


# --- saved pages (the `html` input format) ----------------------------------------------------

def read_saved(fileobj, page_url: str | None, max_bytes: int) -> Iterator:
    """The one `Page` of a saved-page file (gzipped when its first bytes say so; `CORRUPT` when
    that gzip is damaged). No HTTP headers: the charset comes from the page itself."""
    try:
        fileobj = storage.gunzipped(fileobj)
        body, images_cut = read_page(fileobj, max_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        yield CORRUPT
        return
    base_href, images = parse_page(decode(body))
    yield Page(page_url, base_href, images, images_cut)


def read_listing(lines: Iterator[str]) -> dict[str, str]:
    """`file<TAB>url[<TAB>...]` lines -> {file name: url}; a header line (no URL) is skipped."""
    urls = {}
    for line in lines:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) >= 2 and "://" in fields[1]:
            urls[posixpath.basename(fields[0])] = fields[1].strip()
    return urls
