"""A real HTTP server on 127.0.0.1 for download tests: folders plus special routes.

    server = ImageServer({"/flickr/": folder, "/gen/": other_folder})
    server.route("/gone", status=410)                          # fixed answer
    server.route("/to-metadata", status=302, headers={"Location": "http://169.254.169.254/"})
    server.route("/flaky", handler=lambda n: (503, {}, b"") if n == 1 else (200, {...}, data))
    server.route("/slow", raw=lambda wfile: ...)               # write the raw response yourself
    server.start(); server.url("/flickr/x.jpg"); server.hits("/flickr/x.jpg"); server.stop()

Files under a mounted folder are served with their content type; anything else is a 404. A
route's `handler(n)` gets how many times the route was requested (1 for the first request) and
returns (status, headers, body). Every request path is counted, so a test can prove what was
(not) fetched.
"""

from __future__ import annotations

import mimetypes
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that hangs up early (size bound, timeout) is expected here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ImageServer:
    def __init__(self, mounts: dict[str, Path] | None = None):
        self.mounts = {prefix: Path(folder) for prefix, folder in (mounts or {}).items()}
        self.routes: dict = {}
        self.raw_routes: set = set()
        self.requests: Counter = Counter()
        self.user_agents: set = set()
        self._lock = threading.Lock()
        self._server = None

    def route(self, path: str, status: int = 200, headers: dict | None = None, body: bytes = b"",
              handler=None, raw=None) -> str:
        """Answer `path` with a fixed response, `handler(n)` or `raw(wfile)` (status line,
        headers and body written by the route, e.g. one byte at a time); returns its URL."""
        self.routes[path] = raw or handler or (lambda _n: (status, headers or {}, body))
        if raw:
            self.raw_routes.add(path)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return self.requests[path]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "ImageServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests[path] += 1
                    n = server.requests[path]
                    server.user_agents.add(self.headers.get("User-Agent", ""))
                if path in server.raw_routes:
                    try:
                        server.routes[path](self.wfile)
                    except OSError:  # the client gave up (its deadline): expected
                        pass
                    self.close_connection = True
                    return
                status, headers, body = server._answer(path, n)
                self.send_response(status)
                for name, value in headers.items():
                    if value is not None:  # None: leave the header out (e.g. Content-Length)
                        self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, n: int):
        if path in self.routes:
            return self.routes[path](n)
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix):
                file = (folder / path[len(prefix):]).resolve()
                if file.is_file() and file.is_relative_to(folder.resolve()):
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    return 200, {"Content-Type": kind}, file.read_bytes()
        return 404, {"Content-Type": "text/plain"}, b"not found"
