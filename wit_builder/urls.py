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


# --- whole batches (Arrow) ------------------------------------------------------------------------
#
# The same checks as `clean_text`, `check_text`, `resolve` and `uid`, run on whole columns. URLs
# whose result is certain without urllib (plain ASCII, no dot segments, no empty query, ...) are
# resolved by Arrow regex kernels; every other URL goes through `resolve` itself, so the batch
# results equal the per-row ones (tests/extract/test_files.py checks that on real data).

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

# Python's str.split() whitespace (str.isspace), spelled for RE2.
_SPACES = (r"\t\n\x0b\x0c\r\x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
           r"\x{202f}\x{205f}\x{3000}")  # less " "
_SPACE_RE2 = rf"[ {_SPACES}]+"
_ODD_SPACE = rf"[{_SPACES}]|  |^ | $"  # what clean_text changes
# Characters that `_requote` leaves as they are and urlsplit never strips or splits on oddly.
_CH = r"A-Za-z0-9._~!$&'()*+,=@%"
_NETLOC = r"[A-Za-z0-9._~-]+"
# An absolute http(s) URL that resolve() returns as is (scheme lower-cased): no userinfo, no
# port, no brackets, no whitespace, no non-ASCII, and no empty query or fragment (see
# _EMPTY_PART): each run of '?' and '#' is '#'s then '?'s and has a character after it.
_URL_CHAR = rf"[{_CH}/:-]"
_RUN = rf"#*\?*{_URL_CHAR}"
_ABSOLUTE = (rf"^(?i:https?)://{_NETLOC}"
             rf"(?:/(?:{_RUN})*|#+\?*{_URL_CHAR}(?:{_RUN})*|\?+{_URL_CHAR}(?:{_RUN})*)?$")
# A base URL the fast joins accept: as above (a port of up to 4 digits allowed), no ';' params.
_BASE = rf"^(?i:https?)://{_NETLOC}(?::[0-9]{{1,4}})?(?:[/?#][{_CH}/:?#-]*)?$"
_BASE_DIR = r"^([A-Za-z]+://[^/?#]*)(/(?:[^?#]*/)?)?[^?#/]*(?:[?#].*)?$"
_ORIGIN = r"^([A-Za-z]+://[^/?#]*).*$"
# Relative references joined without urljoin: protocol-relative, path-absolute, path-relative.
# A path-absolute reference replaces the base's whole path (urljoin keeps its '//' and ':'), so
# only the base's scheme and host matter for it.
_PROTOCOL_RELATIVE = rf"^//{_NETLOC}(?:[/?#][{_CH}/?#-]*)?$"
_PATH_ABSOLUTE = rf"^/[{_CH}?#-][{_CH}/:?#-]*$"
_PATH_RELATIVE = rf"^[{_CH}-][{_CH}/?#-]*$"
# Anything here sends a URL to the per-row path: an empty query or fragment (urlunsplit drops
# its '?'/'#'), and dot segments (but those that lead a path-relative reference, `_climb`).
_EMPTY_PART = r"\?#|[?#]$"
_DOTS = r"(?:^|/)\.\.?(?:[/?#]|$)"
_TRICKY_BASE = r"\?#|[?#]$|/\.\.?(?:[/?#]|$)|://.*//"
# Values resolve() drops without urllib: blank ones, and ones with a scheme that is not http(s)
# (data:, javascript:, ...; scheme as urlsplit reads it, nothing it would strip or split on).
_BLANK = rf"^[ {_SPACES}]*$"
_SCHEME = r"^[A-Za-z][A-Za-z0-9+.-]*:"
_NOT_PLAIN = r"^[A-Za-z][A-Za-z0-9+.-]*://|^(?i:https?):|[\t\n\r\x{fffd}]"


def _re(array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(array, pattern), False)


def _patch(values: pa.Array, mask: pa.Array, fix) -> pa.Array:
    """`values` with `fix` applied to the masked ones only (most values need no fix)."""
    if not pc.any(mask).as_py():
        return values
    return pc.replace_with_mask(values, mask, fix(values.filter(mask)))


def clean_texts(texts: pa.Array) -> pa.Array:
    """`clean_text` of each value (null -> "")."""
    texts = pc.fill_null(texts, "")

    def clean(some: pa.Array) -> pa.Array:
        return pc.utf8_trim(pc.replace_substring_regex(some, _SPACE_RE2, " "), " ")
    # Only texts with other whitespace than single spaces between words change.
    return _patch(texts, _re(texts, _ODD_SPACE), clean)


def _lower_scheme(urls: pa.Array) -> pa.Array:
    """`urls` with an upper-case http(s) scheme lower-cased."""
    def lower(some: pa.Array) -> pa.Array:
        some = pc.replace_substring_regex(some, r"^(?i:https)://", "https://")
        return pc.replace_substring_regex(some, r"^(?i:http)://", "http://")
    lowered = pc.or_(pc.starts_with(urls, "http://"), pc.starts_with(urls, "https://"))
    return _patch(urls, pc.invert(lowered), lower)


_NULL = pa.scalar(None, pa.string())


def check_texts(texts: pa.Array, max_chars: int) -> pa.Array:
    """`check_text` of each cleaned text: the drop reason, null where the text is usable."""
    length = pc.utf8_length(texts)
    return pc.if_else(pc.equal(length, 0), "empty_text", pc.if_else(
        pc.match_substring(texts, "\ufffd"), "undecodable",
        pc.if_else(pc.greater(length, max_chars), "text_too_long", _NULL)))


def check_urls(raw_urls: pa.Array, bases: pa.Array, max_url_chars: int) -> tuple[pa.Array, pa.Array]:
    """(urls, reasons) as `resolve` gives them (the reason null where the URL is kept). Each
    kernel runs only on the rows still undecided: absolute URLs (most of them) first, then
    relative ones, then `resolve` itself."""
    raw = pc.fill_null(raw_urls, "")
    absolute = _re(raw, _ABSOLUTE)
    url = _lower_scheme(pc.if_else(absolute, raw, _NULL))
    relative = pc.invert(absolute)
    if pc.any(relative).as_py():
        url = pc.replace_with_mask(url, relative, _join_relative(raw.filter(relative),
                                                                 bases.filter(relative)))
    too_long = pc.fill_null(pc.greater(pc.utf8_length(url), max_url_chars), False)
    url = pc.if_else(too_long, _NULL, url)
    reason = pc.if_else(too_long, "url_too_long", _NULL)
    undecided = pc.and_(pc.is_null(url), pc.invert(too_long))
    if not pc.any(undecided).as_py():
        return url, reason
    rest = raw.filter(undecided)
    other_scheme = pc.and_(_re(rest, _SCHEME), pc.invert(_re(rest, _NOT_PLAIN)))
    reason = pc.replace_with_mask(reason, undecided, pc.if_else(
        _re(rest, _BLANK), "empty_url", pc.if_else(other_scheme, "non_http", _NULL)))
    slow = pc.and_(undecided, pc.is_null(reason))
    if not pc.any(slow).as_py():
        return url, reason
    resolved = [resolve(raw_url, base, max_url_chars) for raw_url, base
                in zip(raw_urls.filter(slow).to_pylist(), bases.filter(slow).to_pylist())]
    return (pc.replace_with_mask(url, slow, pa.array([u for u, _ in resolved], pa.string())),
            pc.replace_with_mask(reason, slow, pa.array([r for _, r in resolved], pa.string())))


def _join_relative(raw: pa.Array, bases: pa.Array) -> pa.Array:
    """Relative references (no nulls) joined to their base URLs where that is certain without
    urljoin; null elsewhere."""
    plain = pc.invert(_re(raw, _EMPTY_PART + "|" + _DOTS))
    # A page's base URL repeats for each of its images: the regexes run once per distinct base.
    coded = pc.dictionary_encode(pc.fill_null(bases, ""))
    distinct, codes = coded.dictionary, coded.indices
    base_valid = _re(distinct, _BASE)
    joinable = pc.and_(base_valid.take(codes), plain)
    folder_ok = pc.and_(base_valid, pc.invert(_re(distinct, _TRICKY_BASE))).take(codes)
    base = _lower_scheme(distinct)
    folder = pc.replace_substring_regex(base, _BASE_DIR, r"\1\2")
    folder = pc.if_else(pc.ends_with(folder, "/"), folder, pc.binary_join_element_wise(folder, "/", ""))
    # The kinds exclude each other (by their first characters): each is joined alone. A
    # path-relative reference does not start with '/', so any '//' in it is past the first
    # character, where urljoin would fold it.
    kinds = [
        (pc.and_(joinable, _re(raw, _PROTOCOL_RELATIVE)),
         pc.replace_substring_regex(base, r"^([a-z]+):.*$", r"\1:")),
        (pc.and_(joinable, _re(raw, _PATH_ABSOLUTE)), pc.replace_substring_regex(base, _ORIGIN, r"\1")),
        (pc.and_(pc.and_(folder_ok, plain),
                 pc.and_(_re(raw, _PATH_RELATIVE), pc.invert(pc.match_substring(raw, "//")))), folder),
    ]
    url = pa.nulls(len(raw), pa.string())
    for mask, prefix in kinds:
        if pc.any(mask).as_py():
            url = pc.replace_with_mask(url, mask, pc.binary_join_element_wise(
                prefix.take(codes.filter(mask)), raw.filter(mask), ""))
    dotted = pc.and_(pc.and_(folder_ok, pc.invert(plain)), pc.starts_with(raw, "."))
    if pc.any(dotted).as_py():
        url = pc.replace_with_mask(url, dotted, _climb(raw.filter(dotted), folder, codes.filter(dotted)))
    return url


def _climb(raw: pa.Array, folders: pa.Array, codes: pa.Array) -> pa.Array:
    """References that start with "./" and "../" segments (pages write "../img/x.png" often)
    joined to their base folders ("scheme://host/a/b/"), each "../" one folder up (not above
    the root); null where what follows those segments is not plain."""
    parts = pc.extract_regex(raw, r"^(?P<lead>(?:\.\.?/)+)(?P<rest>.*)$")
    lead, rest = pc.struct_field(parts, "lead"), pc.struct_field(parts, "rest")
    ok = pc.and_(pc.and_(_re(rest, _PATH_RELATIVE), pc.invert(_re(rest, _EMPTY_PART + "|" + _DOTS))),
                 pc.invert(pc.fill_null(pc.match_substring(rest, "//"), True)))
    ups = pc.count_substring(lead, "../")
    url = pa.nulls(len(raw), pa.string())
    for up in pc.unique(ups.filter(ok)).to_pylist():
        mask = pc.and_(ok, pc.fill_null(pc.equal(ups, up), False))
        climbed = pc.replace_substring_regex(
            folders, rf"^([^/]+//[^/]*/(?:[^/]+/)*?)(?:[^/]+/){{0,{up}}}$", r"\1")
        url = pc.replace_with_mask(url, mask, pc.binary_join_element_wise(
            climbed.take(codes.filter(mask)), rest.filter(mask), ""))
    return url


_UID_HASH = hashlib.blake2b(digest_size=8)


def uid_array(url: pa.Array, text: pa.Array) -> pa.Array:
    """`uid` of each (url, text) pair of two Arrow string arrays without nulls."""
    n = len(url)
    digests = []
    for data in pc.binary_join_element_wise(url, text, "\x00").cast(pa.binary()).to_pylist():
        h = _UID_HASH.copy()  # a copy skips the constructor's keyword parsing: 30% faster
        h.update(data)
        digests.append(h.digest())
    digests = b"".join(digests)
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digests.hex().encode()))
