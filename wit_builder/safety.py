"""Network rules for fetching images from the open web: which URLs and addresses we may contact.

A crawl list is untrusted input. Without these rules a candidate URL (or a redirect from a
harmless-looking one) could make the downloader read cloud metadata (169.254.169.254), an
intranet service or the machine itself. So: http and https only, and every address a host name
resolves to must be a public unicast address, unless it lies in one of the `[download]
allow_networks` CIDR ranges; cloud metadata addresses never. An IPv6 address that carries an
IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by that too. The caller connects to the
address that was checked (no second DNS lookup an attacker could answer differently) and
repeats the check on every redirect hop. Stage inputs (and *.paths entries) that are URLs pass
the same rules before anything reads them (check_inputs).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from wit_builder import per_process
from wit_builder.errors import UserError

SCHEMES = {"http": 80, "https": 443}


class Refused(Exception):
    """A URL we will not fetch; `reason` is the snake_case drop reason, `detail` a short why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_networks(cidrs) -> tuple:
    """The allow list as ip_network objects; a malformed entry is a user error."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            raise UserError(f"[download] allow_networks: {cidr!r} is not a CIDR range "
                            "(write e.g. 10.1.0.0/16 or fd00::/8)") from None
    return tuple(networks)


def split_url(url) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or Refused(bad_scheme | bad_url)."""
    if not isinstance(url, str):
        raise Refused("bad_url", "missing")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise Refused("bad_scheme", scheme or "none")
        host = parts.hostname
        port = parts.port or SCHEMES[scheme]
    except (ValueError, TypeError, AttributeError):
        raise Refused("bad_url", "unparsable") from None
    if not host:
        raise Refused("bad_url", "no host")
    return scheme, host, port


# Cloud instance-metadata and platform endpoints: refused even inside an allow_networks range
# (an intranet image server is a reason to allow 10.0.0.0/8, never to reach these).
METADATA = frozenset(map(ipaddress.ip_address, (
    "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd20:ce::254",  # GCP metadata over IPv6
    "168.63.129.16",  # Azure WireServer (platform endpoint, a public-looking address)
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud (OCI)
)))
# Ranges that are not public although Python's `is_global` (which lags the IANA registries
# and differs between Python versions) lets them through.
NON_GLOBAL = {
    "site-local": [ipaddress.ip_network("fec0::/10")],  # deprecated, still routed in intranets
    "non-global": [ipaddress.ip_network(n) for n in (
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "3fff::/20",  # documentation (RFC 9637)
    )],
}
# Prefixes whose last 32 bits are the IPv4 address the packet reaches: NAT64's well-known prefix,
# NAT64's local-use prefix (RFC 8215, which gateways commonly use as /96), and the deprecated
# IPv4-compatible addresses (::a.b.c.d). Such an address is judged as that IPv4 address.
IPV4_CARRIERS = tuple(map(ipaddress.ip_network, ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")))
# Never exempt by allow_networks: deprecated site-local space (RFC 3879), where intranets still
# put resolvers and services, is no image host's address.
NEVER_ALLOWED = (ipaddress.ip_network("fec0::/10"),)


def _category(ip) -> str | None:
    """Why an address is not a public unicast address (None when it is one)."""
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    for name, networks in NON_GLOBAL.items():
        if any(ip.version == net.version and ip in net for net in networks):
            return name
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        return "non-global"
    return None


def _on_the_wire(ip):
    """The IPv4 address an IPv6 one reaches: IPv4-mapped (::ffff:a.b.c.d), NAT64 or
    IPv4-compatible (IPV4_CARRIERS); `::` and `::1` stay themselves."""
    if ip.version == 6:
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if int(ip) > 1 and any(ip in net for net in IPV4_CARRIERS):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _embedded_ipv4(ip) -> list:
    """IPv4 addresses an IPv6 address carries (6to4, Teredo): judged on their own too."""
    if ip.version != 6:
        return []
    found = [ip.sixtofour] + list(ip.teredo or ())
    return [a for a in found if a is not None]


def address_problem(address: str, allowed: tuple = ()) -> str | None:
    """None when we may connect to `address`; else the category that forbids it."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    ip = _on_the_wire(ip)
    for candidate in [ip] + _embedded_ipv4(ip):
        if candidate in METADATA:
            return "metadata"
        if any(candidate.version == net.version and candidate in net for net in NEVER_ALLOWED):
            return "site-local"
        if any(candidate.version == net.version and candidate in net for net in allowed):
            continue
        problem = _category(candidate)
        if problem:
            return problem
    return None


# getaddrinfo cannot be stopped: a lookup given up on keeps its thread until the system resolver
# answers (its own timeouts and retries: up to a minute). So the pool is wide (threads are made
# only when needed), and a name whose lookup is still running is not looked up again (PENDING):
# slow names hold one thread each, and lookups of quick names never queue behind them.
LOOKUP_THREADS = 512
_PENDING: dict = {}  # (host, port) -> the running lookup's future


def _resolver() -> ThreadPoolExecutor:
    """getaddrinfo has no timeout of its own: lookups run here so that a fetch can stop waiting."""
    return per_process.get("resolver threads", None, lambda: ThreadPoolExecutor(
        max_workers=LOOKUP_THREADS, thread_name_prefix="resolve"))


def _lookup(host: str, port: int):
    """A future of getaddrinfo's answer for (host, port), shared with a lookup still running."""
    key = (host, port)
    future = _PENDING.get(key)
    if future is None or future.done():
        future = _resolver().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM,
                                    proto=socket.IPPROTO_TCP)
        _PENDING[key] = future
        future.add_done_callback(lambda done: _PENDING.pop(key, None)
                                 if _PENDING.get(key) is done else None)
    return future


def _literal(host: str, port: int) -> list | None:
    """getaddrinfo's answer for a host that is an IP address in standard notation, without the
    resolver thread (a URL list of numeric hosts would pay a thread hand-off per URL); None for
    names and for other spellings ("2852039166", "0xA9FEA9FE"), which getaddrinfo reads."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port))]
    if ip.scope_id:  # a zone ("fe80::1%eth0") is a scope number only getaddrinfo knows
        return None
    return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port, 0, 0))]


def resolve_checked(host: str, port: int, allowed: tuple = (),
                    timeout: float | None = None) -> list[tuple]:
    """Every (family, sockaddr) the host resolves to, all of them checked, or Refused.

    One forbidden address refuses the whole host: a name that resolves to both a public and a
    private address is how DNS rebinding gets in. A lookup slower than `timeout` is refused.
    """
    infos = _literal(host, port)
    if infos is None:
        try:
            infos = _lookup(host, port).result(timeout)
        except FutureTimeout:
            raise Refused("timeout", "dns") from None
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise Refused("dns_error", type(exc).__name__) from None
    return _checked(infos, allowed)


def _checked(infos, allowed: tuple) -> list[tuple]:
    """The distinct (family, sockaddr) of getaddrinfo's answer, or Refused if any is forbidden."""
    targets = []
    for family, _, _, _, sockaddr in infos:
        problem = address_problem(sockaddr[0], allowed)
        if problem:
            raise Refused("blocked_address", problem)
        if (family, sockaddr) not in targets:
            targets.append((family, sockaddr))
    if not targets:
        raise Refused("dns_error", "no address")
    return targets


# The time.monotonic() moment the URL being fetched in this context must end by (engine.py).
URL_DEADLINE: contextvars.ContextVar = contextvars.ContextVar("url_deadline", default=None)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver hook with our rules: a connector built on it (with `socket_for` as its
    socket factory) connects only to addresses that passed `address_problem`, on every request,
    redirect hop and new pooled connection; a kept-alive connection was opened to one.

    Two gates, because aiohttp does not ask the resolver about hosts that are IP literals: the
    resolver checks every answer of a lookup (one forbidden address refuses the name: DNS
    rebinding), and `socket_for` checks the address of every socket just before it connects.
    A refusal raises Refused, which aiohttp passes through unwrapped."""

    def __init__(self, allowed: tuple = (), timeout: float | None = None,
                 socket_class=socket.socket):
        self.allowed = allowed
        self.timeout = timeout
        self.socket_class = socket_class

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET) -> list[dict]:
        infos = _literal(host, port)
        if infos is None:
            lookup = asyncio.wrap_future(_lookup(host, port))
            timeout = self.timeout
            if URL_DEADLINE.get() is not None:  # end just before the URL's own deadline, so
                # that a lookup that used up the URL's time is named for what it was
                left = URL_DEADLINE.get() - time.monotonic() - 0.02
                timeout = max(0.0, left if timeout is None else min(timeout, left))
            await asyncio.wait({lookup}, timeout=timeout)  # no cancel: others may share it
            if not lookup.done():
                raise Refused("timeout", "dns")
            try:
                infos = lookup.result()
            except (socket.gaierror, UnicodeError, OSError) as exc:
                raise Refused("dns_error", type(exc).__name__) from None
        return [{"hostname": host, "host": sockaddr[0], "port": sockaddr[1], "family": fam,
                 "proto": socket.IPPROTO_TCP, "flags": socket.AI_NUMERICHOST}
                for fam, sockaddr in _checked(infos, self.allowed)]

    async def close(self) -> None:
        pass

    def socket_for(self, addr_info) -> socket.socket:
        """A socket for `addr_info` (aiohttp's socket_factory), if we may connect there."""
        family, kind, proto, _, sockaddr = addr_info
        problem = address_problem(sockaddr[0], self.allowed)
        if problem:
            raise Refused("blocked_address", problem)
        return self.socket_class(family, kind, proto)


# Inputs read without an address check: object stores (through their own endpoints) and files.
STORE_SCHEMES = {"s3", "s3a", "gs", "gcs", "file"}
INPUT_DNS_TIMEOUT = 30.0


def check_input(path: str, allowed: tuple = ()) -> None:
    """Refuse (UserError), before anything connects, an input path that reaches a forbidden host.

    A crawl listing is as untrusted as a crawl: its entries must not make extract read cloud
    metadata or an intranet service. Local paths, s3:// and gs:// pass; an http(s) URL only when
    every address of its host passes the rules above (with `[download] allow_networks`); any
    other scheme (ftp://, fsspec chains such as simplecache::) never.
    """
    if "://" not in path or path.split("://", 1)[0].lower() in STORE_SCHEMES:
        return
    try:
        _, host, port = split_url(path)
        resolve_checked(host, port, allowed, INPUT_DNS_TIMEOUT)
    except Refused as exc:
        raise UserError(f"refusing input {path} ({exc}; inputs are local paths, s3:// or gs://, "
                        "or http(s) on public addresses and [download] allow_networks)") from None


def check_inputs(paths, allowed: tuple = ()) -> None:
    """check_input on each path, one DNS lookup per scheme://host:port (a listing of 90,000
    entries on one host is one check)."""
    checked = set()
    for path in paths:
        origin = "/".join(path.split("/", 3)[:3]) if "://" in path else ""
        if origin not in checked:
            check_input(path, allowed)
            checked.add(origin)
