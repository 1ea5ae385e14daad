"""Several loopback "hosts" (127.0.0.1, 127.0.0.2, ...) on one port, each a small site that
counts what a crawler does to it: connections open at once, when each request started, and
what it answered. For the politeness tests of the download engine.

Each host serves `/photo.jpg?i=N` (one real photo, after `delay` seconds; with `&kind=trickle` one
byte every 0.2 s forever, with `&kind=reset` a connection reset instead), `/robots.txt` (the
host's `robots` text, or 404), `redirects` (path -> Location, a 302), and answers the first `busy` requests with 429 and
`Retry-After: retry_after`.
"""

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Site:
    def __init__(self, photo: bytes, delay: float = 0.0, robots: str | None = None,
                 busy: int = 0, retry_after: int = 1, redirects: dict | None = None):
        self.photo, self.delay, self.robots = photo, delay, robots
        self.redirects = redirects or {}  # path -> Location
        self.busy, self.retry_after = busy, retry_after
        self.open = self.most_open = 0
        self.starts: list[float] = []  # monotonic start of each photo request
        self.answers: list[int] = []
        self.lock = threading.Lock()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def process_request_thread(self, request, client_address):
        site = self.site
        with site.lock:
            site.open += 1
            site.most_open = max(site.most_open, site.open)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with site.lock:
                site.open -= 1

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as web servers

    def do_GET(self):  # noqa: N802 - http.server's naming
        site = self.server.site
        if self.path == "/robots.txt":
            self._send(200 if site.robots is not None else 404,
                       (site.robots or "").encode(), "text/plain")
            return
        if self.path in site.redirects:
            self._send(302, b"", "text/plain", {"Location": site.redirects[self.path]})
            return
        with site.lock:
            site.starts.append(time.monotonic())
            busy = len(site.starts) <= site.busy
        if busy:
            self._send(429, b"slow down", "text/plain", {"Retry-After": str(site.retry_after)})
            return
        if "kind=reset" in self.path:  # RST instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if "kind=trickle" in self.path:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                             b"Content-Length: 100000\r\n\r\n")
            for _ in range(100000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        time.sleep(site.delay)
        self._send(200, site.photo, "image/jpeg")

    def _send(self, status, body, kind, headers=None):
        with self.server.site.lock:
            self.server.site.answers.append(status)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class PoliteServer:
    """`sites[i]` served on 127.0.0.{i+1}:port."""

    def __init__(self, sites: list[Site]):
        self.sites = sites
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._servers = []
        for i, site in enumerate(sites):
            server = _Server((f"127.0.0.{i + 1}", self.port), _Handler)
            server.site = site
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)

    def urls(self, site: int, n: int) -> list[str]:
        return [f"http://127.0.0.{site + 1}:{self.port}/photo.jpg?i={i}" for i in range(n)]

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
