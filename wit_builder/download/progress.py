"""A progress line for the download stage while Spark runs the shards.

img2dataset writes NNNNN_stats.json when a shard finishes; a driver thread reads the new ones
every `interval` seconds and prints: shards done/total, images/s, success rate, the top error
reasons so far and an ETA. Reading only files is what makes it work on a cluster too (the
shards land in the output folder, local or s3://), and nothing here can fail the stage: a
file that does not parse yet (being written) is read on a later tick.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from wit_builder import storage
from wit_builder.progress import ProgressLine, duration


class Progress(ProgressLine):
    def __init__(self, out_dir: str, total_shards: int, interval: float, log=None):
        super().__init__(interval, log)
        self.out_dir, self.total = out_dir, total_shards
        self.seen: dict[str, dict] = {}

    def __enter__(self) -> "Progress":
        self.already = len(self._read_new())  # finished before this run: not in the rate
        self.seen_before = dict(self.seen)
        return super().__enter__()

    def _read_new(self) -> dict[str, dict]:
        fs, p = storage.filesystem(self.out_dir)
        try:
            names = fs.glob(p.rstrip("/") + "/*_stats.json")
        except OSError:
            return self.seen
        for name in names:
            if name in self.seen:
                continue
            try:
                with fs.open(name, "rb") as f:
                    self.seen[name] = json.loads(f.read())
            except (OSError, ValueError):
                pass  # half-written: read it next time
        return self.seen

    def line(self) -> str:
        """New shards' stats read, then `download: 12/40 shards, 1,234 images/s, 87.5% ok, top errors: ..., ETA 3m10s`."""
        self._read_new()
        new = [s for name, s in self.seen.items() if name not in self.seen_before]
        done = len(self.seen)
        count = sum(s.get("count", 0) for s in new)
        ok = sum(s.get("successes", 0) for s in new)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        errors: Counter = Counter()
        for s in new:
            for message, n in (s.get("status_dict") or {}).items():
                if message != "success":
                    errors[message.split(":", 1)[0]] += n
        parts = [f"download: {done}/{self.total} shards", f"{count / elapsed:,.0f} images/s"]
        if count:
            parts.append(f"{100 * ok / count:.1f}% ok")
        if errors:
            parts.append("top errors: " + ", ".join(f"{k} {v:,}" for k, v in errors.most_common(3)))
        shards_new = done - self.already
        if 0 < shards_new and done < self.total:
            parts.append(f"ETA {duration(elapsed / shards_new * (self.total - done))}")
        return ", ".join(parts)


