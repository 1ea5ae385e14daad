"""fetch.HostSlots: at most `limit` connections per host, other hosts never held up, a wait
bounded by the URL's deadline, and nothing remembered of hosts no longer connected to."""

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from in_flight import InFlight  # noqa: E402
from wit_builder.download.deadline import Deadline  # noqa: E402
from wit_builder.download.fetch import HostSlots  # noqa: E402
from wit_builder.download.safety import Refused  # noqa: E402


def test_a_host_gets_limit_slots_and_other_hosts_are_not_held_up():
    slots = HostSlots()
    held = InFlight()

    def busy(host):
        with slots.slot(host, 2, Deadline(10)):
            if host == "a.example":
                with held:
                    time.sleep(0.1)

    threads = [threading.Thread(target=busy, args=("a.example",)) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    started = time.monotonic()
    busy("b.example")  # while a.example's slots are taken
    assert time.monotonic() - started < 0.05
    for t in threads:
        t.join()
    assert held.most == 2
    assert slots._open == {}  # every host forgotten once its connections closed


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


def test_no_limit_never_waits():
    slots = HostSlots()
    with slots.slot("a.example", 0, Deadline(1)), slots.slot("a.example", 0, Deadline(1)):
        assert slots._open == {}
