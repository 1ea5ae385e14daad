"""Connects to a loopback listener whose accept queue is full: the kernel drops our SYNs.

The queue of `listen(0)` holds one connection; filling it makes the kernel drop every further
SYN to the port, as a busy server's overflowing queue does. Everything stays on 127.0.0.1.
"""

import socket
import threading
import time

import pytest

from wit_builder.download.connect import KERNEL_WAIT, MIN_WAIT, ConnectTimes, connect


@pytest.fixture
def attempts(monkeypatch):
    """The connect attempts made (each one a SYN, and its resends by the kernel)."""
    made = []
    real = socket.create_connection

    def record(address, timeout=None, *args):
        assert address[0] == "127.0.0.1"
        made.append(timeout)
        return real(address, timeout, *args)

    monkeypatch.setattr(socket, "create_connection", record)
    return made


def _full_listener(drain_after: float | None):
    """A listening socket whose queue is full; after `drain_after` seconds (None: never) a
    thread accepts everything that comes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(server.getsockname())
        fillers.append(s)
    time.sleep(0.1)
    stop = threading.Event()

    def drain():
        if stop.wait(drain_after):
            return
        server.settimeout(0.05)
        accepted = []
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                pass
        for s in accepted:
            s.close()

    thread = threading.Thread(target=drain, daemon=True)
    if drain_after is not None:
        thread.start()

    def close():
        stop.set()
        if drain_after is not None:
            thread.join()
        for s in fillers:
            s.close()
        server.close()
    return server.getsockname(), close


def _timed_connect(address, timeout):
    started = time.monotonic()
    sock = connect(address, timeout)
    took = time.monotonic() - started
    assert sock.gettimeout() == timeout
    sock.close()
    return took


def test_a_known_fast_address_is_asked_again_before_the_kernel_would(connect_times, attempts):
    address, close = _full_listener(drain_after=0.3)
    try:
        connect_times.record(address, 0.001)  # connects there took a millisecond so far
        took = _timed_connect(address, timeout=5.0)
    finally:
        close()
    # First SYN dropped, given up after 0.2 s; the second one (at 0.2 s, dropped) after 0.4 s
    # more; the third, sent at 0.6 s, finds the queue drained. The kernel alone resends at 1 s.
    assert took < KERNEL_WAIT
    assert attempts[:2] == [MIN_WAIT, 2 * MIN_WAIT] and len(attempts) >= 3


def test_an_address_met_first_waits_for_the_kernel(connect_times, attempts):
    address, close = _full_listener(drain_after=0.3)
    try:
        took = _timed_connect(address, timeout=5.0)
    finally:
        close()
    assert took >= KERNEL_WAIT * 0.9  # the kernel's own resend after its initial 1 s
    assert attempts == [pytest.approx(5.0, abs=0.01)]  # one attempt: all of the timeout
    assert connect_times.first_wait(address) is None  # a 1 s connect: no quick retries there


def test_quick_attempts_stop_at_the_timeout(connect_times, attempts):
    address, close = _full_listener(drain_after=None)  # every SYN dropped
    try:
        connect_times.record(address, 0.001)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(address, timeout=1.0)
        took = time.monotonic() - started
    finally:
        close()
    assert 1.0 * 0.9 <= took < 1.5
    assert attempts[:2] == [MIN_WAIT, 2 * MIN_WAIT]  # then what is left of the second
    assert sum(attempts) == pytest.approx(1.0, abs=0.05)


def test_connect_times_are_smoothed_and_bounded():
    times = ConnectTimes(max_addresses=3)
    times.record(("127.0.0.1", 1), 0.01)
    assert times.first_wait(("127.0.0.1", 1)) == MIN_WAIT
    times.record(("127.0.0.1", 1), 0.81)  # one slow connect moves the estimate by an eighth
    assert times.first_wait(("127.0.0.1", 1)) == pytest.approx(4 * 0.11)
    times.record(("127.0.0.1", 2), 0.3)  # 4 x 0.3 s is past the kernel's own second
    assert times.first_wait(("127.0.0.1", 2)) is None
    for port in (3, 4, 5):
        times.record(("127.0.0.1", port), 0.01)
    assert times.first_wait(("127.0.0.1", 1)) is None  # the oldest ones were forgotten
    assert times.first_wait(("127.0.0.1", 5)) == MIN_WAIT
