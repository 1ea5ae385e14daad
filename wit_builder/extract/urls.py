"""One candidate's checks: text cleaning, URL resolution, the uid; every failure is a drop reason.

Shared by every input format (WAT, WARC, saved HTML, tabular), so the same element gives the same
row or the same drop whichever way it arrived.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

# Characters left as they are when re-quoting a URL (what requests' `requote_uri` keeps): we only
# escape what may not appear in a URL at all (spaces, quotes, controls), never re-escape `%XX`.
_SAFE = "!#$%&'()*+,/:;=?@[]~"
_HTTP = ("http", "https")
_HOST = re.compile(r"[a-z0-9._~:-]+")  # urlsplit lower-cases it and strips IPv6's brackets


def clean_text(text: str | None) -> str:
    """Collapse every run of whitespace (Unicode's, including NBSP) to one space; strip the ends."""
    return " ".join(text.split()) if text else ""


def scrub(value: str | None) -> str | None:
    """Lone surrogates (JSON can spell them: "\\ud800") as U+FFFD, so every string is valid
    UTF-8 for Arrow; the texts and URLs holding them become `undecodable` drops."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def uid(url: str, text: str) -> str:
    """16 hex chars: blake2b-64 of url + NUL + text (UTF-8); the row id across every stage."""
    return hashlib.blake2b(f"{url}\x00{text}".encode(), digest_size=8).hexdigest()


def requote(url: str) -> str:
    """Escape what may not appear in a URL (spaces, non-ASCII, quotes), host as IDNA."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        try:
            netloc = netloc.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"bad host {netloc!r}") from None
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=_SAFE),
                       quote(parts.query, safe=_SAFE), quote(parts.fragment, safe=_SAFE)))


def resolve(raw: str | None, base: str | None, max_chars: int = 2048) -> tuple[str | None, str | None]:
    """(absolute http(s) URL, None) or (None, drop reason) for an attribute value.

    `base` is the page URL (or its `<base href>`, already resolved); without one, only URLs that
    are absolute already (or protocol-relative ones, taken as https) can be kept.
    """
    raw = (raw or "").strip()
    if not raw:
        return None, "empty_url"
    if "\ufffd" in raw:  # bytes that no charset could decode
        return None, "undecodable"
    # Browsers drop tabs and newlines inside URLs (WHATWG URL parser); pages do contain them.
    raw = raw.replace("\t", "").replace("\n", "").replace("\r", "")
    try:
        scheme = urlsplit(raw).scheme.lower()
        if scheme and scheme not in _HTTP:
            return None, "non_http"  # data:, javascript:, mailto:, blob:, ...
        if not scheme:
            if base:
                raw = urljoin(base, raw)
            elif raw.startswith("//"):
                raw = "https:" + raw
            else:
                return None, "relative_url"  # no page URL to resolve it against
        url = requote(raw)
        parts = urlsplit(url)
        if parts.scheme.lower() not in _HTTP:
            return None, "non_http"
        host = parts.hostname
        parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:  # e.g. an unbalanced "[" in the host, a label IDNA cannot encode
        return None, "bad_url"
    if not host or not _HOST.fullmatch(host):
        return None, "bad_url"
    if len(url) > max_chars:
        return None, "url_too_long"
    return url, None


def page_url_of(target_uri: str | None) -> str | None:
    """A WARC-Target-URI as a URL; wget writes it in <angle brackets>, which are not part of it."""
    uri = (target_uri or "").strip().strip("<>").strip()
    return uri or None


def base_url(page_url: str | None, base_href: str | None) -> str | None:
    """What relative image URLs resolve against: `<base href>` (itself resolved against the
    page) when it gives an http(s) URL, else the page URL."""
    href = (base_href or "").strip()
    if href:
        try:
            joined = urljoin(page_url, href) if page_url else href
            if urlsplit(joined).scheme.lower() in _HTTP:
                return joined
        except ValueError:
            pass
    return page_url


def check_text(text: str, max_chars: int) -> str | None:
    """The drop reason for an already cleaned text, or None when it is usable."""
    if not text:
        return "empty_text"
    if "\ufffd" in text:  # bytes that no charset could decode
        return "undecodable"
    if len(text) > max_chars:
        return "text_too_long"
    return None
