"""Fixed cost per stage on small inputs: today's code against the code this work started from.

Input: the first 1,000 real candidates of alt_text_pairs.jsonl (extract -> match -> filter ->
balance) and 1,000 real photos as img2dataset shards (finalize). Each side runs in its own
process with its own local[2] SparkSession, started and warmed by one small job first, so the
figures are the stages' own seconds (from their manifests) "after the session has started".
The baseline is the tree of commit BASELINE, or of --baseline REV (unpacked with `git archive`),
on the same files, in the same run; the sides take turns (--alternations processes each, the
first side alternating) and each stage's ratio is the median of the turns' ratios.

    .venv/bin/python tests/benchmarks/bench_fixed_cost.py [--rounds 2] [--alternations 3] [--baseline REV]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASELINE = "f1d250a"  # main when the performance work began
SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))
STAGES = ["extract", "match", "filter", "balance", "finalize"]

CHILD = r"""
import json, sys, time
tree, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
from wit_builder.config import load_config
from wit_builder.spark import get_spark
import os
if os.path.exists(tree + "/wit_builder/pipeline.py"):  # by file: the venv's editable finder
    from wit_builder.pipeline import execute         # would import missing modules from main
else:  # the baseline's runner
    from wit_builder.stages import execute
kwargs = {"ui": False, "log_level": "ERROR"} if "ui" in get_spark.__code__.co_varnames else {}
spark = get_spark(master="local[2]", **kwargs)
spark.range(10).count()  # the session has started
cfg = load_config(None, ["match.queries=" + tree + "/query_lists/wit-queries-en.json.gz",
                         "extract.page_url_column=page_url", "balance.t=100", "finalize.t=100"])
seconds = {}
for r in range(rounds):
    out, inputs = f"{work}/out{r}", [f"{work}/candidates.jsonl"]
    for stage in ["extract", "match", "filter", "balance"]:
        run = execute(stage, spark, cfg, inputs, out, log=lambda m: None)
        seconds.setdefault(stage, []).append(run.manifest["seconds"])
        inputs = [run.path]
    run = execute("finalize", spark, cfg, [f"{work}/download"], out, log=lambda m: None)
    seconds.setdefault("finalize", []).append(run.manifest["seconds"])
print(json.dumps(seconds))
"""


def make_inputs(work: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    from bench_finalize import photo_samples
    from shard_maker import write_shards

    lines = (SHARED / "candidates" / "alt_text_pairs.jsonl").read_text().splitlines()[:1000]
    (work / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    write_shards(work / "download", photo_samples(1000), 250)


def side(tree: Path, work: Path, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(work), str(rounds)],
                          capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{tree}: the stages failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import statistics

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="runs per process; the best counts")
    parser.add_argument("--alternations", type=int, default=3,
                        help="processes per side, the sides in turn; the median ratio counts")
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp)
        baseline = tmp / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        load_before = os.getloadavg()
        runs = {"before": [], "ours": []}
        for i in range(args.alternations):  # this VM drifts: the sides take turns going first
            sides = [("before", baseline), ("ours", REPO)]
            for name, tree in sides if i % 2 == 0 else sides[::-1]:
                work = tmp / f"w-{name}-{i}"  # fresh outputs: a finished stage would be skipped
                work.mkdir()
                for item in ("candidates.jsonl", "download"):  # both sides read the same files
                    (work / item).symlink_to(tmp / item)
                runs[name].append({s: min(v) for s, v in side(tree, work, args.rounds).items()})
    stages = {}
    for s in STAGES:
        ours, before = [r[s] for r in runs["ours"]], [r[s] for r in runs["before"]]
        stages[s] = {"ours_s": ours, "baseline_s": before,
                     "ours_over_baseline_median": round(statistics.median(
                         o / b for o, b in zip(ours, before)), 3)}
    print(json.dumps({
        "benchmark": "fixed_cost", "rows": 1000, "images": 1000, "rounds": args.rounds,
        "alternations": args.alternations, "baseline_commit": args.baseline, "stages": stages,
        "machine": {"cores": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg()}}, indent=1))


if __name__ == "__main__":
    main()
