"""`wit-builder stats` numbers on download-layout shards and stage outputs, local and remote."""

import json
import shutil
import tarfile

import fsspec
import pyarrow.parquet as pq
import pytest

from shard_maker import make_out_root
from wit_builder import cli
from wit_builder.errors import UserError
from wit_builder.stats.collect import collect, count_tar_samples


@pytest.fixture(scope="module")
def out_root(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("stats") / "OUT"
    made = make_out_root(shared_data / "images", root)
    return root, made


def test_download_shards(out_root):
    root, made = out_root
    s = collect(str(root / "download"))["stages"]["download"]
    tars = sorted((root / "download").glob("*.tar"))
    in_tars = {t.name: len({m.split(".")[0] for m in tarfile.open(t).getnames()}) for t in tars}
    assert s["shards"]["count"] == len(tars)
    assert {k: v["samples"] for k, v in s["shards"]["per_shard"].items()} == in_tars
    assert s["shards"]["samples"] == sum(in_tars.values()) == made["fetched"]
    assert all(count_tar_samples(str(t)) == in_tars[t.name] for t in tars)
    assert s["rows"] == len(made["samples"])
    assert s["download"]["status"] == {"success": made["fetched"], "failed_to_download": 2}
    assert s["download"]["errors"] == {"HTTP Error 404: Not Found": 1, "timed out": 1}
    assert s["shards"]["download_totals"]["successes"] == made["fetched"]
    assert s["caption_chars"]["count"] == made["fetched"]
    sized = sum(1 for f in (root / "download").glob("*.parquet")
                for r in pq.read_table(f).to_pylist() if r["status"] == "success" and r["width"])
    assert s["image_sizes"]["width"]["count"] == sized >= made["fetched"] - 1


def test_stage_outputs_and_entry_counts(out_root):
    root, _ = out_root
    stats = collect(str(root))
    assert list(stats["stages"]) == ["filter", "balance", "download"]
    assert [p["stage"] for p in stats["pipeline"]] == ["filter", "balance"]
    f = stats["stages"]["filter"]
    assert f["languages"] == {"en": 3, "fr": 1}
    assert f["caption_chars"]["max_bin"] == 1000  # clipped
    assert stats["pipeline"][0]["drops"] == {"language": 3, "too_few_words": 1}
    e = stats["stages"]["balance"]["entry_counts"]
    assert e["t"] == 50 and e["entries"] == 100
    assert e["head_entries"] == sum(1000 // (i + 1) > 50 for i in range(100))
    assert e["pairs_before"] == sum(1000 // (i + 1) for i in range(100))
    assert e["head_share_after"] < e["head_share_before"]
    assert e["rank_before"][0] == [1, 1000] and e["rank_after"][0] == [1, 50]
    assert e["top"][0] == [0, 1000, 50]


def test_remote_paths_read_the_same(out_root):
    # any fsspec URL goes through the same code as s3://
    root, _ = out_root
    fs = fsspec.filesystem("memory")
    fs.put(str(root / "download"), "/statsroot/download", recursive=True)
    local = collect(str(root / "download"))["stages"]["download"]
    remote = collect("memory://statsroot/download")["stages"]["download"]
    for key in ("rows", "download", "caption_chars", "image_sizes"):
        assert remote[key] == local[key]
    assert remote["shards"]["samples"] == local["shards"]["samples"]


def test_cli_json_and_table(out_root, capsys):
    root, made = out_root
    assert cli.main(["stats", str(root / "download"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stages"]["download"]["shards"]["samples"] == made["fetched"]
    assert cli.main(["stats", str(root)]) == 0
    table = capsys.readouterr().out
    assert "filter" in table and "balance" in table and "head share" in table


def test_bad_paths(tmp_path, capsys):
    with pytest.raises(UserError):
        collect(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert cli.main(["stats", str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cut_stats_file_is_an_unfinished_shard(out_root, tmp_path, capsys):
    # img2dataset writes NNNNN_stats.json in place: a kill can leave it cut
    root, made = out_root
    folder = tmp_path / "download"
    shutil.copytree(root / "download", folder)
    cut = sorted(folder.glob("*_stats.json"))[0]
    cut.write_bytes(cut.read_bytes()[:7])
    shard = cut.name.replace("_stats.json", ".tar")
    sh = collect(str(folder))["stages"]["download"]["shards"]
    assert sh["unfinished"] == [shard] and shard not in sh["per_shard"]
    assert sh["count"] == len(list(folder.glob("*.tar"))) - 1
    assert cli.main(["stats", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "unfinished shards" in table and shard in table
