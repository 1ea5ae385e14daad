"""Finalize throughput: hashing + near-duplicate removal, ours (Spark) against a plain baseline.

Part 1, real photos: Flickr8k dev photos plus resized/re-compressed variants, written as
img2dataset shards. Ours: the finalize stage (pHash + sha256 in Spark, exact dedup, banded
near-dup clusters, resharding). Baseline in the same run: a single-process loop of
`imagehash.phash(Image.open(...))` + sha256 over the same tars, then all-pairs Hamming
distances (numpy) and union-find clusters.

Part 2, scale of the near-dup search alone: N synthetic 64-bit hashes with planted
near-duplicates; ours = neardup.close_pairs + components in Spark (banded), baseline = numpy
all-pairs XOR/popcount, chunked. Both must find the same pairs.

Prints one JSON object. Usage: .venv/bin/python tests/benchmarks/bench_finalize.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from shard_maker import captions, sample, variant, write_shards  # noqa: E402

IMAGES = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "images"
MAX_DISTANCE = 4


def photo_samples(limit: int) -> list[dict]:
    out = []
    for split in ("train", "val"):
        folder = IMAGES / "flickr8k_dev" / split
        for name, text in sorted(captions(folder).items()):
            out.append(sample(f"{split}/{name}", (folder / name).read_bytes(), text, []))
    out = out[:limit]
    # every fourth photo gets a resized + re-compressed near-duplicate
    out += [sample(f"variant/{s['url']}", variant(s["data"], 0.7, 40), s["text"] + " copy", [])
            for s in out[::4]]
    return out


def baseline(tars: list[str]) -> dict:
    """Single process: plain imagehash + sha256 per image, all-pairs Hamming, union-find."""
    import imagehash
    from PIL import Image

    from wit_builder.finalize.hashing import image_of, read_samples

    start = time.perf_counter()
    hashes, shas = [], []
    for tar in tars:
        for _, files in read_samples(tar):
            _, data = image_of(files)
            shas.append(hashlib.sha256(data).hexdigest())
            bits = imagehash.phash(Image.open(io.BytesIO(data))).hash.flatten()
            hashes.append(int.from_bytes(np.packbits(bits).tobytes(), "big"))
    hashed = time.perf_counter()
    pairs = all_pairs(np.array(hashes, dtype=np.uint64))
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    clusters = len({find(i) for i in range(len(hashes))})
    end = time.perf_counter()
    return {"images": len(hashes), "seconds": round(end - start, 3),
            "hash_seconds": round(hashed - start, 3), "kept": clusters,
            "images_per_s": round(len(hashes) / (end - start), 1)}


def all_pairs(h: np.ndarray, chunk: int = 2048) -> list[tuple[int, int]]:
    """(i, j), i < j, of hashes within MAX_DISTANCE bits, comparing every pair."""
    found = []
    for lo in range(0, len(h), chunk):
        block = h[lo:lo + chunk, None] ^ h[None, :]
        close = np.argwhere(np.bitwise_count(block) <= MAX_DISTANCE)
        found += [(lo + i, j) for i, j in close if lo + i < j]
    return found


def ours(spark, download: str, out: str) -> dict:
    from wit_builder import pipeline
    from wit_builder.config import load_config

    cfg = load_config(overrides=[f"finalize.hamming_distance={MAX_DISTANCE}", "finalize.min_side=0",
                                 "finalize.max_aspect_ratio=100", "finalize.samples_per_shard=256"])
    start = time.perf_counter()
    run = pipeline.execute("finalize", spark, cfg, [download], out, force=True, log=lambda _m: None)
    seconds = time.perf_counter() - start
    m = run.manifest
    return {"images": m["rows_in"], "seconds": round(seconds, 3), "kept": m["rows_out"],
            "drops": m["drops"], "images_per_s": round(m["rows_in"] / seconds, 1)}


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """n random hashes (signed int64), every tenth followed by a copy with 1-4 bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 10):
        bits = rng.choice(64, size=rng.integers(1, MAX_DISTANCE + 1), replace=False)
        h[i + 1] = h[i] ^ np.uint64(sum(1 << int(b) for b in bits))
    return h.view(np.int64)


def neardup_scale(spark, n: int) -> dict:
    from pyspark.sql import functions as F

    from wit_builder.finalize import neardup

    h = synthetic_hashes(n)
    df = spark.createDataFrame([(int(v),) for v in h], "phash long").repartition(4).cache()
    df.count()
    start = time.perf_counter()
    pairs = neardup.close_pairs(df, None, MAX_DISTANCE, MAX_DISTANCE + 1).localCheckpoint()
    labels = neardup.components(pairs)
    ours_pairs = pairs.count()
    clusters = labels.select(F.countDistinct("label")).first()[0]
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    unique = np.unique(h)
    base = all_pairs(unique.view(np.uint64))
    base_s = time.perf_counter() - start
    return {"hashes": n, "ours_seconds": round(ours_s, 3), "baseline_all_pairs_seconds": round(base_s, 3),
            "pairs_found": {"ours": ours_pairs, "baseline": len(base)}, "clusters_with_pairs": clusters,
            "ours_hashes_per_s": round(n / ours_s, 1), "baseline_hashes_per_s": round(n / base_s, 1),
            "ratio": round(base_s / ours_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and hashes")
    args = parser.parse_args()
    os.environ.setdefault("WIT_DRIVER_MEMORY", "1g")
    from wit_builder.spark import get_spark
    from wit_builder.stages import versions

    import imagehash
    import pyspark

    photos = 200 if args.quick else 1000
    scale_n = 10_000 if args.quick else 40_000
    started = time.perf_counter()
    spark = get_spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    session_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        download = Path(tmp) / "download"
        tars = [str(t) for t in write_shards(download, photo_samples(photos), per_shard=128)]
        ours(spark, str(download), str(Path(tmp) / "warmup"))  # first job pays the JVM/worker start
        mine = ours(spark, str(download), str(Path(tmp) / "out"))
        base = baseline(tars)
    scale = neardup_scale(spark, scale_n)
    result = {
        "benchmark": "finalize",
        "quick": args.quick,
        "images": mine["images"],
        "ours": mine,
        "baseline": base,
        "baseline_is": "single-process imagehash.phash(Image.open) + sha256 loop, all-pairs Hamming (numpy), union-find",
        "ratio": round(mine["images_per_s"] / base["images_per_s"], 3),
        "neardup_at_scale": scale,
        "spark_session_start_seconds": round(session_s, 1),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "spark_master": "local[2]"},
        "versions": {**versions(), "imagehash": imagehash.__version__, "pyspark": pyspark.__version__},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
