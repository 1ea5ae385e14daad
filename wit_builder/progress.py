"""Progress lines for long work: a thread that prints `line()` to stderr every `interval`
seconds, so a long run shows steady progress in a log file too (Spark's console bar shows one
Spark stage at a time and disappears in logs).

`SparkProgress`: tasks done of the running Spark stages. Extract runs one task per input file
and finalize one per shard, so "tasks done/total" is "files (or shards) done/total".
download/progress.py reads the shards' own stats instead.
"""

from __future__ import annotations

import sys
import threading
import time


class ProgressLine:
    """Prints `self.line()` (unless None) every `interval` seconds while the `with` block runs;
    `interval` 0 prints nothing."""

    def __init__(self, interval: float, log=None):
        self.interval = interval
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self):
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.line()
            if line:
                self.log(line)

    def line(self) -> str | None:
        raise NotImplementedError


class SparkProgress(ProgressLine):
    def __init__(self, spark, label: str, interval: float, log=None):
        super().__init__(interval, log)
        self.spark = spark
        self.label = label

    def line(self) -> str | None:
        """`extract: 12/40 tasks, 2m05s, ETA 4m10s` (None while no Spark stage runs)."""
        if not getattr(self.spark, "started", True):  # a LazySession no stage needed yet
            return None
        tracker = self.spark.sparkContext.statusTracker()
        infos = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
        infos = [i for i in infos if i is not None and i.numTasks]
        if not infos:
            return None
        done = sum(i.numCompletedTasks for i in infos)
        total = sum(i.numTasks for i in infos)
        elapsed = time.monotonic() - self.started
        line = f"{self.label}: {done}/{total} tasks, {duration(elapsed)}"
        if 0 < done < total:
            line += f", ETA {duration(elapsed / done * (total - done))}"
        return line


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
