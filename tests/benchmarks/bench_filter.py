"""The filter stage's per-batch work (`annotate_batch`: lid.176, canonical URLs, rules 1-4), rows/s
per core: ours against the per-row code of before (tests/filter_reference.py, the code of commit
5e12195: the fastText wrapper once per text, `canonical_url` once per URL, every rule over the
whole batch), in the same process, in turn, best of --repeat, at two sizes.

Input: the shared real alt texts (alt_text_pairs.jsonl, 3,073 multilingual alt texts) repeated
to the size, copy k with `copy=k` in its image URL's query (as bench_curate.py does), in Arrow
batches of [spark] arrow_batch_rows rows. The texts repeat in every batch (about 3 times per
batch of 10k); a second input, `distinct_texts`, gives every row its own text (copy k's text
prefixed with "k "; a few languages change), so the gain that does not come from repeated texts
is reported too. Both sides' outputs are compared, column by column.

    .venv/bin/python tests/benchmarks/bench_filter.py [--sizes 100000,300000] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))

import filter_reference  # noqa: E402
from bench_output import emit  # noqa: E402
from wit_builder.config import load_config  # noqa: E402
from wit_builder.filter import dedup  # noqa: E402
from wit_builder.filter import rules as filters  # noqa: E402


def make_batches(rows: int, batch_rows: int, distinct_texts: bool) -> list[pa.RecordBatch]:
    pairs = [json.loads(line) for line in open(SHARED / "candidates" / "alt_text_pairs.jsonl")]
    urls, texts = [], []
    k = 0
    while len(urls) < rows:
        for p in pairs:
            url = p["url"]
            if url.startswith("http") and k:
                url += ("&" if "?" in url else "?") + f"copy={k}"
            urls.append(url)
            texts.append(f"{k} {p['text']}" if distinct_texts and k and p["text"] else p["text"])
        k += 1
    table = pa.table({"uid": [f"{i:016x}" for i in range(rows)], "url": urls[:rows], "text": texts[:rows]})
    return table.to_batches(max_chunksize=batch_rows)


def _run(annotate, batches, rules, repeat: int) -> tuple[float, list]:
    best, out = None, None
    for _ in range(repeat):
        dedup.canonical_url.cache_clear()  # both sides start cold
        cpu = time.process_time()
        out = [annotate(b, rules) for b in batches]
        cpu = time.process_time() - cpu
        best = min(best or cpu, cpu)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,300000")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    cfg = load_config(None)
    rules = filters.Rules.from_config(cfg.filter)
    result = {"benchmark": f"filter annotate_batch per core (CPU time, best of {a.repeat})",
              "before": "tests/filter_reference.py (the per-row code of commit 5e12195)",
              "batch_rows": cfg.spark.arrow_batch_rows, "cores": os.cpu_count(),
              "load_average_at_start": os.getloadavg(), "runs": []}
    warm = make_batches(2000, 1000, False)
    _run(filters.annotate_batch, warm, rules, 1), _run(filter_reference.annotate_batch, warm, rules, 1)
    for distinct in (False, True):
        for size in [int(s) for s in a.sizes.split(",")]:
            batches = make_batches(size, cfg.spark.arrow_batch_rows, distinct)
            before_s, before = _run(filter_reference.annotate_batch, batches, rules, a.repeat)
            ours_s, ours = _run(filters.annotate_batch, batches, rules, a.repeat)
            same = all(x.equals(y) for x, y in zip(ours, before))
            assert same, "outputs differ"
            kept = sum(b.column("drop_reason").null_count for b in ours)
            result["runs"].append({
                "input": "distinct_texts" if distinct else "alt_texts_repeated", "rows": size,
                "distinct_texts_per_batch": round(sum(len(set(b.column("text").to_pylist()))
                                                      for b in batches) / len(batches)),
                "kept_by_rules_1_4": kept,
                "ours": {"cpu_s": round(ours_s, 3), "rows_per_s_per_core": round(size / ours_s)},
                "before": {"cpu_s": round(before_s, 3), "rows_per_s_per_core": round(size / before_s)},
                "same_output": same, "ratio_ours_over_before": round(before_s / ours_s, 2)})
            print(result["runs"][-1]["input"], size, result["runs"][-1]["ratio_ours_over_before"],
                  file=sys.stderr)
    emit(result, a.out)


if __name__ == "__main__":
    main()
