"""robots.txt: a site's owner says which paths our user agent may fetch; we ask before fetching.

One robots.txt per host (scheme, host, port), fetched once per executor process and cached,
through the same fetcher as images: the same address checks on every hop, the same hard
deadline, a size bound. Parsed with protego (Scrapy's parser, RFC 9309). As RFC 9309 says: a
4xx answer means no rules (fetch anything), while a 5xx answer or an unreachable host means
"assume everything is disallowed" until a later run. Refused URLs are counted as `robots_txt`.
"""

from __future__ import annotations

import dataclasses
import threading
from urllib.parse import urlsplit

from protego import Protego

from wit_builder.download.safety import Refused

MAX_BYTES = 512 * 1024  # RFC 9309: crawlers must read at least 500 KiB
_ALLOW_ALL = Protego.parse("")
_DENY_ALL = Protego.parse("User-agent: *\nDisallow: /")
# Our own refusals before any request: no robots.txt was asked for.
_NOT_ASKED = ("blocked_address", "bad_scheme", "bad_url", "dns_error")


class RobotsCache:
    """host -> parsed robots.txt; a lock per host, so each host's file is fetched once."""

    def __init__(self):
        self._rules: dict = {}
        self._locks: dict = {}
        self._guard = threading.Lock()

    def allowed(self, url: str, policy, fetch) -> bool:
        """Whether `policy.robots_token` may fetch `url`; `fetch(url, policy)` gets the file."""
        parts = urlsplit(url)
        host = (parts.scheme, parts.hostname, parts.port)
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            if host not in self._rules:
                self._rules[host] = _rules_of(parts, policy, fetch)
        return self._rules[host].can_fetch(url, policy.robots_token)


def _rules_of(parts, policy, fetch) -> Protego:
    robots_url = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/robots.txt"
    bounded = dataclasses.replace(policy, max_bytes=MAX_BYTES, retries=0)
    try:
        body = fetch(robots_url, bounded)
    except Refused as exc:
        if exc.reason.startswith("http_4"):
            return _ALLOW_ALL
        if exc.reason in _NOT_ASKED:  # the image fetch refuses the URL with this same reason
            return _ALLOW_ALL
        return _DENY_ALL  # 5xx, timeout, too large, redirect loop: not readable, so disallowed
    except Exception:  # noqa: BLE001 - unreachable: RFC 9309 says assume disallowed
        return _DENY_ALL
    return Protego.parse(body.decode("utf-8", errors="replace"))


ROBOTS = RobotsCache()  # per executor process
