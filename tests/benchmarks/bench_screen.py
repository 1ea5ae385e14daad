"""Screen throughput next to finalize's, on the same shards of the 1,000 shared Flickr8k photos.

Both stages run as `wit-builder screen` / `wit-builder finalize` run them (pipeline.execute) on
local[N], over the same download-style shards (shard_maker, 4 shards). Screen: decode, PDQ and
pHash, one hash list of 100 hashes, NudeNet's 320n on every image, face blurring; finalize:
pHash + sha256, decisions, resharding. Each figure is images per second per core (images /
seconds / N). The load average is printed before and after each stage: figures measured on a
busy machine are low, so the benchmark refuses to start while /work/BENCH_LOCK exists (someone
else is timing), holds that lock while it times, and says the load it ran under.

Writes tests/benchmarks/results/screen.json and prints it.
Usage: .venv/bin/python tests/benchmarks/bench_screen.py [--cores 2] [--images 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from shard_maker import captions, sample, write_shards  # noqa: E402

IMAGES = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "images"
LOCK = Path("/work/BENCH_LOCK")
RESULT = REPO / "tests" / "benchmarks" / "results" / "screen.json"


def photos(limit: int) -> list[dict]:
    out = []
    for split in ("train", "val"):
        folder = IMAGES / "flickr8k_dev" / split
        for name, text in sorted(captions(folder).items()):
            out.append(sample(f"{split}/{name}", (folder / name).read_bytes(), text, []))
    return out[:limit]


def hash_list(samples: list[dict], path: Path) -> None:
    """PDQ and pHash of every 20th photo: a list of known hashes, as a user would give one."""
    import io

    import numpy as np
    from PIL import Image

    from wit_builder.screen import hashes

    lines = []
    for s in samples[::20]:
        rgb = np.asarray(Image.open(io.BytesIO(s["data"])).convert("RGB"))
        lines += [hashes.pdq_of(rgb), hashes.phash_of(s["data"])]
    path.write_text("\n".join(lines) + "\n")


def timed(spark, stage: str, cfg, download: str, out: str, cores: int) -> dict:
    from wit_builder import pipeline

    load_before = os.getloadavg()
    start = time.perf_counter()
    run = pipeline.execute(stage, spark, cfg, [download], out, force=True, log=lambda _m: None)
    seconds = time.perf_counter() - start
    m = run.manifest
    return {"images": m["rows_in"], "kept": m["rows_out"], "drops": m["drops"],
            "seconds": round(seconds, 2),
            "images_per_s_per_core": round(m["rows_in"] / seconds / cores, 2),
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    if LOCK.exists():
        sys.exit(f"{LOCK} exists: someone is timing a benchmark; run this when it is gone")
    LOCK.touch()  # others wait while this one times
    try:
        result = measure(args.cores, args.images)
    finally:
        LOCK.unlink(missing_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def measure(cores: int, n_images: int) -> dict:
    from wit_builder.config import load_config
    from wit_builder.spark import get_spark

    spark = get_spark(master=f"local[{cores}]", conf={"spark.sql.shuffle.partitions": "4"},
                      ui=False, log_level="ERROR")
    # the session and its Python workers started before either stage is timed
    spark.sparkContext.parallelize(range(4 * cores), 2 * cores).count()
    with tempfile.TemporaryDirectory() as tmp:
        samples = photos(n_images)
        download = Path(tmp) / "download"
        write_shards(download, samples, per_shard=-(-len(samples) // 4))
        hash_list(samples, Path(tmp) / "list.txt")
        cfg = load_config(None, [f"screen.hash_lists={Path(tmp) / 'list.txt'}",
                                 "finalize.min_side=0", "finalize.max_aspect_ratio=100"])
        screen = timed(spark, "screen", cfg, str(download), str(Path(tmp) / "out"), cores)
        finalize = timed(spark, "finalize", cfg, str(download), str(Path(tmp) / "out"), cores)
    spark.stop()
    return {
        "what": "images/s per core of the screen stage next to finalize, same 4 shards",
        "images": len(samples), "spark_master": f"local[{cores}]",
        "screen": screen, "finalize": finalize,
        "screen_vs_finalize": round(screen["images_per_s_per_core"]
                                    / finalize["images_per_s_per_core"], 3),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


if __name__ == "__main__":
    main()
