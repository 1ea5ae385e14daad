"""A progress line for a stage's Spark work: tasks done of the running Spark stages.

Extract runs one task per input file and finalize one per shard, so "tasks done/total" is
"files (or shards) done/total". Spark's console bar says the same for one stage at a time and
disappears in logs; this line goes to stderr every `interval` seconds with the elapsed time and
an ETA, so a long run shows steady progress in a log file too.
"""

from __future__ import annotations

import sys
import threading
import time


class SparkProgress:
    def __init__(self, spark, label: str, interval: float, log=None):
        self.tracker = spark.sparkContext.statusTracker()
        self.label, self.interval = label, interval
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)

    def __enter__(self) -> "SparkProgress":
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
        """`extract: 12/40 tasks, 2m05s, ETA 4m10s` (None while no Spark stage runs)."""
        infos = [self.tracker.getStageInfo(s) for s in self.tracker.getActiveStageIds()]
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
