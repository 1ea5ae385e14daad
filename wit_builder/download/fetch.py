"""Our image fetcher: aiohttp with our address rules in its resolver, one checked hop at a time.

urllib (what img2dataset uses) resolves host names itself and follows redirects on its own, so
it cannot refuse a redirect to an intranet address before connecting to it. Here aiohttp does
the HTTP, and safety.CheckedResolver is the only way its connector learns an address: every new
connection, on every hop, goes to an address that passed the rules (a kept-alive connection was
opened to one). Redirects are followed by hand (`allow_redirects=False`), each hop a new request
that passes the checks again, within a hop budget. The body is read in bounded chunks; the bytes
must then be a whole image within `max_pixels` and `max_scans`, judged from its header
(images.py) before anything decodes it.

What a library could not do for us, and is written here: the one deadline per URL (asyncio's
`timeout_at` around DNS, connects, TLS, every hop, the body and retries; a server that trickles
one byte a second cannot stretch it), the byte budget shared by every body in flight in the
process (ByteBudget), and the drop reasons. aiohttp keeps connections alive and pools them per
host (`limit_per_host` is the hard cap on connections to one host); it must not decompress
(`auto_decompress=False`: a gzip bomb would bypass `max_bytes`) nor read proxy variables
(`trust_env=False`: a proxy would connect for us, unchecked).

The download stage runs many URLs at once through engine.py on one Fetcher (engine.py's
`download_image` keeps img2dataset's per-URL contract for one URL at a time).
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from wit_builder.safety import (CheckedResolver, Refused, address_problem,
                                         parse_networks, split_url)
from wit_builder.urls import requote
from wit_builder.images import ImageRefused, check_image

REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 1 << 16


@dataclass(frozen=True)
class Policy:
    """What one fetch may do; built once from `[download]` and shipped to the executors."""

    timeout: float  # each connect and each read
    total_timeout: float  # one URL: DNS, every hop, the whole body and every retry together
    max_bytes: int
    max_pixels: int
    max_redirects: int
    allowed: tuple  # ip_network objects exempt from the public-address rule
    user_agent: str
    retries: int = 0  # further attempts after a transient failure, within total_timeout
    honor_robots_txt: bool = False  # ask each host's robots.txt first (download config: on)
    connections_per_host: int = 0  # open at once to one host, per process (0: no limit)
    max_scans: int = 100  # progressive JPEG scans (images.py)

    @classmethod
    def from_config(cls, section) -> "Policy":
        return cls(timeout=section.timeout, total_timeout=section.total_timeout,
                   max_bytes=section.max_bytes, max_pixels=section.max_pixels,
                   max_redirects=section.max_redirects,
                   allowed=parse_networks(section.allow_networks), user_agent=section.user_agent,
                   retries=section.retries, honor_robots_txt=section.honor_robots_txt,
                   connections_per_host=section.connections_per_host,
                   max_scans=section.max_scans)

    @property
    def robots_token(self) -> str:
        """Our product token ("wit-builder"): `X-Robots-Tag: wit-builder: noai` names us."""
        return self.user_agent.split("/", 1)[0].strip().lower()


class ByteBudget:
    """Bytes of bodies held in this process (read, or waiting to be resized), at most `limit`.

    A body reserves what its Content-Length announces (a chunk when it announces nothing)
    before its first byte is read, waiting while the budget is spent: the servers' TCP windows
    fill and they pause, so memory follows the budget, not what they send. That is the only
    wait: a body already holding bytes never waits for more (it grows the count, which holds
    the next bodies back), so readers cannot all hold part of a body and wait for each other.
    One body may exceed the budget alone. The engine gives a body's bytes back once written.
    """

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._freed = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._freed:
            await self._freed.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    def grow(self, n: int) -> None:
        self.used += n

    def give(self, n: int) -> None:
        if n:
            self.used -= n
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._freed:
            self._freed.notify_all()


class HttpRefused(Refused):
    """A non-200 answer; `retry_after` is the seconds a 429 or 503 asked us to wait (or None)."""

    def __init__(self, status: int, detail: str, retry_after: float | None):
        super().__init__(f"http_{status}", detail)
        self.retry_after = retry_after


class Fetcher:
    """One aiohttp session for one event loop: keep-alive connections pooled per host, at most
    `in_flight` open in all and `policy.connections_per_host` to one host."""

    def __init__(self, policy: Policy, in_flight: int = 100, budget_bytes: int = 1 << 30):
        self.policy = policy
        self.budget = ByteBudget(budget_bytes)
        resolver = CheckedResolver(policy.allowed, policy.timeout, QuickAckSocket)
        connector = aiohttp.TCPConnector(
            resolver=resolver, socket_factory=resolver.socket_for, ssl=_tls(),
            limit=in_flight, limit_per_host=policy.connections_per_host,
            ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False,
            headers={"User-Agent": policy.user_agent, "Accept": "image/*,*/*;q=0.5",
                     "Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=policy.timeout,
                                          sock_read=policy.timeout))

    async def close(self) -> None:
        await self.session.close()

    async def fetch(self, url: str, opted_out=None, max_bytes: int | None = None) -> bytes:
        """The body of `url` after at most `max_redirects` checked redirects, or an exception
        (Refused for our rules and HTTP answers, aiohttp/OS errors for the network). Its bytes
        are taken from the budget: the caller gives `len(body)` back when done with it. The
        caller bounds the time (engine.py: one deadline per URL)."""
        max_bytes = max_bytes or self.policy.max_bytes
        for hop in range(self.policy.max_redirects + 1):
            try:
                split_url(url)  # a missing or non-http(s) URL keeps its own refusal reason
                url = _on_the_wire(url)
                _check_numeric_host(split_url(url)[1], self.policy.allowed)
                async with self.session.get(URL(url, encoded=True), allow_redirects=False) as r:
                    if r.status in REDIRECTS:
                        location = r.headers.get("Location")
                        if not location:
                            raise Refused("bad_redirect", "no Location")
                        url = urljoin(url, _header_text(location).strip())
                        continue
                    if r.status != 200:
                        raise HttpRefused(r.status, (r.reason or "")[:40], _retry_after(r))
                    if opted_out and opted_out(r.headers):
                        raise Refused("robots_optout", "X-Robots-Tag")
                    return await self._body(r, max_bytes)
            except Refused as exc:
                exc.hop = hop
                raise
        raise Refused("too_many_redirects", f"more than {self.policy.max_redirects}")

    async def _body(self, response, max_bytes: int) -> bytes:
        length = response.content_length
        if (length or 0) > max_bytes:
            raise Refused("too_large", "Content-Length")
        held = length or CHUNK
        await self.budget.take(held)  # before the first byte (ByteBudget)
        body = bytearray()
        try:
            while chunk := await response.content.read(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise Refused("too_large", "body")
                if len(body) > held:  # longer than announced, or announced nothing
                    self.budget.grow(len(body) - held)
                    held = len(body)
        except BaseException:
            self.budget.give(held)
            raise
        self.budget.give(held - len(body))
        return bytes(body)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class QuickAckSocket(socket.socket):
    """A socket that acknowledges what it receives at once (Linux's TCP_QUICKACK, re-armed on
    every read: the kernel drops back to delayed ACKs on its own).

    On a kept-alive connection the kernel delays our ACKs (request-response traffic), and a
    server that writes a response in pieces behind Nagle's algorithm (headers, then the body;
    Python's http.server, many application servers) holds its last small piece until that ACK
    comes: 40 ms per image. Measured on the peer tool's server, one connection: 22 images/s,
    and 550 with this; 8 connections: 173 and 666. Elsewhere a plain socket.
    """

    def recv(self, *args):
        data = super().recv(*args)
        if _QUICKACK:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data

    def recv_into(self, *args):
        n = super().recv_into(*args)
        if _QUICKACK:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return n


def _tls() -> ssl.SSLContext:
    """The system's trust store (SSL_CERT_FILE honoured), certificates checked against the host
    name, as urllib does."""
    return ssl.create_default_context()


def _retry_after(response) -> float | None:
    """Seconds a 429 or 503 asked for (RFC 9110: delay-seconds or an HTTP date)."""
    if response.status not in (429, 503):
        return None
    value = (response.headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _on_the_wire(url: str) -> str:
    """The URL as a request may carry it: path and query percent-encoded, host in IDNA.

    Plain candidate lists and redirects hold URLs as people write them (spaces, non-ASCII);
    existing %XX escapes stay, so the server sees the URL the page had.
    """
    try:
        return requote(url)
    except ValueError:  # a host IDNA cannot encode
        raise Refused("bad_url", "host") from None


def _check_numeric_host(host: str, allowed: tuple) -> None:
    """Refuse IPv4 addresses in legacy notation ("2852039166", "0xA9FEA9FE", "127.1") for what
    they reach; aiohttp would refuse them anyway, but as an invalid URL, hiding where they lead."""
    try:
        packed = socket.inet_aton(host)
    except (OSError, UnicodeError, ValueError):
        return  # a name, or an IPv6 literal: the resolver and socket factory check those
    address = socket.inet_ntoa(packed)
    if address != host:
        raise Refused("blocked_address", address_problem(address, allowed) or "numeric host")


def _header_text(value: str) -> str:
    """A header as its sender wrote it: headers are decoded as Latin-1, servers mostly send
    UTF-8 (a Location with "é" arrives as "Ã©")."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def error_text(exc: BaseException, deadline_passed: bool) -> str:
    """The "reason: detail" drop message of a failed attempt: a snake_case reason (what the
    manifest counts) and a short, low-cardinality detail (`_stats.json` counts them verbatim)."""
    if isinstance(exc, (Refused, ImageRefused)):
        return str(exc)
    if deadline_passed:  # whatever broke once the deadline passed was the deadline
        return "timeout: total"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout: socket"
    if isinstance(exc, (ssl.SSLError, aiohttp.ClientSSLError)):  # certificate errors included
        return f"tls_error: {type(exc).__name__}"
    if isinstance(exc, (OSError, aiohttp.ClientError)):
        return f"connection_error: {type(exc).__name__}"
    return f"fetch_error: {type(exc).__name__}"


def transient(error: str) -> bool:
    """Worth another attempt: the network failed or the server said "later"."""
    return error.startswith(("timeout: socket", "connection_error", "tls_error", "http_5",
                             "http_429"))


def image_error(data: bytes, policy: Policy) -> str | None:
    """None when `data` is a whole image within the policy's bounds, else the drop message."""
    try:
        check_image(data, policy.max_pixels, policy.max_scans)
    except ImageRefused as exc:
        return str(exc)
    return None
