"""hosts.HostSlots: at most `connections_per_host` per host, fewer to a host that drops
connections (halved on a slow connect, one more per `limit` quick ones), other hosts never held
up, a wait bounded by the URL's deadline, and of idle hosts only the newest limits."""

import threading
import time
from contextlib import ExitStack

import pytest

from wit_builder.download.deadline import Deadline
from wit_builder.download.hosts import FLOOR, HostSlots
from wit_builder.download.safety import Refused


def test_a_host_gets_limit_slots_and_other_hosts_are_not_held_up():
    slots = HostSlots()
    lock, state = threading.Lock(), {"open": 0, "most": 0}

    def busy(host):
        with slots.slot(host, 2, Deadline(10)):
            if host == "a.example":
                with lock:
                    state["open"] += 1
                    state["most"] = max(state["most"], state["open"])
                time.sleep(0.1)
                with lock:
                    state["open"] -= 1

    threads = [threading.Thread(target=busy, args=("a.example",)) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    started = time.monotonic()
    busy("b.example")  # while a.example's slots are taken
    assert time.monotonic() - started < 0.05
    for t in threads:
        t.join()
    assert state["most"] == 2
    assert slots._hosts == {}  # every host forgotten once its connections closed


def test_the_wait_for_a_slot_ends_with_the_deadline():
    slots = HostSlots()
    with slots.slot("a.example", 1, Deadline(10)):
        started = time.monotonic()
        with pytest.raises(Refused) as refused:
            with slots.slot("a.example", 1, Deadline(0.2)):
                pass
        assert str(refused.value) == "timeout: host_busy"
        assert 0.15 < time.monotonic() - started < 2
    with slots.slot("a.example", 1, Deadline(1)):  # free again
        pass
    assert slots._hosts == {}


def test_dropped_connects_halve_the_hosts_share_and_quick_ones_win_it_back():
    slots = HostSlots()
    with ExitStack() as held:
        for _ in range(8):
            held.enter_context(slots.slot("a.example", 0, Deadline(5)))
        for _ in range(20):
            slots.connected("a.example", 0.01)  # quick: a healthy host is never limited
        assert slots.limit("a.example") == 0
        slots.connected("a.example", 1.2)  # a SYN resent after a second
        assert slots.limit("a.example") == 4
        slots.connected("a.example", float("inf"))  # the same burst: no second halving
        assert slots.limit("a.example") == 4
        for _ in range(4):
            slots.connected("a.example", 0.01)
        assert slots.limit("a.example") == 4  # not within the second of the last change
        slots._hosts["a.example"].changed_at -= 1.0
        slots.connected("a.example", 0.01)
        assert slots.limit("a.example") == 5
        assert slots.limit("b.example") == 0 and slots.limit("a.example", ceiling=3) == 3
        with pytest.raises(Refused):  # 8 open, 5 allowed: a ninth waits, here past its deadline
            with slots.slot("a.example", 0, Deadline(0.05)):
                pass
    assert slots.limit("a.example") == 5  # idle, but its limit is remembered


def test_idle_hosts_are_forgotten_but_the_newest_limited_ones(monkeypatch):
    from wit_builder.download import hosts

    monkeypatch.setattr(hosts, "REMEMBERED", 3)
    slots = HostSlots()
    for i in range(5):
        with slots.slot(f"dropping{i}.example", 0, Deadline(5)):
            slots.connected(f"dropping{i}.example", 3.0)
        with slots.slot(f"healthy{i}.example", 0, Deadline(5)):
            slots.connected(f"healthy{i}.example", 0.01)
    assert list(slots._hosts) == ["dropping2.example", "dropping3.example", "dropping4.example"]
    assert [slots.limit(f"dropping{i}.example") for i in range(5)] == [0, 0, FLOOR, FLOOR, FLOOR]


def test_the_share_never_falls_below_the_floor(monkeypatch):
    slots = HostSlots()
    with slots.slot("a.example", 0, Deadline(5)):
        for _ in range(3):
            slots.connected("a.example", 2.0)
            monkeypatch.setattr(slots._hosts["a.example"], "changed_at", float("-inf"))
        assert slots.limit("a.example") == FLOOR
