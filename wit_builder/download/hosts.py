"""How many connections this download process keeps open to each host: at most
`connections_per_host` when that is set, and fewer to a host that drops connections.

A server whose listen queue is full drops the SYN of a new connection, and the client's kernel
sends it again only after a second (then 3 s, 7 s, ...): that thread waits, and at the end of a
shard the whole shard waits for it. img2dataset keeps opening as many connections as it has
threads. Here a connect that takes DROPPED_SYN seconds or more, or times out, halves what the
host may have open (never below FLOOR), and `limit` quick connects give it one more; either
change at most once per DROPPED_SYN seconds: additive increase, multiplicative decrease, as TCP
does with its window. A host with quick connects is never limited, however slow its answers, unless
`connections_per_host` says so. A host with no connection open and no thread waiting is
forgotten, unless it earned a limit: the last REMEMBERED of those are kept, so memory stays
bounded however many hosts a long job meets.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from wit_builder.download.deadline import Deadline
from wit_builder.download.safety import Refused

DROPPED_SYN = 1.0  # Linux resends an unanswered SYN after 1 s (TCP_TIMEOUT_INIT)
FLOOR = 2
REMEMBERED = 10_000  # idle hosts whose limit is kept


@dataclass
class _Host:
    open: int = 0
    waiting: int = 0
    limit: int = 0  # learned from dropped connections; 0: none
    quick: int = 0  # quick connects since the limit last changed
    changed_at: float = float("-inf")


class HostSlots:
    """The connections of one process, per host (see the module's docstring)."""

    def __init__(self):
        self._hosts: dict[str, _Host] = {}
        self._changed = threading.Condition()

    def limit(self, host: str, ceiling: int = 0) -> int:
        """What `host` may have open now (0: no limit)."""
        with self._changed:
            state = self._hosts.get(host)
            return _smaller(ceiling, state.limit if state else 0)

    @contextmanager
    def slot(self, host: str, ceiling: int, deadline: Deadline):
        """Hold one of `host`'s connections for the block, waiting for one within `deadline`."""
        with self._changed:
            state = self._hosts.setdefault(host, _Host())
            state.waiting += 1
            try:
                free = self._changed.wait_for(
                    lambda: not _smaller(ceiling, state.limit) or
                    state.open < _smaller(ceiling, state.limit),
                    timeout=max(0.0, deadline.left()))
            finally:
                state.waiting -= 1
            if not free:
                self._forget_if_idle(host, state)
                raise Refused("timeout", "host_busy")
            state.open += 1
        try:
            yield
        finally:
            with self._changed:
                state.open -= 1
                self._forget_if_idle(host, state)
                self._changed.notify_all()

    def connected(self, host: str, seconds: float) -> None:
        """A connect to `host` took `seconds` (inf: it timed out)."""
        with self._changed:
            state = self._hosts.get(host)
            if state is None:
                return
            now = time.monotonic()
            settled = now - state.changed_at >= DROPPED_SYN  # a burst of drops halves once
            if seconds >= DROPPED_SYN:
                if settled:
                    window = _smaller(state.limit, state.open) or state.open
                    state.limit, state.quick, state.changed_at = max(FLOOR, window // 2), 0, now
            elif state.limit:
                state.quick += 1
                if state.quick >= state.limit and settled:
                    state.limit, state.quick, state.changed_at = state.limit + 1, 0, now
                    self._changed.notify_all()

    def _forget_if_idle(self, host: str, state: _Host) -> None:
        if state.open or state.waiting:
            return
        del self._hosts[host]
        if not state.limit:
            return
        self._hosts[host] = state  # the newest idle host with a limit
        if len(self._hosts) > REMEMBERED:
            oldest = next((h for h, s in self._hosts.items() if not s.open and not s.waiting), None)
            if oldest is not None:
                del self._hosts[oldest]


def _smaller(a: int, b: int) -> int:
    """The smaller of two limits, 0 meaning none."""
    return min(a, b) if a and b else a or b


HOSTS = HostSlots()
