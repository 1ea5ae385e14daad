"""Download + shard throughput (images/s): our download stage vs plain img2dataset.

Both fetch the same URLs (the real flickr8k_dev photos, served by a local HTTP server on
127.0.0.1) with the same resize settings, shard size and threads, through img2dataset's pyspark
distributor on one local[2] SparkSession, alternating A B B A in one run. Two comparisons:
- stage: our whole `download` stage (prepare the candidates, download, count) vs
  `img2dataset.download(...)` (its reader, logger process, download);
- engine: only the download of the same prepared Parquet: our safe fetcher inside img2dataset
  vs img2dataset's urllib fetcher (what the network-safety checks cost).

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python tests/benchmarks/bench_download.py [--quick]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
PHOTOS = REPO.parent / "shared" / "data" / "images" / "flickr8k_dev"
SETTINGS = dict(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True,
                encode_quality=95, threads=16)


def plain_img2dataset(url_list, out, per_shard):
    import img2dataset

    img2dataset.download(
        url_list=str(url_list), input_format="parquet", url_col="url", caption_col="text",
        output_format="webdataset", output_folder=str(out), distributor="pyspark",
        processes_count=2, thread_count=SETTINGS["threads"], number_sample_per_shard=per_shard,
        image_size=SETTINGS["image_size"], resize_mode=SETTINGS["resize_mode"],
        resize_only_if_bigger=SETTINGS["resize_only_if_bigger"],
        encode_quality=SETTINGS["encode_quality"], compute_hash="sha256", extract_exif=False,
        incremental_mode="incremental", disallowed_header_directives=["noai", "noimageai"],
        timeout=10)


def successes(folder) -> int:
    return sum(json.loads(p.read_text())["successes"] for p in Path(folder).glob("*_stats.json"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="300 images, one round")
    parser.add_argument("--engine-only", action="store_true",
                        help="only the engine comparison (the safety checks' cost), 2 rounds")
    args = parser.parse_args()

    import img2dataset
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyspark

    from image_server import ImageServer
    from wit_builder import pipeline
    from wit_builder.config import load_config
    from wit_builder.download import shards
    from wit_builder.spark import get_spark

    files = sorted((PHOTOS / "train").glob("*.jpg")) + sorted((PHOTOS / "val").glob("*.jpg"))
    files = files[:300] if args.quick else files
    per_shard = max(1, len(files) // 4)
    server = ImageServer({"/p/": PHOTOS}).start()
    work = Path(tempfile.mkdtemp(prefix="bench_download_"))
    cands = work / "candidates.parquet"
    pq.write_table(pa.table({"url": [server.url(f"/p/{f.parent.name}/{f.name}") for f in files],
                             "text": [f"a photo {f.stem}" for f in files]}), cands)
    os.environ.setdefault("WIT_DRIVER_MEMORY", "1g")
    spark = get_spark(master="local[2]", app_name="bench-download")
    cfg = load_config(None, [f"download.{k}={v}" for k, v in SETTINGS.items()] + [
        "download.allow_networks=127.0.0.0/8", f"download.samples_per_shard={per_shard}"])

    def ours_stage(out):
        pipeline.execute("download", spark, cfg, [str(cands)], str(out), log=lambda _m: None)
        return out / "download"

    def plain_stage(out):
        plain_img2dataset(cands, out, per_shard)
        return out

    prepared = work / "prepared"  # our prepared input, for the engine-only comparison
    ours_stage(prepared)
    input_dir = prepared / "download" / "_input"

    def ours_engine(out):
        out.mkdir()
        shards.download(spark, str(input_dir), str(out), cfg.download, done_shards=set())
        return out

    def plain_engine(out):
        plain_img2dataset(input_dir, out, per_shard)
        return out

    variants = {"ours_stage": ours_stage, "img2dataset_stage": plain_stage,
                "ours_engine": ours_engine, "img2dataset_engine": plain_engine}
    order = ["ours_stage", "img2dataset_stage", "img2dataset_engine", "ours_engine"]
    if args.engine_only:
        order = ["img2dataset_engine", "ours_engine"]
        variants = {name: variants[name] for name in order}
    rounds = 1 if args.quick and not args.engine_only else 2
    rates = {name: [] for name in variants}
    images = {}
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            out = work / f"{name}-{r}"
            started = time.perf_counter()
            folder = variants[name](out)
            seconds = time.perf_counter() - started
            images[name] = successes(folder)
            rates[name].append(images[name] / seconds)
            shutil.rmtree(out, ignore_errors=True)
    server.stop()
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)

    best = {name: round(statistics.median(v), 1) for name, v in rates.items()}
    print(json.dumps({
        "benchmark": "download",
        "urls": len(files), "images_ok": images, "samples_per_shard": per_shard,
        "settings": SETTINGS, "rounds": rounds,
        "images_per_s": best,
        "images_per_s_each_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "ratio_stage": (round(best["ours_stage"] / best["img2dataset_stage"], 3)
                        if "ours_stage" in best else None),
        "ratio_engine": round(best["ours_engine"] / best["img2dataset_engine"], 3),
        "target": ">= 0.9",
        "load_average_1min_at_end": os.getloadavg()[0],
        "spark_master": "local[2]", "cores": os.cpu_count(), "machine": platform.machine(),
        "versions": {"python": platform.python_version(), "img2dataset": img2dataset.__version__
                     if hasattr(img2dataset, "__version__") else "1.47",
                     "pyspark": pyspark.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
