"""Our image fetcher: one HTTP(S) request per hop, to an address checked by safety.py.

urllib (what img2dataset uses) resolves host names itself and follows redirects on its own, so
it cannot refuse a redirect to an intranet address before connecting to it. Here each hop is:
check the URL, resolve the host, check every address, connect to a checked address (the TLS
certificate is still verified against the host name), send the request, and either follow a
redirect (back to the start, with a hop budget) or read a bounded body. The bytes must then be
a decodable image of at most `max_pixels` pixels, judged from its header before anything
decodes it in full (decompression bombs).

With `connections_per_host` set, each hop first waits for one of its host's slots in this
process (HOSTS): a polite crawler keeps a few connections to one server at a time (Scrapy's
default is 8 per domain), where img2dataset opens as many as it has threads. Besides sparing
small servers, it keeps their listen queue from overflowing: the kernel resends a dropped SYN
after a second, which stalls that thread and, at the end of a shard, the whole shard. connect.py
makes that stall shorter where it can.
"""

from __future__ import annotations

import http.client
import io
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from wit_builder.download.connect import connect
from wit_builder.download.deadline import WATCHDOG, Deadline
from wit_builder.download.robots import ROBOTS
from wit_builder.download.safety import Refused, parse_networks, resolve_checked, split_url
from wit_builder.extract.urls import requote
from wit_builder.images import ImageRefused, check_image

REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 1 << 16
_TLS = ssl.create_default_context()


@dataclass(frozen=True)
class Policy:
    """What one fetch may do; built once from `[download]` and shipped to the executors."""

    timeout: float  # each connect and each read
    total_timeout: float  # one URL: DNS, every hop, the whole body and every retry together
    max_bytes: int
    max_pixels: int
    max_scans: int
    max_redirects: int
    allowed: tuple  # ip_network objects exempt from the public-address rule
    user_agent: str
    retries: int = 0  # further attempts after a transient failure, within total_timeout
    honor_robots_txt: bool = False  # ask each host's robots.txt first (download config: on)
    connections_per_host: int = 0  # open at once to one host, per process (0: no limit)

    @classmethod
    def from_config(cls, section) -> "Policy":
        return cls(timeout=section.timeout, total_timeout=section.total_timeout,
                   max_bytes=section.max_bytes, max_pixels=section.max_pixels,
                   max_scans=section.max_scans,
                   max_redirects=section.max_redirects,
                   allowed=parse_networks(section.allow_networks), user_agent=section.user_agent,
                   retries=section.retries, honor_robots_txt=section.honor_robots_txt,
                   connections_per_host=section.connections_per_host)

    @property
    def robots_token(self) -> str:
        """Our product token ("wit-builder"): `X-Robots-Tag: wit-builder: noai` names us."""
        return self.user_agent.split("/", 1)[0].strip().lower()


class HostSlots:
    """At most `limit` connections open to one host at a time, across this process's threads.
    Only hosts with a connection open are remembered, so memory follows the threads, not the
    number of hosts a long job meets."""

    def __init__(self):
        self._open: dict[str, int] = {}
        self._changed = threading.Condition()

    @contextmanager
    def slot(self, host: str, limit: int, deadline: Deadline):
        if limit <= 0:
            yield
            return
        with self._changed:
            if not self._changed.wait_for(lambda: self._open.get(host, 0) < limit,
                                          timeout=max(0.0, deadline.left())):
                raise Refused("timeout", "host_busy")
            self._open[host] = self._open.get(host, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                left = self._open.pop(host) - 1
                if left:
                    self._open[host] = left
                self._changed.notify_all()


HOSTS = HostSlots()


def fetch(url: str, policy: Policy, opted_out=lambda headers: False,
          deadline: Deadline | None = None) -> bytes:
    """The body of `url` after at most `max_redirects` checked redirects, or an exception.

    Raises Refused for our rules and HTTP outcomes, OSError/HTTPException for network failures.
    `opted_out(headers)` says whether the final response forbids use (X-Robots-Tag). Everything
    (DNS, connects, TLS, headers, body) ends by `deadline` (default: `total_timeout` from now).
    """
    deadline = deadline or Deadline(policy.total_timeout)
    WATCHDOG.watch(deadline)
    try:
        body = _fetch_hops(url, policy, opted_out, deadline)
    except Refused:
        raise
    except Exception:
        # Whatever broke once the deadline passed was the deadline: the watchdog cut the
        # socket, or a socket timeout (set to what was left) fired a moment before it could.
        if deadline.passed():
            raise Refused("timeout", "total") from None
        raise
    finally:
        deadline.release()
    if deadline.expired:  # a body cut short looks like a whole one without Content-Length
        raise Refused("timeout", "total")
    return body


def _fetch_hops(url, policy, opted_out, deadline) -> bytes:
    for _ in range(policy.max_redirects + 1):
        split_url(url)  # a missing or non-http(s) URL keeps its own refusal reason
        url = _on_the_wire(url)
        scheme, host, port = split_url(url)
        with HOSTS.slot(host, policy.connections_per_host, deadline):
            targets = resolve_checked(host, port, policy.allowed, _remaining(policy, deadline))
            conn = _connection(scheme, host, port, targets, policy, deadline)
            try:
                parts = urlsplit(url)
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("GET", target, headers={"User-Agent": policy.user_agent,
                                                     "Accept": "image/*,*/*;q=0.5",
                                                     "Accept-Encoding": "identity"})
                response = conn.getresponse()
                if response.status in REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise Refused("bad_redirect", "no Location")
                    url = urljoin(url, _header_text(location).strip())
                    continue
                if response.status != 200:
                    raise Refused(f"http_{response.status}", (response.reason or "")[:40])
                if opted_out(response.msg):
                    raise Refused("robots_optout", "X-Robots-Tag")
                return _read_body(response, conn, policy, deadline)
            finally:
                conn.close()
    raise Refused("too_many_redirects", f"more than {policy.max_redirects}")


def _on_the_wire(url: str) -> str:
    """The URL as a request may carry it: path and query percent-encoded, host in IDNA.

    Plain candidate lists and redirects hold URLs as people write them (spaces, non-ASCII);
    http.client would refuse those (InvalidURL, UnicodeEncodeError). Existing %XX escapes stay.
    """
    try:
        return requote(url)
    except ValueError:  # a host IDNA cannot encode
        raise Refused("bad_url", "host") from None


def _header_text(value: str) -> str:
    """A header as its sender wrote it: http.client decodes headers as Latin-1, servers mostly
    send UTF-8 (a Location with "é" arrives as "Ã©")."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _remaining(policy: Policy, deadline: Deadline) -> float:
    if deadline.passed():
        raise Refused("timeout", "total")
    return min(policy.timeout, deadline.left())


def _connection(scheme, host, port, targets, policy, deadline):
    """An HTTP(S) connection for `host` whose socket goes to one of the checked `targets`.

    http.client connects through `self._create_connection((host, port), ...)`; pointing that at
    the checked addresses keeps the Host header, SNI and certificate check on the host name.
    Each address gets what is left of the deadline (capped at `timeout`), not a fresh timeout.
    """
    timeout = _remaining(policy, deadline)
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_TLS)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def connect_checked(_address, timeout=timeout, source_address=None):
        error = None
        for _family, sockaddr in targets:
            try:
                sock = connect(sockaddr[:2], _remaining(policy, deadline), source_address)
            except OSError as exc:
                error = exc
                continue
            deadline.guard(sock)
            return sock
        raise error

    conn._create_connection = connect_checked
    return conn


def _read_body(response, conn, policy: Policy, deadline: Deadline) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise Refused("too_large", "Content-Length")
    body = bytearray()
    while True:
        if conn.sock is not None:
            conn.sock.settimeout(_remaining(policy, deadline))
        chunk = response.read(CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > policy.max_bytes:
            raise Refused("too_large", "body")


def download_image(row, timeout, user_agent_token, disallowed_header_directives, *_, policy,
                   **__):
    """img2dataset's `download_image` contract, on our fetcher: (key, BytesIO | None, error).

    Errors read "reason: detail" with a snake_case reason (what the manifest counts) and a
    short, low-cardinality detail (img2dataset's `_stats.json` counts messages verbatim).
    `policy.retries` further attempts follow a transient failure, all within one deadline.
    """
    from img2dataset.downloader import is_disallowed

    key, url = row
    token = user_agent_token or policy.robots_token

    def opted_out(headers):
        return bool(disallowed_header_directives) and is_disallowed(
            headers, token, disallowed_header_directives)

    if policy.honor_robots_txt and not ROBOTS.allowed(url, policy, _robots_fetch):
        return key, None, "robots_txt: disallowed"
    deadline = Deadline(policy.total_timeout)  # retries share it: one URL, one budget
    for attempt in range(policy.retries + 1):
        error = _attempt(url, policy, opted_out, deadline)
        if not isinstance(error, str):
            return key, error, None
        if attempt == policy.retries or not _transient(error) or deadline.passed():
            return key, None, error
    raise AssertionError("unreachable")


def _robots_fetch(url: str, policy: Policy) -> bytes:
    return fetch(url, policy)


def _transient(error: str) -> bool:
    """Worth another attempt: the network failed or the server said "later"."""
    return error.startswith(("timeout: socket", "connection_error", "tls_error", "http_5",
                             "http_429"))


def _attempt(url, policy, opted_out, deadline):
    """The image as a BytesIO, or the "reason: detail" error string."""
    try:
        data = fetch(url, policy, opted_out, deadline)
        check_image(data, policy.max_pixels, policy.max_scans)
        return io.BytesIO(data)
    except (Refused, ImageRefused) as exc:
        return str(exc)
    except TimeoutError:
        return "timeout: socket"
    except ssl.SSLError as exc:  # includes certificate errors
        return f"tls_error: {type(exc).__name__}"
    except (OSError, http.client.HTTPException) as exc:
        return f"connection_error: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - one bad URL must never fail the shard
        return f"fetch_error: {type(exc).__name__}"
