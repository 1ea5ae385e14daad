"""A hard deadline for one image fetch, whatever the server does.

Socket timeouts bound each `recv`, not a fetch: a server that sends one byte a second (in the
TLS handshake, the headers or the body) keeps every read short and the fetch alive forever. So
each fetch registers its sockets with one watchdog thread per process, which shuts them down
when the fetch's deadline passes; the blocked read then returns or fails at once, and the fetch
reports `timeout: total`. The watchdog holds a `dup()` of each socket: shutdown acts on the
socket itself, so it also reaches the SSL socket that later wraps the same descriptor.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class Deadline:
    """The moment a fetch must end, and the sockets to cut when it passes."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._guards: list[socket.socket] = []
        self._lock = threading.Lock()

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.left() <= 0

    def guard(self, sock: socket.socket) -> None:
        """Cut `sock` when the deadline passes (at once if it already has)."""
        with self._lock:
            self._guards.append(sock.dup())
        if self.passed():
            self.expire()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for guard in self._guards:
                try:
                    guard.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed by the peer or by us
                    pass

    def release(self) -> None:
        with self._lock:
            for guard in self._guards:
                guard.close()
            self._guards.clear()


class Watchdog:
    """One daemon thread that expires deadlines in time order."""

    def __init__(self):
        self._heap: list = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog",
                                                daemon=True)
                self._thread.start()
            # Only a new earliest deadline changes how long the thread sleeps; fetches mostly
            # share one total_timeout, so waking it for every fetch would cost a thread switch
            # (and the GIL) per image for nothing.
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
            deadline.expire()


WATCHDOG = Watchdog()
