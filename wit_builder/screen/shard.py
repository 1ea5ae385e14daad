"""Screen one shard (a Spark task's work): hash lists, NSFW score, faces; then its output files.

Each sample of the input tar, in order, is either dropped with one reason or written to
`NNNNN.tar` under our key (shard name and position: a foreign shard's member paths never reach
an output shard), its record (json and Parquet row, shard/samples.py) gaining `pdq`,
`download_phash` (the image's hashes as it came, before any blurring, so a later list can be
applied without downloading again), `nsfw_score` and `faces` ({"count", "boxes": [[x, y, w,
h], ...]}). Beside it: `NNNNN.parquet`, `drops/NNNNN.parquet` (key, uid, reason, source shard),
and `NNNNN_stats.json` (img2dataset's keys: `count` samples in, `successes` kept; then
screen's own), written last: a shard with a whole stats file is done.

Drop reasons: `blocklisted` (a hash within distance of a listed one), `nsfw` (nsfw_score above
`drop_nsfw_above`), `undecodable_image` and the image checks' reasons (images.py), and the tar
reader's (`oversized_member`, `corrupt_member`, `corrupt_shard`). Only a list's name and its
count leave the task, never a listed sample's hash or image.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import numpy as np

from wit_builder import images, per_process, storage
from wit_builder.screen import faces, hashes, nsfw
from wit_builder.shard.samples import (STATS_SUFFIX, image_of, meta_row, parquet_schema,
                                       sample_meta, shard_stats)
from wit_builder.shard.tars import TarWriter, read_samples

DROPS = "drops"
HISTOGRAM_EDGES = np.linspace(0, 1, 21)  # fixed bins, so shards' histograms add up


def drops_schema():
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("uid", pa.string()), ("reason", pa.string()),
                      ("source_shard", pa.string())])


def task_options(section) -> dict:
    """The `[screen]` settings a shard task needs, as plain values."""
    return {"hash_lists": list(section.hash_lists), "pdq_distance": section.pdq_distance,
            "phash_distance": section.phash_distance, "nsfw_threshold": section.nsfw_threshold,
            "drop_nsfw_above": section.drop_nsfw_above, "blur_faces": section.blur_faces,
            "face_min_score": section.face_min_score, "encode_quality": section.encode_quality,
            "batch_size": section.batch_size}


def _lists(paths: list[str]) -> list[hashes.HashList]:
    key = tuple((p, storage.file_fingerprint(p)) for p in paths)  # an edited list is read again
    return per_process.get("screen hash lists", key, lambda: hashes.load_lists(paths), keep=1)


def _decoded(files: dict):
    """(ext, bytes, RGB array) of the sample's image, or (None, None, drop reason)."""
    ext, data = image_of(files)
    if data is None:
        return None, None, "undecodable_image"
    try:
        return ext, data, np.asarray(images.decode(data, "RGB"))
    except images.ImageRefused as e:
        return None, None, e.reason
    except Exception:  # noqa: BLE001 - any decoder error is bad data: a counted drop
        return None, None, "undecodable_image"


class _Output:
    """The shard's output files, and its tallies."""

    def __init__(self, index: int, tar: str, out_dir: str):
        self.name, self.tar, self.out_dir = storage.shard_name(index), tar, out_dir
        self.raw = storage.open_file(storage.join(out_dir, self.name + ".tar"), "wb")
        self.writer = TarWriter(self.raw)
        self.rows, self.drops, self.pos, self.start = [], [], 0, time.time()
        self.listed, self.scores = Counter(), []
        self.faces = self.with_faces = self.blurred = 0

    def next_key(self) -> str:
        key = f"{self.name}{self.pos:06d}"
        self.pos += 1
        return key

    def drop(self, key: str, meta: dict, reason: str) -> None:
        uid = meta.get("uid")
        self.drops.append({"key": key, "uid": None if uid is None else str(uid), "reason": reason,
                           "source_shard": self.tar})

    def write(self, key: str, files: dict, meta: dict, ext: str, data: bytes) -> None:
        row = meta_row({**meta, "key": key}, files, self.tar)  # the json is the Parquet row
        self.writer.write({"__key__": key, ext: data, "txt": files.get("txt", b""),
                           "json": json.dumps(row, indent=4)})
        self.rows.append(row)

    def close(self, threshold: float) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.writer.close()
        self.raw.close()
        base = storage.join(self.out_dir, self.name)
        for path, table in ((base + ".parquet", pa.Table.from_pylist(self.rows, parquet_schema())),
                            (storage.join(self.out_dir, DROPS, self.name + ".parquet"),
                             pa.Table.from_pylist(self.drops, drops_schema()))):
            buf = io.BytesIO()
            pq.write_table(table, buf)
            storage.write_bytes_atomic(path, buf.getvalue())
        scores = np.array(self.scores, np.float64)
        dropped = dict(Counter(d["reason"] for d in self.drops))
        stats = shard_stats(
            self.pos, len(self.rows), self.start, time.time(), {"success": len(self.rows), **dropped},
            source=self.tar, dropped=dropped, blocklisted=dict(self.listed),
            nsfw_histogram=np.histogram(scores, HISTOGRAM_EDGES)[0].tolist(),
            nsfw_above=int((scores > threshold).sum()), scored=len(scores),
            faces=self.faces, with_faces=self.with_faces, blurred=self.blurred)
        storage.write_json_atomic(base + STATS_SUFFIX, stats)
        return stats


def screen_shard(index: int, tar: str, out_dir: str, options: dict) -> dict:
    """Screen the samples of `tar` into OUT's shard `index`; return its stats (as written)."""
    lists = _lists(options["hash_lists"])
    detector = nsfw.detector()
    out = _Output(index, tar, out_dir)
    pending = []  # (key, files, meta, ext, data, rgb) waiting for the model's batch

    def flush():
        raw = detector.raw([p[5] for p in pending]) if pending else []
        for (key, files, meta, ext, data, rgb), output in zip(pending, raw):
            score = nsfw.score_of(output)
            out.scores.append(score)
            if score > options["drop_nsfw_above"]:
                out.drop(key, meta, "nsfw")
                continue
            boxes = nsfw.face_boxes(output, rgb.shape, options["face_min_score"])
            if boxes and options["blur_faces"]:
                data = faces.encode(faces.blur(rgb, boxes), ext, options["encode_quality"])
                out.blurred += 1
            out.faces += len(boxes)
            out.with_faces += bool(boxes)
            meta.update(nsfw_score=score, faces={"count": len(boxes), "boxes": boxes})
            out.write(key, files, meta, ext, data)
        pending.clear()

    for sample in read_samples(tar):
        key, meta = out.next_key(), sample_meta(sample.files)
        if sample.problem:
            out.drop(key, meta, sample.problem)
            continue
        ext, data, rgb = _decoded(sample.files)
        if ext is None:
            out.drop(key, meta, rgb)
            continue
        pdq, phash = hashes.pdq_of(rgb), hashes.phash_of(data)
        listed = hashes.listed_in(lists, pdq, phash, options["pdq_distance"],
                                  options["phash_distance"])
        if listed:
            out.listed[listed] += 1
            out.drop(key, meta, "blocklisted")
            continue
        meta.update(pdq=pdq, download_phash=phash)
        pending.append((key, sample.files, meta, ext, data, rgb))
        if len(pending) >= options["batch_size"]:
            flush()
    flush()
    return out.close(options["nsfw_threshold"])
