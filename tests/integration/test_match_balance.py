"""match and balance as Spark stages on the real candidates: exact results, counts, partition-independence."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder import pipeline
from wit_builder.cli import main
from wit_builder.config import load_config
from wit_builder.match.matcher import Matcher
from wit_builder.queries.listfile import load_queries

COMMITTED = str(Path(__file__).resolve().parents[2] / "query_lists" / "wit-queries-en.json.gz")


def _rows(folder, columns=None) -> pa.Table:
    """A stage output's Parquet files (its manifest and subfolders left out)."""
    return pa.concat_tables(pq.read_table(p, columns=columns) for p in sorted(Path(folder).glob("*.parquet")))


def _candidates(shared_data, folder: Path, files: int) -> Path:
    """The real alt texts + img2dataset captions in extract's row schema, split into `files`."""
    cands = shared_data / "candidates"
    rows = [json.loads(line) for line in open(cands / "alt_text_pairs.jsonl", encoding="utf-8")]
    pairs = [(r["url"], r["text"]) for r in rows]
    table = pq.read_table(cands / "img2dataset_10k.parquet")
    pairs += [(u or "", t or "") for u, t in zip(table.column("URL").to_pylist(), table.column("TEXT").to_pylist())]
    uids = [hashlib.blake2b(f"{u}\x00{t}".encode(), digest_size=8).hexdigest() for u, t in pairs]
    full = pa.table({"uid": uids, "url": [u for u, _ in pairs], "text": [t for _, t in pairs],
                     "page_url": pa.nulls(len(pairs), pa.string()), "source": ["test"] * len(pairs),
                     "kind": ["alt"] * len(pairs)})
    folder.mkdir(parents=True)
    step = -(-len(pairs) // files)
    for i in range(files):
        pq.write_table(full.slice(i * step, step), folder / f"part-{i:02d}.parquet")
    return folder


@pytest.fixture(scope="module")
def matched(shared_data, spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("match")
    inputs = _candidates(shared_data, root / "candidates", files=3)
    cfg = load_config(overrides=[f"match.queries={COMMITTED}"])
    run = pipeline.execute("match", spark, cfg, [str(inputs)], str(root / "out"))
    return root, inputs, run


def test_match_stage_equals_the_matcher(matched):
    root, inputs, run = matched
    source = pq.read_table(inputs)
    expected = Matcher(load_queries(COMMITTED)).match(source.column("text")).to_pylist()
    want = sorted((u, ids) for u, ids in zip(source.column("uid").to_pylist(), expected) if ids)
    out = _rows(root / "out" / "match")
    got = sorted(zip(out.column("uid").to_pylist(), out.column("entry_ids").to_pylist()))
    assert got == want
    m = run.manifest
    assert m["rows_in"] == source.num_rows and m["rows_out"] == len(want)
    assert m["drops"] == {"no_match": source.num_rows - len(want)}
    assert m["queries"]["entries"] == len(load_queries(COMMITTED))
    assert out.schema.field("entry_ids").type == pa.list_(pa.int32())


def _balance(spark, match_dir: str, out: Path, t: int, partitions: int):
    staged = out / "in"
    spark.read.parquet(f"{match_dir}/*.parquet").repartition(partitions).write.parquet(str(staged))
    cfg = load_config(overrides=[f"balance.t={t}", "balance.seed=7"])
    return pipeline.execute("balance", spark, cfg, [str(staged)], str(out))


def test_balance_is_partition_independent_and_counts(matched, spark, tmp_path):
    root, _, _ = matched
    match_dir = str(root / "out" / "match")
    a = _balance(spark, match_dir, tmp_path / "a", t=30, partitions=1)
    b = _balance(spark, match_dir, tmp_path / "b", t=30, partitions=5)
    uids = lambda run: sorted(_rows(run.path, ["uid"]).column("uid").to_pylist())  # noqa: E731
    assert uids(a) == uids(b)
    assert a.manifest["rows_out"] < a.manifest["rows_in"] and a.manifest["drops"].keys() == {"balanced_out"}
    counts = pq.read_table(Path(a.path) / "entry_counts").to_pandas()
    assert (counts["count_after"] <= counts["count_before"]).all()
    tail = counts[counts["count_before"] <= 30]
    assert (tail["count_after"] == tail["count_before"]).all()
    head = counts[counts["count_before"] > 30]
    s = a.manifest["balance"]
    assert s["head_entries"] == len(head) > 0 and s["head_share_after"] < s["head_share_before"]
    assert s["pairs_before"] == int(counts["count_before"].sum())


def test_cli_match_needs_a_query_list(matched, tmp_path, capsys):
    _, inputs, _ = matched
    assert main(["match", "--input", str(inputs), "--out", str(tmp_path)]) == 2
    assert "no query list" in capsys.readouterr().err
    assert main(["match", "--input", str(inputs), "--queries", str(tmp_path / "none.json"),
                 "--out", str(tmp_path)]) == 2
    assert "query list not found" in capsys.readouterr().err


def test_cli_match_then_balance(matched, tmp_path):
    _, inputs, _ = matched
    (tmp_path / "meta.json").write_text(json.dumps(["dog", "cat", "the"]))  # MetaCLIP format
    assert main(["match", "--input", str(inputs), "--queries", str(tmp_path / "meta.json"),
                 "--out", str(tmp_path)]) == 0
    assert main(["balance", "--input", str(tmp_path / "match"), "--t", "5", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "balance" / "manifest.json").read_text())
    assert manifest["balance"]["max_count_after"] < manifest["balance"]["max_count_before"]
    assert manifest["rows_in"] == json.loads((tmp_path / "match" / "manifest.json").read_text())["rows_out"]
