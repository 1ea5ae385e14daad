"""What a process builds once and then reuses: models, matchers, query lists, thread pools.

Spark runs many tasks in one Python worker, and a local download forks its task processes; a
fastText model, a CLIP checkpoint or an automaton of 500k query entries must be built once per
process, not per task or batch. `get` is the one place that keeps them: by kind and key, at most
`keep` of a kind (an automaton is hundreds of MB: one list at a time), and by process id, so a
forked child builds its own (a thread pool's threads do not survive a fork).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

_OBJECTS: dict[str, OrderedDict] = {}
_LOCK = threading.RLock()  # re-entrant: a build may get another kind (a matcher loads its list)


def get(kind: str, key: Hashable, build: Callable[[], Any], keep: int | None = None) -> Any:
    """This process's object of `kind` for `key`, built by `build()` on first use (a build that
    raises keeps nothing). `keep`: how many objects of the kind stay; the least recently used
    goes before the next is built, so two are never held at once with `keep=1`."""
    slot = (os.getpid(), key)
    with _LOCK:
        kept = _OBJECTS.setdefault(kind, OrderedDict())
        if slot in kept:
            kept.move_to_end(slot)
            return kept[slot]
        while keep is not None and len(kept) >= keep:
            kept.popitem(last=False)
        kept[slot] = value = build()
        return value


def forget(kind: str) -> None:
    """Drop every object of `kind` (tests that need a fresh one)."""
    with _LOCK:
        _OBJECTS.pop(kind, None)
