"""Benchmark: `curate` (extract -> match -> filter -> balance) end to end, Spark local mode.

Input: the shared real candidates (alt_text_pairs.jsonl, 3,073 multilingual alt texts) repeated
to >= 1M rows (100k with --quick) as JSONL files; copy k gets `copy=k` in its image URL's query
so copies are distinct images (otherwise dedup would fold them into the original) while the
texts, languages and matches stay the real ones.

Baseline, same run, same files, same session: Spark reading the JSONL and writing it as Parquet
(the I/O floor any stage chain pays). Reported: candidates/s and candidates/s per core for both,
the ratio, and each stage's share of curate's time (from the stage manifests).

    .venv/bin/python tests/benchmarks/bench_curate.py [--quick] [--rows N]
Prints one JSON object.
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
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))
QUERIES = REPO / "query_lists" / "wit-queries-en.json.gz"


def make_inputs(folder: Path, rows: int, files: int) -> int:
    pairs = [json.loads(line) for line in open(SHARED / "candidates" / "alt_text_pairs.jsonl")]
    copies = -(-rows // len(pairs))
    handles = [open(folder / f"part-{i:03d}.jsonl", "w") for i in range(files)]
    written = 0
    for k in range(copies):
        out = handles[k % files]
        for p in pairs:
            url = p["url"]
            if url.startswith("http") and k:
                url += ("&" if "?" in url else "?") + f"copy={k}"
            out.write(json.dumps({"url": url, "text": p["text"], "page_url": p["page_url"]}) + "\n")
            written += 1
    for h in handles:
        h.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    parser.add_argument("--rows", type=int, help="rows to generate (overrides --quick)")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)

    os.environ.setdefault("WIT_DRIVER_MEMORY", "2g")
    from wit_builder import stages
    from wit_builder.config import load_config
    from wit_builder import pipeline
    from wit_builder.spark import get_spark

    cores = os.cpu_count() or 1
    spark = get_spark(master=f"local[{cores}]", app_name="bench-curate")
    with tempfile.TemporaryDirectory(prefix="bench_curate_") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        n = make_inputs(tmp / "in", rows, files=max(4, 2 * cores))

        start = time.perf_counter()
        spark.read.json(str(tmp / "in")).write.parquet(str(tmp / "baseline"))
        baseline_s = time.perf_counter() - start

        cfg = load_config(overrides=["extract.format=jsonl", "extract.page_url_column=page_url",
                                     f"match.queries={QUERIES}"])
        start = time.perf_counter()
        summary = pipeline.curate(cfg, [str(tmp / "in")], str(tmp / "out"), spark=spark,
                                  log=lambda m: print(m, file=sys.stderr))
        curate_s = time.perf_counter() - start
    assert summary["input_rows"] == n and summary["every_row_accounted"]
    stage_s = {s["stage"]: s["seconds"] for s in summary["stages"]}
    total_stage_s = sum(stage_s.values())
    print(json.dumps({
        "benchmark": "curate end to end (extract jsonl -> match -> filter -> balance)",
        "rows": n,
        "cores": cores,
        "curate_seconds": round(curate_s, 2),
        "curate_candidates_per_s": round(n / curate_s),
        "curate_candidates_per_s_per_core": round(n / curate_s / cores),
        "stage_seconds": stage_s,
        "stage_share": {k: round(v / total_stage_s, 3) for k, v in stage_s.items()},
        "rows_per_stage": {s["stage"]: [s["rows_in"], s["rows_out"]] for s in summary["stages"]},
        "drops": {s["stage"]: s["drops"] for s in summary["stages"]},
        "baseline": "spark.read.json + write.parquet of the same files (I/O floor)",
        "baseline_seconds": round(baseline_s, 2),
        "baseline_candidates_per_s_per_core": round(n / baseline_s / cores),
        "ratio_curate_over_baseline_time": round(curate_s / baseline_s, 2),
        "load_average_at_end": os.getloadavg(),
        "versions": {**stages.versions(), "platform": platform.platform()},
        "query_list": QUERIES.name,
    }, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
