"""Finalize on img2dataset-layout shards of real photos: dedup, decontamination, filters, balance,
resharding readable by webdataset, and counts that agree everywhere."""

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from shard_maker import make_download
from wit_builder import cli
from wit_builder.phash import image_facts

PER_SHARD = 7


@pytest.fixture(scope="module")
def finalized(shared_data, spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("finalize")
    made = make_download(shared_data / "images", root / "download")
    (root / "download" / "manifest.json").write_text(json.dumps({"stage": "download"}))
    (root / "download" / "_SUCCESS").write_text("")
    args = ["finalize", "--input", str(root / "download"), "--out", str(root / "out"),
            "--eval-images", str(shared_data / "images" / "flickr8k_dev" / "val"),
            "--samples-per-shard", str(PER_SHARD), "--t", "6"]
    assert cli.main(args) == 0
    out = root / "out" / "finalize"
    return {"out": out, "root": root, "made": made, "args": args,
            "manifest": json.loads((out / "manifest.json").read_text())}


def _read(out):
    urls = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_shards_read_back_with_webdataset(finalized):
    out, manifest = finalized["out"], finalized["manifest"]
    samples = _read(out)
    assert len(samples) == manifest["rows_out"] > 0
    for s in samples:
        assert {"jpg", "txt", "json"} <= set(s), s["__key__"]
        meta = json.loads(s["json"])
        assert len(meta["phash"]) == 16 and meta["uid"]
        assert Image.open(io.BytesIO(s["jpg"])).size == (meta["width"], meta["height"])
        assert s["txt"].decode() == meta["text"]
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)
    # fixed-size shards: all full but the last
    names = sorted(p.name for p in out.glob("*.tar"))
    assert names == [f"{i:05d}.tar" for i in range(len(names))]
    sizes = json.loads((out / "sizes.json").read_text())
    assert list(sizes) == names
    assert all(n == PER_SHARD for n in list(sizes.values())[:-1]) and 0 < sizes[names[-1]] <= PER_SHARD


def test_counts_agree_with_tars(finalized):
    out = finalized["out"]
    sizes = json.loads((out / "sizes.json").read_text())
    for name, n in sizes.items():
        with tarfile.open(out / name) as tar:
            members = tar.getnames()
        assert len({m.split(".")[0] for m in members}) == n == len(members) // 3
        stats = json.loads((out / name.replace(".tar", "_stats.json")).read_text())
        assert stats["count"] == n
        assert stats["tar_bytes"] == (out / name).stat().st_size
    assert sum(sizes.values()) == finalized["manifest"]["rows_out"]


def test_drop_reasons_and_invariant(finalized):
    m, made = finalized["manifest"], finalized["made"]
    drops = m["drops"]
    assert m["rows_in"] == made["fetched"] == m["rows_out"] + sum(drops.values())
    assert drops["undecodable_image"] == 1
    assert drops["too_small"] == 1
    assert drops["bad_aspect"] == 1
    assert drops["duplicate_image"] == 1
    assert drops["eval_contamination"] == 1
    # 6 coco_mini copies of train photos + 3 resized/re-compressed variants
    assert drops["near_duplicate"] == len(made["overlap"]) + len(made["variants_of"])
    assert drops["balanced_out"] > 0
    assert m["shards"] == len(list(finalized["out"].glob("*.tar")))


def test_drops_are_recorded_with_their_source(finalized):
    """drops/ names every dropped sample: uid, reason, source shard and key in that shard."""
    m, made = finalized["manifest"], finalized["made"]
    rows = pq.read_table(finalized["out"] / "drops").to_pylist()
    assert len(rows) == sum(m["drops"].values())
    counted = {}
    for r in rows:
        counted[r["reason"]] = counted.get(r["reason"], 0) + 1
    assert counted == m["drops"]
    by_uid = {s["uid"]: s for s in made["samples"]}
    for r in rows:
        with tarfile.open(r["source_shard"]) as tar:
            meta = json.loads(tar.extractfile(r["key"] + ".json").read())
        assert meta["uid"] == r["uid"] and r["uid"] in by_uid
    tiny = [r for r in rows if r["reason"] == "too_small"]
    assert by_uid[tiny[0]["uid"]]["url"] == "http://images.test/bad/tiny.jpg"


def test_near_duplicates_collapse_and_val_photo_is_gone(finalized, shared_data):
    samples = _read(finalized["out"])
    metas = [json.loads(s["json"]) for s in samples]
    hashes = [int(m["phash"], 16) for m in metas]
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert bin(hashes[i] ^ hashes[j]).count("1") > 4, (metas[i]["url"], metas[j]["url"])
    urls = {m["url"] for m in metas}
    assert not any(u.startswith("http://images.test/variant/") for u in urls)
    assert not any(finalized["made"]["val_photo"] in u for u in urls)
    # of each cluster the smallest uid stays (unless balancing drops it later), the others go
    made = {s["url"]: s for s in finalized["made"]["samples"]}
    for name in finalized["made"]["variants_of"]:
        pair = [made[f"http://images.test/train/{name}"], made[f"http://images.test/variant/{name}"]]
        assert max(pair, key=lambda s: s["uid"])["url"] not in urls


def test_exact_balance_caps_entries(finalized, spark):
    counts = spark.read.parquet(str(finalized["out"] / "entry_counts")).toPandas()
    assert set(counts.columns) == {"entry_id", "count_before", "count_after"}
    assert (counts["count_before"] > 6).any()
    assert (counts["count_after"] <= counts["count_before"]).all()
    metas = [json.loads(s["json"]) for s in _read(finalized["out"])]
    for e, after in zip(counts["entry_id"], counts["count_after"]):
        assert after == sum(e in m["entry_ids"] for m in metas)


def test_phash_matches_the_json(finalized):
    sample = _read(finalized["out"])[0]
    _, _, phash = image_facts(sample["jpg"])
    assert json.loads(sample["json"])["phash"] == format(phash & (2**64 - 1), "016x")


def test_rerun_is_skipped_and_bad_input_is_a_user_error(finalized, capsys):
    root = finalized["root"]
    capsys.readouterr()
    assert cli.main(finalized["args"]) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert cli.main(["finalize", "--input", str(root / "nothing"), "--out", str(root / "x")]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli.main(["finalize", "--input", str(root / "download"), "--out", str(root / "x"),
                     "--set", "finalize.bands=3"]) == 2
    assert "bands" in capsys.readouterr().err


def test_stats_command_agrees_with_the_tars(finalized, capsys):
    capsys.readouterr()
    assert cli.main(["stats", str(finalized["out"]), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["stages"]["finalize"]
    sizes = json.loads((finalized["out"] / "sizes.json").read_text())
    in_tars = {}
    for sample in _read(finalized["out"]):
        shard = sample["__url__"].rsplit("/", 1)[1]
        in_tars[shard] = in_tars.get(shard, 0) + 1
    assert {k: v["samples"] for k, v in s["shards"]["per_shard"].items()} == in_tars == sizes
    assert s["shards"]["consistent"] is True
    assert s["rows"] == s["shards"]["samples"] == finalized["manifest"]["rows_out"]
    assert s["caption_chars"]["count"] == s["image_sizes"]["width"]["count"] == s["rows"]
    assert s["entry_counts"]["t"] == 6
    assert s["entry_counts"]["pairs_after"] == sum(len(json.loads(x["json"])["entry_ids"])
                                                   for x in _read(finalized["out"]))


def test_report_shows_real_finalize_drops(finalized, capsys, tmp_path):
    """The report's drop grids read the images that finalize really dropped, from drops/."""
    page = tmp_path / "report.html"
    assert cli.main(["stats", str(finalized["root"] / "out"), "--html", str(page)]) == 0
    text = page.read_text()
    for reason in ("too_small", "near_duplicate", "eval_contamination"):
        assert f'<div class="grid drops" data-reason="{reason}">' in text, reason
    assert "a tiny photo" in text
    assert text.count('<figure class="sample"><img alt="sample ') >= 16


def _contents(out):
    """Every output shard's members (name -> bytes) and Parquet rows: what a reader sees."""
    import pyarrow.parquet as pq

    shards = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            shards[tar_path.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        shards[tar_path.name]["parquet"] = pq.read_table(tar_path.with_suffix(".parquet")).to_pylist()
    return shards


def test_spark_plan_gives_the_same_result(finalized):
    # the driver decides up to spark.driver_rows; force the Spark plan and compare everything
    root = finalized["root"]
    args = [a if a != str(root / "out") else str(root / "spark_plan") for a in finalized["args"]]
    args += ["--set", "spark.driver_rows=0"]
    assert cli.main(args) == 0
    out = root / "spark_plan" / "finalize"
    m = json.loads((out / "manifest.json").read_text())
    for key in ("rows_in", "rows_out", "drops", "shards", "tar_bytes", "eval_images"):
        assert m[key] == finalized["manifest"][key], key
    assert (out / "sizes.json").read_text() == (finalized["out"] / "sizes.json").read_text()
    assert _contents(out) == _contents(finalized["out"])
    import pyarrow.parquet as pq
    assert pq.read_table(out / "entry_counts").equals(pq.read_table(finalized["out"] / "entry_counts"))
