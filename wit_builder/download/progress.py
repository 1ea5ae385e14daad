"""A progress line for the download stage while Spark runs the shards.

Each finished shard leaves NNNNN_stats.json; each running shard (or piece of one) rewrites its
counts so far into `_tmp/progress/ID-START.json` every few seconds (engine.py), and a finished
part of a split shard waits in `_tmp/parts/K/` for the driver to join it. A driver thread reads both every
`interval` seconds and prints: shards done/total, images/s, success rate, the top error reasons
so far and an ETA, from the first interval on (not only once a shard has finished). Reading
only files is what makes it work on a cluster too (the shards land in the output folder, local
or s3://), and nothing here can fail the stage: a file that does not parse yet (being written)
is read on a later tick.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from wit_builder import storage
from wit_builder.progress import ProgressLine, duration


class Progress(ProgressLine):
    def __init__(self, out_dir: str, total_shards: int, total_images: int, interval: float,
                 log=None):
        super().__init__(interval, log)
        self.out_dir, self.total, self.total_images = out_dir, total_shards, total_images
        self.seen: dict[str, dict] = {}

    def __enter__(self) -> "Progress":
        self.already = len(self._read_new())  # finished before this run: not in the rate
        self.seen_before = dict(self.seen)
        return super().__enter__()

    def _read(self, pattern: str, cache: dict | None) -> dict[str, dict]:
        """name -> parsed JSON of the files matching `pattern` (those in `cache` not re-read)."""
        fs, p = storage.filesystem(self.out_dir)
        found = {} if cache is None else cache
        try:
            names = fs.glob(p.rstrip("/") + "/" + pattern)
        except OSError:
            return found
        for name in names:
            if name in found:
                continue
            try:
                with fs.open(name, "rb") as f:
                    found[name] = json.loads(f.read())
            except (OSError, ValueError):
                pass  # half-written, or a running shard's file just replaced: next time
        return found

    def _read_new(self) -> dict[str, dict]:
        return self._read("*_stats.json", self.seen)

    def line(self) -> str:
        """`download: 2/40 shards, 1,234 images/s, 87.5% ok, top errors: ..., ETA 3m10s`."""
        self._read_new()
        new = [s for name, s in self.seen.items() if name not in self.seen_before]
        running = [*self._read("_tmp/progress/*.json", None).values(),
                   *self._read("_tmp/parts/*/*_stats.json", None).values()]
        done = len(self.seen)
        count = sum(s.get("count", 0) for s in new + running)
        ok = sum(s.get("successes", 0) for s in new + running)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        errors: Counter = Counter()
        for s in new + running:  # a running piece's "errors", a finished one's "status_dict"
            for message, n in (s.get("status_dict") or s.get("errors") or {}).items():
                if message != "success":
                    errors[message.split(":", 1)[0]] += n
        parts = [f"download: {done}/{self.total} shards", f"{count / elapsed:,.0f} images/s"]
        if count:
            parts.append(f"{100 * ok / count:.1f}% ok")
        if errors:
            parts.append("top errors: " + ", ".join(f"{k} {v:,}" for k, v in errors.most_common(3)))
        before = sum(s.get("count", 0) for s in self.seen_before.values())
        left = self.total_images - before - count  # URLs this run has still to fetch
        if count and left > 0:
            parts.append(f"ETA {duration(elapsed / count * left)}")
        return ", ".join(parts)
