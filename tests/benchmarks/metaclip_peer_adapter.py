"""Adapter for ../shared/tools/peer_metaclip_match.py --candidate MODULE:FUNC.

    PYTHONPATH=. python ../shared/tools/peer_metaclip_match.py --shared ../shared --texts 500000 \
        --candidate tests.benchmarks.metaclip_peer_adapter:match

`match(texts, entries)` builds our Matcher (the tool times it with the matching) and matches the
texts in Spark-sized Arrow batches (10k rows), returning one sorted id list per text (read from
the list column's offsets and values, not element by element). The stage itself keeps the ids
as an Arrow list column; only this conversion builds Python lists, 500k of them, with the cycle
collector paused: they hold only ints, and each collection their allocations trigger would walk
the caller's own half-million result lists (0.3-0.5 s of collections, measured).
"""

from __future__ import annotations

import gc

import pyarrow as pa

from wit_builder.match.matcher import Matcher

BATCH = 10_000  # Spark's Arrow batch size ([spark] arrow_batch_rows)


def match(texts: list[str], entries: list[str]) -> list[list[int]]:
    matcher = Matcher(entries)
    out: list[list[int]] = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        for i in range(0, len(texts), BATCH):
            ids = matcher.match(pa.array(texts[i:i + BATCH], pa.string()))
            values = ids.values.to_numpy().tolist()
            bounds = ids.offsets.to_numpy().tolist()
            out.extend(values[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
    finally:
        if collecting:
            gc.enable()
    return out
