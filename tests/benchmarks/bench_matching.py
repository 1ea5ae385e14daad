"""Matching throughput vs MetaCLIP's way, and end-to-end match + balance on Spark local mode.

    .venv/bin/python tests/benchmarks/bench_matching.py [--quick] [--no-spark]

Texts: the real alt texts and captions of ../shared/data/candidates/ (13,073), repeated to
--texts. List: a COPY of query_lists/wit-queries-en.json.gz padded to --entries with generated
two-word entries (random pairs of the list's own single words, seeded), since the built list
is smaller than CLIP's 500k; the committed list is never changed.
Baseline (same process, same texts, same list): MetaCLIP's substr_matching, i.e. pyahocorasick
with (idx, key) values, MetaCLIP's spacing in Python, one automaton.iter per text.
Both run on one core; matches are compared text by text and must be identical.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from matching_reference import metaclip_automaton, metaclip_match  # noqa: E402

from wit_builder.match.matcher import Matcher  # noqa: E402
from wit_builder.queries.listfile import load_queries  # noqa: E402

DATA = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))
LIST = REPO / "query_lists" / "wit-queries-en.json.gz"
BATCH = 10_000  # Spark's Arrow batch size ([spark] arrow_batch_rows)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def real_texts() -> list[str]:
    cands = DATA / "candidates"
    texts = [json.loads(line)["text"] for line in open(cands / "alt_text_pairs.jsonl", encoding="utf-8")]
    return texts + [t or "" for t in pq.read_table(cands / "img2dataset_10k.parquet").column("TEXT").to_pylist()]


def padded_list(size: int) -> tuple[list[str], int]:
    entries = load_queries(str(LIST))
    seen = set(entries)
    words = sorted(e for e in entries if " " not in e)
    rng = random.Random(0)
    padded = list(entries)
    while len(padded) < size:
        candidate = f"{rng.choice(words)} {rng.choice(words)}"
        if candidate not in seen:
            seen.add(candidate)
            padded.append(candidate)
    return padded, len(padded) - len(entries)


def timed(fn):
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_matching(n_texts: int, n_entries: int) -> dict:
    base = real_texts()
    texts = (base * (n_texts // len(base) + 1))[:n_texts]
    entries, generated = padded_list(n_entries)
    batches = [pa.array(texts[i:i + BATCH], pa.string()) for i in range(0, n_texts, BATCH)]

    before = rss_mb()
    matcher, ours_build = timed(lambda: Matcher(entries))
    ours_mem = rss_mb() - before
    before = rss_mb()
    automaton, base_build = timed(lambda: metaclip_automaton(entries))
    base_mem = rss_mb() - before

    # interleaved batch by batch, so both see the same machine load; CPU time = per core
    ours_cpu = base_cpu = ours_wall = base_wall = 0.0
    texts_matched = pairs = mismatches = 0
    gc.collect()
    for batch in batches:
        wall, cpu = time.perf_counter(), time.process_time()
        ours = matcher.match(batch)
        ours_wall += time.perf_counter() - wall
        ours_cpu += time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        theirs = [metaclip_match(automaton, t) for t in batch.to_pylist()]
        base_wall += time.perf_counter() - wall
        base_cpu += time.process_time() - cpu
        mismatches += sum(a != sorted(b) for a, b in zip(ours.to_pylist(), theirs))
        texts_matched += sum(bool(ids) for ids in theirs)
        pairs += sum(map(len, theirs))
    assert mismatches == 0, f"{mismatches} texts differ"
    return {
        "texts": n_texts, "distinct_texts": len(base), "entries": len(entries),
        "generated_padding_entries": generated, "batch_rows": BATCH,
        "texts_matched": texts_matched, "pairs": pairs,
        "identical_matches": True,
        "ours": {"texts_per_s_per_core": round(n_texts / ours_cpu), "cpu_s": round(ours_cpu, 2),
                 "wall_s": round(ours_wall, 2), "automaton_build_s": round(ours_build, 2),
                 "automaton_rss_mb": round(ours_mem, 1)},
        "baseline_metaclip_pyahocorasick": {
            "texts_per_s_per_core": round(n_texts / base_cpu), "cpu_s": round(base_cpu, 2),
            "wall_s": round(base_wall, 2), "automaton_build_s": round(base_build, 2),
            "automaton_rss_mb": round(base_mem, 1)},
        "speedup_per_core": round(base_cpu / ours_cpu, 2),
        "speedup_wall": round(base_wall / ours_wall, 2),
    }


def bench_spark(n_candidates: int) -> dict:
    """match + balance as stages on Spark local[2], on real texts with distinct uids."""
    import hashlib

    from wit_builder import pipeline
    from wit_builder.config import load_config
    from wit_builder.spark import get_spark

    base = real_texts()
    with tempfile.TemporaryDirectory() as tmp:
        texts = [base[i % len(base)] for i in range(n_candidates)]
        urls = [f"https://example.org/{i}.jpg" for i in range(n_candidates)]
        uids = [hashlib.blake2b(f"{u}\x00{t}".encode(), digest_size=8).hexdigest() for u, t in zip(urls, texts)]
        folder = Path(tmp) / "candidates"
        folder.mkdir()
        table = pa.table({"uid": uids, "url": urls, "text": texts, "kind": ["alt"] * n_candidates})
        for i in range(4):
            pq.write_table(table.slice(i * (n_candidates // 4 + 1), n_candidates // 4 + 1),
                           folder / f"part-{i}.parquet")
        spark = get_spark(master="local[2]", conf={"spark.driver.memory": "1g"})
        cfg = load_config(overrides=[f"match.queries={LIST}", "balance.t=50"])
        start = time.perf_counter()
        match = pipeline.execute("match", spark, cfg, [str(folder)], tmp, log=lambda _: None)
        matched_s = time.perf_counter() - start
        balance = pipeline.execute("balance", spark, cfg, [match.path], tmp, log=lambda _: None)
        total_s = time.perf_counter() - start
        spark.stop()
    return {"master": "local[2]", "candidates": n_candidates, "list_entries": match.manifest["queries"]["entries"],
            "matched": match.manifest["rows_out"], "kept_after_balance_t50": balance.manifest["rows_out"],
            "match_s": round(matched_s, 1), "match_plus_balance_s": round(total_s, 1),
            "candidates_per_s": round(n_candidates / total_s),
            "note": "includes per-executor automaton builds and Spark job overheads"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100k texts, 200k Spark candidates")
    parser.add_argument("--texts", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--spark-candidates", type=int, default=1_000_000)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.spark_candidates = 100_000, 200_000
    import ahocorasick
    import numpy

    result = {"benchmark": "matching", "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                                                   "load_avg_at_start": os.getloadavg()[0]},
              "versions": {"python": platform.python_version(), "pyarrow": pa.__version__,
                           "numpy": numpy.__version__,
                           "pyahocorasick": getattr(ahocorasick, "__version__", "?")},
              "matching": bench_matching(args.texts, args.entries)}
    if not args.no_spark:
        os.environ.setdefault("WIT_DRIVER_MEMORY", "1g")
        result["spark_end_to_end"] = bench_spark(args.spark_candidates)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
