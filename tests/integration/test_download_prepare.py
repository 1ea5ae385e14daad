"""Download's preparation on the driver (small local Parquet inputs) writes exactly what the
Spark preparation writes: the same rows, in the same order, with the same counts."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder.config import load_config
from wit_builder.download import prepare


def _plain_list(folder):
    """img2dataset-style upper-case columns, a user's uid column (kept as user_id, not our uid),
    repeated pairs whose other columns differ, missing URLs."""
    folder.mkdir()
    pq.write_table(pa.table({
        "URL": ["http://a.test/1.jpg", "http://a.test/1.jpg", None, "", "http://b.test/2.jpg",
                "http://b.test/2.jpg", "http://c.test/ä 3.jpg", "http://a.test/1.jpg"],
        "TEXT": ["a  cat", "a cat", "lost", "empty", "dog", "dog", None, "a cat "],
        "uid": ["x", "x", "y", None, "z", "w", "v", "u"],
        "page_url": ["http://p.test/2", "http://p.test/1", None, None, None, "http://p.test/3",
                     None, None],
        "lang": ["en", "de", None, "en", "en", None, "fr", "en"]}), folder / "list one.parquet")
    pq.write_table(pa.table({"URL": ["http://d.test/4.jpg", "http://b.test/2.jpg"],
                             "TEXT": ["bird", "dog"]}), folder / "list two.parquet")
    return folder


def _stage_folder(folder, queries):
    """A finished stage output (uids are ours) with entry ids into a query list."""
    folder.mkdir()
    pq.write_table(pa.table({
        "uid": ["b2", "a1", "a1", "c3"], "url": ["http://x.test/b", "http://x.test/a"] * 2,
        "text": ["two dogs", "a red bus", "a red bus", "a dog"],
        "page_url": [None, "http://p.test/z", "http://p.test/a", None],
        "source": ["s.warc.gz"] * 4, "kind": ["alt"] * 4,
        "entry_ids": pa.array([[1], [0], [0, 1], None], pa.list_(pa.int32()))}),
        folder / "part-0.parquet")
    pq.write_table(pa.table({"entry_id": [0]}), folder / "part-1-ignored.json")
    (folder / "manifest.json").write_text("{}")
    (folder / "_SUCCESS").write_text("")
    queries.write_text(json.dumps(["red bus", "dog"]))
    return folder


def _both_ways(spark, cfg, inputs, tmp_path, monkeypatch):
    found = {}
    for way in ("driver", "spark"):
        if way == "spark":
            monkeypatch.setattr(prepare, "prepare_on_driver", lambda *args: None)
        out = tmp_path / way
        prepared = prepare.prepare(spark, cfg, inputs, str(out))
        files = sorted((out / prepare.INPUT_DIR).glob("*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        found[way] = ({k: v for k, v in prepared.items() if k != "key"}, rows)
    return found


def _both_ways_driver_taken(spark, cfg, inputs, tmp_path, monkeypatch):
    """`_both_ways`, checking that the driver path was taken and agrees with Spark's."""
    calls = []
    real = prepare.prepare_on_driver
    monkeypatch.setattr(prepare, "prepare_on_driver",
                        lambda *args: calls.append(1) or real(*args))
    found = _both_ways(spark, cfg, inputs, tmp_path, monkeypatch)
    assert calls, "the driver path was not taken"
    assert found["driver"] == found["spark"]
    return found


def test_plain_lists_prepare_the_same_on_the_driver(spark, tmp_path, monkeypatch):
    folder = _plain_list(tmp_path / "in")
    cfg = load_config(None, ["download.samples_per_shard=3"])
    found = _both_ways_driver_taken(spark, cfg, [str(folder)], tmp_path, monkeypatch)
    prepared, rows = found["driver"]
    assert prepared["rows_in"] == 10 and prepared["drops"] == {"missing_url": 2,
                                                                "duplicate_pair": 4}
    assert [r["uid"] for r in rows] == sorted(r["uid"] for r in rows) and "x" not in rows[0]["uid"]
    # the user's uid travels as user_id; of one pair's rows, the kept one's (nulls sort first)
    assert {r["url"]: r["user_id"] for r in rows} == {
        "http://a.test/1.jpg": "u", "http://b.test/2.jpg": "z", "http://c.test/ä 3.jpg": "v",
        "http://d.test/4.jpg": None}


@pytest.mark.parametrize("kind", ["int64", "int32", "string"])
def test_a_plain_lists_uid_becomes_user_id_the_same_on_the_driver(spark, tmp_path, monkeypatch,
                                                                     kind):
    """Numeric user ids (LAION-style keys) are written as Spark casts them, both ways."""
    folder = tmp_path / "in"
    folder.mkdir()
    ids = [12, -3, 12, None] if kind != "string" else ["12", "-3", "12", None]
    pq.write_table(pa.table({"url": [f"http://a.test/{i}.jpg" for i in range(4)],
                             "text": ["a", "b", "c", "d"],
                             "uid": pa.array(ids, getattr(pa, kind)())}), folder / "l.parquet")
    calls = []
    real = prepare.prepare_on_driver
    monkeypatch.setattr(prepare, "prepare_on_driver",
                        lambda *args: calls.append(1) or real(*args))
    found = _both_ways(spark, load_config(), [str(folder)], tmp_path, monkeypatch)
    assert calls and found["driver"] == found["spark"]
    prepared, rows = found["driver"]
    assert prepared["rows"] == 4  # equal user ids do not merge different pairs
    assert sorted((r["url"][-5], r["user_id"]) for r in rows) == [
        ("0", "12"), ("1", "-3"), ("2", "12"), ("3", None)]


def test_stage_outputs_prepare_the_same_on_the_driver(spark, tmp_path, monkeypatch):
    queries = tmp_path / "q.json"
    folder = _stage_folder(tmp_path / "balance", queries)
    cfg = load_config(None, [f"match.queries={queries}"])
    found = _both_ways(spark, cfg, [str(folder)], tmp_path, monkeypatch)
    assert found["driver"] == found["spark"]
    prepared, rows = found["driver"]
    assert prepared["drops"] == {"duplicate_pair": 1}
    assert {r["uid"]: r["entries"] for r in rows} == {"a1": ["red bus"], "b2": ["dog"],
                                                      "c3": []}
    assert {r["user_id"] for r in rows} == {None}  # a stage output's uid is ours


def test_several_input_files_split_as_spark_splits_them(spark, tmp_path, monkeypatch):
    """More rows than one input file holds: the driver hashes uids into files as Spark's
    repartition does (a non-ASCII text and repeated pairs included)."""
    folder = tmp_path / "in"
    folder.mkdir()
    urls = [f"http://h{i % 7}.test/{i}.jpg" for i in range(130)] + ["http://a.test/1.jpg"] * 3
    pq.write_table(pa.table({"url": urls, "text": [f"photo {i} é" for i in range(130)] +
                             ["same"] * 3}), folder / "list.parquet")
    cfg = load_config(None, ["download.samples_per_shard=2"])  # 40 rows a file: 4 files
    found = _both_ways_driver_taken(spark, cfg, [str(folder)], tmp_path, monkeypatch)
    assert len(list((tmp_path / "driver" / prepare.INPUT_DIR).glob("*.parquet"))) == 4
    assert found["driver"][0]["shards"] == sum(
        -(-pq.read_metadata(f).num_rows // 2)
        for f in (tmp_path / "spark" / prepare.INPUT_DIR).glob("*.parquet"))


@pytest.mark.parametrize("case", ["too many rows", "csv"])
def test_what_the_driver_leaves_to_spark(tmp_path, case, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "csv":
        (folder / "c.csv").write_text("url,text\nhttp://a.test/1.jpg,a cat\n")
    else:
        pq.write_table(pa.table({"url": ["http://a.test/%d.jpg" % i for i in range(5)],
                                 "text": ["t"] * 5}), folder / "c.parquet")
    cfg = load_config(None, ["spark.driver_rows=4"])
    assert prepare.prepare_on_driver(cfg, [str(folder)], "", str(tmp_path / "o"), 4) is None
