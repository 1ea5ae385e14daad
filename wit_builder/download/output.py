"""A shard's output in the executor: its rows in (or a piece of them), and its files out, as
img2dataset writes a shard: the tar and Parquet (writer.py, the caption stored as `text`), its
sample keys, then `_stats.json` once every row is recorded; and the running counts the driver's
progress line reads (progress.py)."""

from __future__ import annotations

import collections
import hashlib
import math
import time

import pyarrow as pa

from wit_builder import storage
from wit_builder.download.writer import SampleWriter, write_stats

PROGRESS_SECONDS = 2.0  # how often a running shard reports its counts to the driver


class ShardOutput:
    """One shard's rows in (or a piece of them), and its files out: the tar and Parquet
    (writer.py), then `_stats.json` once every row is recorded; the running counts for the
    progress line."""

    def __init__(self, section, out_dir: str, column_list: list, piece):
        self.column_list, self.piece = column_list, piece
        self.start_time = time.time()
        with storage.open_file(piece.feather, "rb") as f:
            table = pa.ipc.open_file(f).read_all()
        columns = table.slice(piece.start, piece.stop - piece.start).select(column_list).to_pydict()
        self.rows = list(zip(*(columns[c] for c in column_list)))
        self.urls = columns["url"]
        self.captions = columns["caption"]
        self.left = len(self.rows)  # rows not recorded yet
        self.writer = SampleWriter(piece.shard_id, piece.folder, True, storage.SHARD_DIGITS,
                                   None, "jpg")  # the shard schema (shard/samples.py)
        self.digits = math.ceil(math.log10(section.samples_per_shard))
        self.status = collections.Counter()  # error messages are few by design (error_text)
        self.counts = collections.Counter()
        self.backoffs = 0
        self.progress = _ProgressFile(out_dir, f"{piece.shard_id}-{piece.start}")
        if not self.rows:
            self.finish()

    def record(self, index: int, result, backoffs: int) -> None:
        data, resized, error = result
        number = self.piece.shard_id * 10 ** self.digits + self.piece.start + index
        key = f"{number:0{self.digits + storage.SHARD_DIGITS}d}"
        meta = {**dict(zip(self.column_list, self.rows[index])), "key": key, "status": None,
                "error_message": error, "width": None, "height": None,
                "original_width": None, "original_height": None, "sha256": None}
        image = None
        if error is not None:
            meta["status"] = "failed_to_download"
        else:
            image, width, height, original_width, original_height, error = resized
            if error is not None:
                image, meta["status"], meta["error_message"] = None, "failed_to_resize", error
            else:
                meta.update(status="success", width=width, height=height,
                            original_width=original_width, original_height=original_height,
                            sha256=hashlib.sha256(data).hexdigest())
        self.counts[meta["status"]] += 1
        self.status[error if error is not None else "success"] += 1
        self.backoffs += backoffs
        self.writer.write(image, key, self.captions[index], meta)
        self.progress.update(self.counts, self.status)
        self.left -= 1
        if not self.left:
            self.finish()

    def finish(self) -> None:
        self.writer.close()
        write_stats(f"{self.piece.folder.rstrip('/')}/{storage.shard_name(self.piece.shard_id)}",
                    {"count": len(self.rows), "successes": self.counts["success"],
                     "failed_to_download": self.counts["failed_to_download"],
                     "failed_to_resize": self.counts["failed_to_resize"],
                     "host_backoffs": self.backoffs},
                    dict(self.status), self.start_time, time.time())
        self.progress.remove()
        if self.piece.whole:
            storage.remove(self.piece.feather)  # a part's: the driver's clean-up removes it


class _ProgressFile:
    """A running piece's counts in `OUT/download/_tmp/progress/ID-START.json`, rewritten every
    PROGRESS_SECONDS, for the driver's progress line (progress.py)."""

    def __init__(self, out_dir: str, name: str):
        self.path = f"{out_dir.rstrip('/')}/_tmp/progress/{name}.json"
        self.last = 0.0

    def update(self, counts, status) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        errors = {k: v for k, v in status.most_common(4) if k != "success"}
        try:
            storage.write_json_atomic(self.path, {"count": sum(counts.values()),
                                                  "successes": counts["success"],
                                                  "errors": errors})
        except OSError:
            pass  # progress is a courtesy: a failed write must not fail the shard

    def remove(self) -> None:
        try:
            storage.remove(self.path)
        except OSError:
            pass
