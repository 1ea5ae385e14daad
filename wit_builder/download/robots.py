"""robots.txt: a site's owner says which paths our user agent may fetch; we ask before fetching.

One robots.txt per host (scheme, host, port), fetched once per executor process and cached,
through the same fetcher as images: the same address checks on every hop, a size bound, and
the deadline of the URL that asked first (engine.py holds the host's other URLs back until the
answer is in). Parsed with protego (Scrapy's parser, RFC 9309), which also reads `Crawl-delay`.
As RFC 9309 says: a 4xx answer means no rules (fetch anything), while a 5xx answer or an
unreachable file means "assume everything is disallowed" until a later run; a redirect to an
address we may not contact is unreachable. Refused URLs are counted as `robots_txt`.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from protego import Protego

from wit_builder.safety import Refused

MAX_BYTES = 512 * 1024  # RFC 9309: crawlers must read at least 500 KiB
_ALLOW_ALL = Protego.parse("")
_DENY_ALL = Protego.parse("User-agent: *\nDisallow: /")
# Refusals of the robots.txt URL itself, before any request reached the host: the image URL
# fails with the same error (nothing is cached; the host's next URL asks again).
_NOT_ASKED = ("blocked_address", "bad_scheme", "bad_url", "dns_error", "timeout: dns")

_RULES: dict = {}  # (scheme, host, port) -> Protego, per executor process


def host_of(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def known(url: str) -> Protego | None:
    """The cached rules of `url`'s host, or None when its robots.txt has not been read."""
    return _RULES.get(host_of(url))


async def rules(url: str, fetcher) -> Protego:
    """The rules of `url`'s host, fetched through `fetcher` (fetch.Fetcher) on first use."""
    host = host_of(url)
    if host not in _RULES:
        try:
            _RULES[host] = await _fetch_rules(url, fetcher)
        except asyncio.CancelledError:  # the asking URL's deadline: unreachable in time
            _RULES[host] = _DENY_ALL
            raise
    return _RULES[host]


async def _fetch_rules(url: str, fetcher) -> Protego:
    parts = urlsplit(url)
    robots_url = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/robots.txt"
    try:
        body = await fetcher.fetch(robots_url, max_bytes=MAX_BYTES)
    except Refused as exc:
        if exc.reason.startswith("http_4"):
            return _ALLOW_ALL
        if getattr(exc, "hop", 0) == 0 and (exc.reason in _NOT_ASKED or str(exc) in _NOT_ASKED):
            raise
        return _DENY_ALL  # 5xx, timeout, too large, redirect loop or a forbidden redirect
    except Exception:  # noqa: BLE001 - unreachable: RFC 9309 says assume disallowed
        return _DENY_ALL
    fetcher.budget.give(len(body))
    return Protego.parse(body.decode("utf-8", errors="replace"))
