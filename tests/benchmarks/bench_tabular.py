"""Tabular extraction (extract_file on candidate lists), candidates/s per core: ours (Arrow
columns, orjson for JSONL) against the per-row reader of before (the code of commit 5e12195,
unpacked with git archive), same files, same run, in turn, at two sizes.

Input: bench_curate.py's curate input (the shared real alt texts, alt_text_pairs.jsonl, repeated,
copy k with `copy=k` in its URL), one JSONL file per size, plus the same rows as Parquet and CSV.
Each measurement is a fresh subprocess (CPU time of extract_file, best of --repeat); both sides
also report a digest of their rows and tally, which must be equal.

    .venv/bin/python tests/benchmarks/bench_tabular.py [--sizes 100000,300000] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_curate  # noqa: E402
from bench_output import emit  # noqa: E402

BEFORE = "5e12195"
MEASURE = """
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
from wit_builder.config import load_config
from wit_builder.extract.stage import InputFile, Options, extract_file
path, fmt, repeat = sys.argv[2], sys.argv[3], int(sys.argv[4])
opts = Options.from_config(load_config(None, ["extract.page_url_column=page_url"]))
best = None
for _ in range(repeat):
    wall, cpu = time.perf_counter(), time.process_time()
    batches = list(extract_file(InputFile(path, fmt), opts))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    best = min(best or (cpu, wall), (cpu, wall))
digest, tally = hashlib.sha256(), {}
for b in batches:
    if b.column("tally").null_count:
        for row in zip(*(b.column(c).to_pylist() for c in ("uid", "url", "text", "page_url"))):
            digest.update(repr(row).encode())
    else:
        tally.update(zip(b.column("tally").to_pylist(), b.column("n").to_pylist()))
rows = tally.get("rows_out", 0) + sum(v for k, v in tally.items() if k.startswith("drop:"))
print(json.dumps({"candidates": rows, "cpu_s": round(best[0], 3), "wall_s": round(best[1], 3),
                  "candidates_per_s_per_core": round(rows / best[0]), "tally": tally,
                  "rows_digest": digest.hexdigest()}))
"""


def _measure(code_root: Path, path: Path, fmt: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(code_root), str(path), fmt, str(repeat)],
                         check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,300000", help="rows of the generated input")
    ap.add_argument("--formats", default="jsonl,parquet,csv")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    result = {"benchmark": "tabular extract_file per core (CPU time, best of %d)" % a.repeat,
              "input": "bench_curate.make_inputs: shared alt_text_pairs.jsonl repeated",
              "before": f"per-row reader of commit {BEFORE}", "cores": os.cpu_count(),
              "load_average_at_start": os.getloadavg(), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="bench_tabular_") as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        subprocess.run(f"git archive {BEFORE} wit_builder | tar -x -C {old}", shell=True,
                       check=True, cwd=REPO)
        for size in [int(s) for s in a.sizes.split(",")]:
            folder = tmp / f"in{size}"
            folder.mkdir()
            rows = bench_curate.make_inputs(folder, size, files=1)
            jsonl = folder / "part-000.jsonl"
            table = pajson.read_json(jsonl)
            files = {"jsonl": jsonl, "parquet": folder / "part.parquet", "csv": folder / "part.csv"}
            pq.write_table(table, files["parquet"])
            pacsv.write_csv(table, files["csv"])
            entry = {"rows": rows, "formats": {}}
            for fmt in a.formats.split(","):
                before = _measure(old, files[fmt], fmt, a.repeat)
                ours = _measure(REPO, files[fmt], fmt, a.repeat)
                same = (before.pop("rows_digest") == ours.pop("rows_digest") and
                        before["tally"] == ours["tally"])
                assert same, (fmt, size, before["tally"], ours["tally"])
                entry["formats"][fmt] = {
                    "bytes": files[fmt].stat().st_size, "ours": ours, "before": before,
                    "same_rows_drops_uids": same,
                    "ratio_ours_over_before": round(ours["candidates_per_s_per_core"] /
                                                    before["candidates_per_s_per_core"], 2)}
                print(fmt, size, entry["formats"][fmt]["ratio_ours_over_before"], file=sys.stderr)
            result["sizes"].append(entry)
    emit(result, a.out)


if __name__ == "__main__":
    main()
