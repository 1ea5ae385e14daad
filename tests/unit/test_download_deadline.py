"""The fetch watchdog: each deadline is cut on time, whatever order the fetches register in."""

import socket
import time

from wit_builder.download.deadline import Deadline, Watchdog


def _watched(watchdog, seconds):
    deadline = Deadline(seconds)
    a, b = socket.socketpair()
    deadline.guard(a)
    watchdog.watch(deadline)
    return deadline, a, b


def test_deadlines_expire_on_time_in_any_order():
    watchdog = Watchdog()
    late, *late_socks = _watched(watchdog, 0.6)
    early, *early_socks = _watched(watchdog, 0.2)  # earlier than the one it sleeps for
    later, *later_socks = _watched(watchdog, 0.9)  # later: the thread is not woken for it
    time.sleep(0.4)
    assert early.expired and not late.expired and not later.expired
    assert early_socks[0].recv(1) == b""  # cut: the blocked read returns at once
    time.sleep(0.8)
    assert late.expired and later.expired
    for deadline, socks in ((early, early_socks), (late, late_socks), (later, later_socks)):
        deadline.release()
        for sock in socks:
            sock.close()


def test_a_deadline_after_an_idle_spell_is_kept():
    watchdog = Watchdog()
    first, *socks = _watched(watchdog, 0.1)
    time.sleep(0.3)  # the heap is empty again: the thread waits without a timeout
    second, *more = _watched(watchdog, 0.1)
    time.sleep(0.3)
    assert first.expired and second.expired
    for sock in socks + more:
        sock.close()
