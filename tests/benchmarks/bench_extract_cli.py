"""Extract as users run it: `wit-builder extract` on one generated WAT, the driver path (the
default for local files of one task or at most `[spark] driver_rows` x 64 bytes) against the Spark path
(`--set spark.driver_rows=0`), on the same file, alternating, best of --rounds, at two sizes.

Stage seconds come from manifest.json (the stage, after the session has started); command
seconds are the whole CLI call, session start included. The outputs are compared too.

    .venv/bin/python tests/benchmarks/bench_extract_cli.py [--sizes 20,100] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench_output import emit

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WIT_SHARED", REPO.parent / "shared"))
TOOL = SHARED / "tools" / "peer_cc2dataset_wat.py"
CLI = Path(sys.executable).parent / "wit-builder"


def _extract(wat: str, out: str, spark_path: bool) -> dict:
    cmd = [str(CLI), "extract", "--input", wat, "--format", "wat", "--out", out,
           "--master", "local[2]"] + (["--set", "spark.driver_rows=0"] if spark_path else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    manifest = json.loads((Path(out) / "extract" / "manifest.json").read_text())
    rows = pq.read_table(sorted((Path(out) / "extract").glob("*.parquet"))).to_pylist()
    return {"stage_s": manifest["seconds"], "command_s": round(seconds, 2),
            "spark_jobs": manifest["spark_jobs"], "rows_out": manifest["rows_out"],
            "drops": manifest["drops"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,100", help="copies of the generated WAT")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    result = {"benchmark": "wit-builder extract CLI on one WAT: driver path against Spark path",
              "master": "local[2]", "load_average_at_start": os.getloadavg(), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for copies in [int(c) for c in a.sizes.split(",")]:
            wat = f"{tmp}/peer{copies}.wat.gz"
            subprocess.run([sys.executable, str(TOOL), "gen", "--shared", str(SHARED), "--out", wat,
                            "--copies", str(copies)], check=True, capture_output=True, cwd=REPO)
            runs = {"driver": [], "spark": []}
            for i in range(a.rounds):
                for way in (("driver", "spark") if i % 2 == 0 else ("spark", "driver")):
                    runs[way].append(_extract(wat, f"{tmp}/{way}{copies}-{i}", way == "spark"))
            best = {way: min(r, key=lambda x: x["stage_s"]) for way, r in runs.items()}
            same = all(r["rows"] == runs["driver"][0]["rows"] and r["drops"] == runs["driver"][0]["drops"]
                       for r in runs["driver"] + runs["spark"])
            result["sizes"].append({
                "copies": copies, "bytes": os.path.getsize(wat),
                **{way: {k: v for k, v in b.items() if k not in ("rows", "drops")}
                   for way, b in best.items()},
                "same_output": same,
                "stage_ratio_spark_over_driver": round(best["spark"]["stage_s"] / best["driver"]["stage_s"], 2),
                "command_ratio_spark_over_driver": round(
                    min(r["command_s"] for r in runs["spark"]) / min(r["command_s"] for r in runs["driver"]), 2)})
    emit(result, a.out)


if __name__ == "__main__":
    main()
