"""Finalize throughput: hashing + near-duplicate removal, ours (Spark) against a plain baseline.

Part 1, real photos: the 1,000 Flickr8k dev photos in their 8 orientations (flips and
rotations: distinct images, distinct pHashes) plus resized/re-compressed variants of every
fourth, up to --images samples, written as img2dataset shards. Ours: the finalize stage as
`wit-builder finalize` runs it (pHash + sha256 in Spark tasks, decisions through the runner,
on the driver up to `[spark] driver_rows`, resharding in one job) on local[2]. Baseline in the same run: a
single-process loop of `imagehash.phash(Image.open(...))` + sha256 over the same tars, then
all-pairs Hamming distances (numpy) and union-find clusters.

Part 2, scale of the near-dup search alone: N synthetic 64-bit hashes with planted
near-duplicates; ours = neardup.bucket_rows + pairs_in_buckets + graph.components (banded,
numpy and scipy: what the stage runs on the driver), baseline = numpy all-pairs XOR/popcount, chunked. Where all pairs would take
too long (N > --full-baseline-max) it is timed on a sample of its chunks and extrapolated (its
cost is linear in the chunks), and the pairs of the sampled rows are checked against ours.
Peak memory of ours is measured with tracemalloc in a second run.

Prints one JSON object. Usage: .venv/bin/python tests/benchmarks/bench_finalize.py [--quick] [--images N]
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

from PIL import Image  # noqa: E402
from shard_maker import captions, jpeg, sample, variant, write_shards  # noqa: E402

IMAGES = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "images"
MAX_DISTANCE = 4


ORIENTATIONS = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
                Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
                Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE]


def photo_samples(limit: int) -> list[dict]:
    """`limit` samples: 4/5 photos (in 8 orientations when there are too few), 1/5 variants."""
    photos = []
    for split in ("train", "val"):
        folder = IMAGES / "flickr8k_dev" / split
        for name, text in sorted(captions(folder).items()):
            photos.append((f"{split}/{name}", (folder / name).read_bytes(), text))
    n_photos = limit - limit // 5
    out = []
    for turn in ORIENTATIONS:
        for name, data, text in photos:
            if len(out) == n_photos:
                break
            if turn is not None:
                data = jpeg(Image.open(io.BytesIO(data)).transpose(turn), 90)
            out.append(sample(f"{turn.name if turn else 'orig'}/{name}", data, text, []))
    # every fourth photo gets a resized + re-compressed near-duplicate
    out += [sample(f"variant/{s['url']}", variant(s["data"], 0.7, 40), s["text"] + " copy", [])
            for s in out[::4][: limit - len(out)]]
    return out


def baseline(tars: list[str]) -> dict:
    """Single process: plain imagehash + sha256 per image, all-pairs Hamming, union-find."""
    import imagehash
    from PIL import Image

    from wit_builder.shard.samples import image_of
    from wit_builder.shard.tars import read_samples

    start = time.perf_counter()
    hashes, shas = [], []
    for tar in tars:
        for _, files, _ in read_samples(tar):
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
            "drops": m["drops"], "images_per_s": round(m["rows_in"] / seconds, 1),
            "spark_jobs": m.get("spark_jobs"), "stage_seconds": m.get("seconds"),
            "output_shards": m["shards"], "output_tar_bytes": m["tar_bytes"]}


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """n random hashes (signed int64), every tenth followed by a copy with 1-4 bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 10):
        bits = rng.choice(64, size=rng.integers(1, MAX_DISTANCE + 1), replace=False)
        h[i + 1] = h[i] ^ np.uint64(sum(1 << int(b) for b in bits))
    return h.view(np.int64)


def _ours_search(h: np.ndarray):
    import pyarrow as pa

    from wit_builder import graph, runner
    from wit_builder.finalize import neardup

    buckets = pa.Table.from_batches([neardup.bucket_rows(h, MAX_DISTANCE + 1)])
    pairs = neardup.pairs_in_buckets(buckets, MAX_DISTANCE)
    labels = graph.components(runner.Rows(table=pairs)).table.column("label").to_numpy()
    return np.unique(np.stack([pairs.column("a").to_numpy(), pairs.column("b").to_numpy()], 1),
                     axis=0), labels


def neardup_scale(n: int, full_baseline_max: int, sampled_chunks: int = 6) -> dict:
    import tracemalloc

    h = synthetic_hashes(n)
    _ours_search(h[:1000])  # imports (scipy.sparse) outside the timing
    start = time.perf_counter()
    pairs, labels = _ours_search(h)
    ours_s = time.perf_counter() - start
    tracemalloc.start()
    _ours_search(h)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ours_set = {(int(a), int(b)) for a, b in pairs}
    clusters = len(np.unique(labels))  # the labels of the hashes with a close pair

    unique = np.unique(h)
    u = unique.view(np.uint64)
    chunk = 2048
    n_chunks = -(-len(u) // chunk)
    if n <= full_baseline_max:
        start = time.perf_counter()
        base = all_pairs(u, chunk)
        base_s = time.perf_counter() - start
        base_set = {(int(unique[i]), int(unique[j])) for i, j in base}
        same = base_set == ours_set
        how = "measured"
        base_pairs = len(base_set)
    else:  # time evenly spread chunks of rows against all rows; check those rows' pairs
        picked = np.linspace(0, n_chunks - 1, sampled_chunks).astype(int)
        found, start = [], time.perf_counter()
        for c in picked:
            lo = c * chunk
            block = u[lo:lo + chunk, None] ^ u[None, :]
            close = np.argwhere(np.bitwise_count(block) <= MAX_DISTANCE)
            found += [(lo + i, j) for i, j in close if lo + i != j]
        base_s = (time.perf_counter() - start) * n_chunks / len(picked)
        rows = set()
        for c in picked:
            rows.update(range(c * chunk, min(len(u), (c + 1) * chunk)))
        base_set = {tuple(sorted((int(unique[i]), int(unique[j])))) for i, j in found}
        ours_rows = {p for p in ours_set if np.searchsorted(unique, p[0]) in rows
                     or np.searchsorted(unique, p[1]) in rows}
        same = base_set == ours_rows
        how = f"extrapolated from {len(picked)} of {n_chunks} chunks of {chunk} rows"
        base_pairs = len(base_set)
    return {"hashes": n, "ours_seconds": round(ours_s, 3),
            "ours_peak_memory_mb": round(peak / 2**20, 1),
            "input_memory_mb": round(h.nbytes / 2**20, 1),
            "baseline_all_pairs_seconds": round(base_s, 3), "baseline_timing": how,
            "pairs_found": {"ours": len(ours_set), "baseline": base_pairs,
                            "baseline_scope": "all rows" if how == "measured" else "pairs touching the sampled rows",
                            "same_pairs": same},
            "clusters_with_pairs": clusters,
            "ours_hashes_per_s": round(n / ours_s, 1), "baseline_hashes_per_s": round(n / base_s, 1),
            "ratio": round(base_s / ours_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and hashes")
    parser.add_argument("--images", type=int, default=None, help="samples in part 1 (10,000)")
    parser.add_argument("--scale", type=int, nargs="*", default=None,
                        help="hash counts of part 2 (10,000 and 500,000)")
    parser.add_argument("--full-baseline-max", type=int, default=50_000,
                        help="largest N whose all-pairs baseline runs in full")
    args = parser.parse_args()
    os.environ.setdefault("WIT_DRIVER_MEMORY", "1g")
    from wit_builder.config import load_config
    from wit_builder.spark import get_spark
    from wit_builder.stages import versions

    import imagehash
    import pyspark

    photos = args.images or (1250 if args.quick else 10_000)
    scales = args.scale or ([10_000] if args.quick else [10_000, 500_000])
    load_start = os.getloadavg()
    started = time.perf_counter()
    spark = get_spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    session_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        download = Path(tmp) / "download"
        tars = [str(t) for t in write_shards(download, photo_samples(photos), per_shard=128)]
        input_bytes = sum(os.path.getsize(t) for t in tars)
        ours(spark, str(download), str(Path(tmp) / "warmup"))  # first job pays the JVM/worker start
        load_ours = os.getloadavg()
        mine = ours(spark, str(download), str(Path(tmp) / "out"))
        load_base = os.getloadavg()
        base = baseline(tars)
    spark.stop()
    scale = [neardup_scale(n, args.full_baseline_max) for n in scales]
    result = {
        "benchmark": "finalize",
        "quick": args.quick,
        "images": mine["images"],
        "input": {"tars": len(tars), "tar_bytes": input_bytes, "samples_per_input_tar": 128},
        "ours": mine,
        "ours_is": f"the finalize stage, local[2]; decisions on the driver (up to spark.driver_rows = {load_config().spark.driver_rows:,} samples)",
        "baseline": base,
        "baseline_is": "single-process imagehash.phash(Image.open) + sha256 loop, all-pairs Hamming (numpy), union-find",
        "ratio": round(mine["images_per_s"] / base["images_per_s"], 3),
        "same_kept": mine["kept"] == base["kept"],
        "kept_note": "ours also drops exact duplicates by sha256 (none here); ours hashes the JPEG decoded in draft mode (scaled DCT), imagehash.phash(Image.open) decodes in full, so a few hashes differ and counts may differ by a few",
        "neardup_at_scale": scale,
        "neardup_note": "same pairs as all pairs (same_pairs); memory: ours_peak_memory_mb (tracemalloc, numpy buffers) against the input's input_memory_mb",
        "spark_session_start_seconds": round(session_s, 1),
        "load_average": {"start": [round(x, 2) for x in load_start], "before_ours": [round(x, 2) for x in load_ours],
                         "before_baseline": [round(x, 2) for x in load_base],
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "spark_master": "local[2]"},
        "versions": {**versions(), "imagehash": imagehash.__version__, "pyspark": pyspark.__version__},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
