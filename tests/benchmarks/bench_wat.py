"""WAT extraction, candidates/s per core (CPU time, best of 2): ours (extract_file), ours at
earlier commits (f1f6221, before issue 12: warcio + json + per-row URL checks; 7ac87d7: fastwarc
+ orjson + Arrow checks) and cc2dataset 1.5.0's `extract_documents_from_wat(stream, "image")`
(fastwarc + simdjson), on the same generated WAT at two sizes, in the same run. Each size runs
--rounds times, the tools alternating, so a slower or faster spell of the machine falls on
all of them: the ratio reported is the median of the rounds' ratios.

    .venv/bin/python tests/benchmarks/bench_wat.py --peer-python PEERVENV/bin/python [--out F]
PEERVENV: python3 -m venv V && V/bin/pip install --no-deps cc2dataset==1.5.0 &&
          V/bin/pip install fastwarc pysimdjson loguru fsspec
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_output import emit

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WIT_SHARED", REPO.parent / "shared"))
TOOL = SHARED / "tools" / "peer_cc2dataset_wat.py"
BEFORE = {"before_issue_12": "f1f6221", "before_msgspec": "7ac87d7"}
OURS = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from wit_builder.config import load_config
from wit_builder.extract.stage import InputFile, Options, extract_file
opts = Options.from_config(load_config(None))
best = None
for _ in range(2):
    c = time.process_time(); n = 0
    for b in extract_file(InputFile(sys.argv[2], "wat"), opts):
        n += b.column("tally").null_count
    cpu = time.process_time() - c
    best = min(best or (cpu, n), (cpu, n))
print(json.dumps({"candidates": best[1], "cpu_s": round(best[0], 3),
                  "candidates_per_s_per_core": round(best[1] / best[0])}))
"""


def _json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", required=True)
    ap.add_argument("--sizes", default="20,100", help="copies of the generated WAT")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    py = sys.executable
    result = {"benchmark": "WAT extraction per core", "peer": "cc2dataset 1.5.0",
              "load_average_at_start": os.getloadavg(), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"ours": REPO}
        for name, commit in BEFORE.items():
            trees[name] = Path(tmp) / name
            trees[name].mkdir()
            subprocess.run(f"git archive {commit} wit_builder | tar -x -C {trees[name]}", shell=True,
                           check=True, cwd=REPO)
        for copies in [int(c) for c in a.sizes.split(",")]:
            wat = f"{tmp}/peer{copies}.wat.gz"
            gen = _json([py, str(TOOL), "gen", "--shared", str(SHARED), "--out", wat, "--copies",
                         str(copies)])
            rounds = []
            for _ in range(a.rounds):
                run = {"cc2dataset": _json([a.peer_python, str(TOOL), "peer", "--wat", wat, "--rounds", "2"])}
                run.update({name: _json([py, "-c", OURS, str(tree), wat]) for name, tree in trees.items()})
                rounds.append(run)
            size = {"copies": copies, "bytes": gen["bytes"],
                    "candidates": {name: rounds[0][name]["candidates"] for name in rounds[0]},
                    "cpu_s": {name: [r[name]["cpu_s"] for r in rounds] for name in rounds[0]}}
            for name in trees:
                # the measure: candidates/s per core (ours keeps 2.4% fewer: stricter rules)
                ratios = [r[name]["candidates_per_s_per_core"] / r["cc2dataset"]["candidates_per_s_per_core"]
                          for r in rounds]
                size[f"ratio_{name}_over_cc2dataset"] = [round(x, 2) for x in ratios]
                size[f"median_ratio_{name}_over_cc2dataset"] = round(statistics.median(ratios), 2)
            result["sizes"].append(size)
    result["candidate_count_difference"] = (
        "cc2dataset keeps every IMG@/src link with a non-empty raw alt whose URL (urljoin) starts "
        "with http(s); it does not check the HTTP status, collapse whitespace (a whitespace-only "
        "alt is kept), check text/URL length, host or IDNA, and does not add titles. Ours: "
        "alt and distinct title candidates of 2xx HTML responses, cleaned, checked, re-quoted.")
    result["damaged_files"] = (
        "WAT reader (fastwarc) = warcio reader on damaged files, except that a file cut inside a "
        "record header or a junk file ends with one corrupt_record where warcio saw a clean end "
        "(tests/extract/test_wat.py)")
    emit(result, a.out)


if __name__ == "__main__":
    main()
