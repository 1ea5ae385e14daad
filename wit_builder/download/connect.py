"""TCP connects that do not stall for a second when a busy server drops a SYN.

A server whose accept queue is full drops new SYNs without a word, and the kernel resends one
only after its initial retransmission timeout: 1 s, then 3 s and 7 s after the first. That
timeout is long because a new connection knows nothing about the path. On a list served by a
few hosts (one CDN name, a mirror on the LAN) a download meets this hundreds of times per
10,000 URLs; each time one thread stands still for a second, and at the end of a shard the
whole shard waits for it.

This process does know the path when it has connected to the same address and port shortly
before. So a connect there gives up after max(4 x the smoothed time of those connects, 200 ms)
(Linux's minimum retransmission timeout) and tries again at once, doubling that wait each time
as TCP's own backoff does, until the wait would reach the kernel's second: from there on the
kernel's retransmissions are as fast, and the connect runs to its full timeout. An address met
for the first time, or one whose connects are slow anyway, connects as before. A thread has one
SYN in flight at a time: the abandoned socket is closed before the next attempt.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict

MIN_WAIT = 0.2  # Linux's TCP_RTO_MIN
KERNEL_WAIT = 1.0  # Linux's initial SYN retransmission timeout (TCP_TIMEOUT_INIT)


class ConnectTimes:
    """The smoothed connect time of the addresses this process connected to last (RFC 6298's
    SRTT, gain 1/8), at most `max_addresses` of them."""

    def __init__(self, max_addresses: int = 4096):
        self.max_addresses = max_addresses
        self._seconds: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_wait(self, address: tuple) -> float | None:
        """How long the first SYN to `address` may go unanswered before another is sent, or
        None to leave the retransmissions to the kernel."""
        with self._lock:
            seconds = self._seconds.get(address)
        if seconds is None:
            return None
        wait = max(MIN_WAIT, 4 * seconds)
        return wait if wait < KERNEL_WAIT else None

    def record(self, address: tuple, seconds: float) -> None:
        with self._lock:
            old = self._seconds.pop(address, None)
            self._seconds[address] = seconds if old is None else old + (seconds - old) / 8
            if len(self._seconds) > self.max_addresses:
                self._seconds.popitem(last=False)


CONNECT_TIMES = ConnectTimes()


def connect(address: tuple, timeout: float, source_address=None) -> socket.socket:
    """A socket connected to `address` (ip, port) within `timeout` seconds, its timeout set to
    `timeout`; raises what socket.create_connection raises."""
    started = time.monotonic()
    wait = CONNECT_TIMES.first_wait(address)
    while True:
        left = timeout - (time.monotonic() - started)
        quick = wait is not None and wait < KERNEL_WAIT and wait < left
        attempt = time.monotonic()
        try:
            sock = socket.create_connection(address, wait if quick else max(0.001, left),
                                            source_address)
        except TimeoutError:  # on a quick attempt: the SYN (or its answer) was most likely dropped
            if not quick:
                raise
            wait *= 2
            continue
        CONNECT_TIMES.record(address, time.monotonic() - attempt)
        sock.settimeout(timeout)
        return sock
