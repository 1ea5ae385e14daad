"""URL canonicalisation, caption normalisation and the one-shuffle dedup of the filter stage.

Canonical URL (`canonical_url`), following RFC 3986 section 6's safe normalisations:
- scheme and host lower-cased, a trailing dot and the default port (80 for http, 443 for https)
  removed, an IDN host written in punycode;
- fragment removed (it never reaches the server); an empty path becomes `/`; `.` and `..`
  path segments resolved;
- percent-encoding normalised: escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded,
  other escapes upper-cased, characters that must be escaped (spaces, non-ASCII) escaped as UTF-8;
- query kept in its order (servers may read it positionally), less the click-tracking
  parameters in `TRACKING_PARAMS` (`utm_*`, `fbclid`, ...), which never change the image.
http and https stay distinct (nothing says they serve the same bytes). A URL that is not an
absolute http(s) URL is returned unchanged (the URL rules drop it anyway).

Normalised caption (`normalize_text`): NFKC, lower-cased, whitespace collapsed and trimmed.

Dedup (`dedup_reasons`), over the rows that survived every earlier filter:
- `duplicate`: the same (url_canonical, normalised text) as a row with a smaller uid;
- `too_many_texts_per_url`: an image URL with more than `max_texts_per_url` distinct texts
  (default 10: an image under more captions is a logo or stock art, not a described picture)
  keeps the texts whose first row has the smallest uids (uids are hashes, so this is a fair,
  stable draw) and drops the rest.
Both are decided within one canonical URL, so the whole dedup is one shuffle by url_canonical
(runner.by_key; on the driver, the whole table); rows already dropped travel along (they must be counted) but never count as a duplicate's
original or against the cap.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_PORTS = {"http": 80, "https": 443}
TRACKING_PARAMS = re.compile(r"^(utm_[a-z]+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|igshid|_ga)$")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# what may stay unescaped in a path / query (reserved characters keep their meaning)
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


def _normalize_escapes(part: str, safe: str) -> str:
    def fix(m: re.Match) -> str:
        char = chr(int(m.group()[1:], 16))
        return char if char in _UNRESERVED else m.group().upper()
    return quote(_ESCAPE.sub(fix, part), safe=safe)


def _host(hostname: str) -> str:
    hostname = hostname.rstrip(".")
    if hostname.isascii():
        return hostname
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return hostname


def _strip_tracking(query: str) -> str:
    if not query:
        return ""
    kept = [p for p in query.split("&") if p and not TRACKING_PARAMS.match(p.split("=", 1)[0].lower())]
    return "&".join(kept)


@functools.lru_cache(maxsize=1 << 16)  # the same image URL recurs on many pages
def canonical_url(url: str) -> str:
    """The canonical form of an absolute http(s) URL (see the module doc); else `url` as is."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return url
        netloc = _host(parts.hostname)
        if ":" in netloc:  # IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port is not None and parts.port != DEFAULT_PORTS[scheme]:
            netloc += f":{parts.port}"
        if parts.username is not None:
            userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
            netloc = f"{userinfo}@{netloc}"
    except ValueError:  # a bad port or bracket: not a URL we can normalise
        return url
    path = _normalize_escapes(parts.path, _PATH_SAFE) or "/"
    if "/." in path:
        path = urlsplit(urljoin("http://h/", path)).path  # RFC 3986 dot-segment removal
    query = _normalize_escapes(_strip_tracking(parts.query), _QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


# URLs that `canonical_url` returns as they are: lower-case http(s) scheme and host (no port, no
# userinfo, no trailing dot), a path, an optional non-empty query, no fragment, only characters
# that quote() keeps ...
_AS_IS = (r"^https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*"
          r"(?:\?[A-Za-z0-9._~!$&'()*+,;=:@/?%-]+)?$")
# ... and none of: a dot segment, an escape it rewrites (lower-case hex, an unreserved
# character), an empty query parameter, a tracking parameter.
_REWRITTEN = (r"/\.|%(?:[0-9A-Fa-f][a-f]|[a-f][0-9A-F]|2[DE]|3[0-9]|4[1-9A-F]|5[0-9AF]|6[1-9A-F]|"
              r"7[0-9AE])|\?&|&&|&$|[?&](?i:utm_[a-z]+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|"
              r"igshid|_ga)(?:[=&]|$)")


def canonical_urls(urls: pa.Array) -> pa.Array:
    """`canonical_url` of each URL (null -> null): URLs already canonical are recognised by Arrow
    regex kernels; the others go through `canonical_url`, once per distinct URL."""
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    urls = urls.cast(pa.string())
    as_is = pc.and_(pc.fill_null(pc.match_substring_regex(urls, _AS_IS), False),
                    pc.invert(pc.fill_null(pc.match_substring_regex(urls, _REWRITTEN), False)))
    other = pc.invert(as_is)
    if not pc.any(other).as_py():
        return urls
    coded = pc.dictionary_encode(urls.filter(other))
    fixed = pa.array([canonical_url(u) for u in coded.dictionary.to_pylist()], pa.string())
    return pc.replace_with_mask(urls, other, fixed.take(coded.indices))


def normalize_text(texts: pa.Array) -> pa.Array:
    """NFKC, lower case, whitespace collapsed and trimmed (vectorised, Arrow)."""
    texts = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r"\s+", " "))


def host_of(url: str) -> str:
    """The lower-case host of a URL ('' when there is none), for the domain rules."""
    try:
        return _host(urlsplit(url).hostname or "")
    except ValueError:
        return ""


# pyarrow 25 moved null placement into each sort key (SortOptions' own null_placement now warns
# on every call); older versions take only the table-wide option.
_NULLS_PER_KEY = int(pa.__version__.split(".")[0]) >= 25


def _ascending_nulls_first(table: pa.Table, columns: list[str]):
    """The row order of `table` by `columns`, ascending with nulls first (Spark's ascending)."""
    if _NULLS_PER_KEY:
        return pc.sort_indices(table, sort_keys=[(c, "ascending", "at_start") for c in columns])
    return pc.sort_indices(table, sort_keys=[(c, "ascending") for c in columns],
                           null_placement="at_start")


def dedup_reasons(table: pa.Table, max_texts_per_url: int, reason_col: str = "drop_reason",
                  url_col: str = "url_canonical", text_col: str = "text_norm") -> pa.Table:
    """`table` with `reason_col` filled with `duplicate` / `too_many_texts_per_url`. `table`
    holds every row of each `url_col` value it holds (runner.by_key). Within an image URL:
    texts in order, and for each text its live rows first, smallest uid first (page_url and
    source break the tie of one (url, text) on two pages); a live row is a duplicate when the
    row before it is live with the same text. Then, in uid order, the texts after the first
    `max_texts_per_url` of a URL. As sorts (nulls first) and comparisons with the row before."""
    import numpy as np

    n = table.num_rows
    alive = pc.is_null(table.column(reason_col)).to_numpy(zero_copy_only=False)
    ties = [c for c in ("page_url", "source") if c in table.column_names]
    keyed = table.append_column("_dead", pa.array(~alive))
    order = _ascending_nulls_first(keyed, [url_col, text_col, "_dead", "uid", *ties]).to_numpy()

    def same_as_previous(column, order, nulls_equal: bool) -> np.ndarray:
        """Per row of `order`: equal to the row before it in that order."""
        values = column.take(pa.array(order)).combine_chunks() if n else pa.array([], column.type)
        same = np.zeros(n, bool)
        if n > 1:
            now, before = values.slice(1), values.slice(0, n - 1)
            equal = pc.fill_null(pc.equal(now, before), False).to_numpy(zero_copy_only=False)
            if nulls_equal:  # one window partition holds every null url
                equal |= (pc.is_null(now).to_numpy(zero_copy_only=False)
                          & pc.is_null(before).to_numpy(zero_copy_only=False))
            same[1:] = equal
        return same

    same_url = same_as_previous(table.column(url_col), order, nulls_equal=True)
    same_text = same_as_previous(table.column(text_col), order, nulls_equal=False)
    null_text = pc.is_null(table.column(text_col)).to_numpy(zero_copy_only=False)[order]
    live = alive[order]
    both_live = live & np.concatenate([[False], live[:-1]]) & same_url
    dup, unknown = np.zeros(n, bool), np.zeros(n, bool)
    dup[order] = both_live & same_text
    # SQL's null: a null text compared with the row before is neither duplicate nor first
    unknown[order] = both_live & (null_text | np.concatenate([[False], null_text[:-1]]))
    reason = np.array(table.column(reason_col).to_pylist(), dtype=object)
    reason[dup] = "duplicate"
    if max_texts_per_url:
        first_of_text = alive & ~dup & ~unknown
        by_uid = _ascending_nulls_first(table, [url_col, "uid"]).to_numpy()
        group_start = ~same_as_previous(table.column(url_col), by_uid, nulls_equal=True)
        counts = np.cumsum(first_of_text[by_uid])
        starts = np.maximum.accumulate(np.where(group_start, np.arange(n), 0))
        before_group = np.where(starts > 0, counts[np.maximum(starts - 1, 0)], 0)
        over = first_of_text[by_uid] & (counts - before_group > max_texts_per_url)
        reason[by_uid[over]] = "too_many_texts_per_url"
    return table.set_column(table.column_names.index(reason_col), reason_col,
                            pa.array(reason.tolist(), pa.string()))
