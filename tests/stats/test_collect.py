"""`wit-builder stats` numbers on download-layout shards and stage outputs, local and remote."""

import base64
import io
import json
import shutil
import tarfile

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from PIL import Image

from shard_maker import make_full_root, make_out_root
from wit_builder import cli
from wit_builder.errors import UserError
from wit_builder.stats import entries, plots
from wit_builder.stats import samples as samples_mod
from wit_builder.stats import report
from wit_builder.stats.collect import collect, count_tar_samples, to_json
from wit_builder.stats.samples import drop_samples


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


# --- the report's samples, entry names, original sizes and run facts (issue 14) -------------

@pytest.fixture(scope="module")
def full_root(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("stats_full") / "OUT"
    made = make_full_root(shared_data / "images", root)
    return root, made, collect(str(root), samples=8, drop_samples=2, seed=3)


def test_random_samples_are_seeded_from_the_final_shards(full_root):
    root, made, stats = full_root
    f = stats["stages"]["finalize"]
    assert "samples" not in stats["stages"]["download"]  # only the final shards are sampled
    items = f["samples"]
    assert len(items) == 8 and len({(i["shard"], i["key"]) for i in items}) == 8
    assert len({i["shard"] for i in items}) <= samples_mod.SAMPLE_SHARDS
    for item in items:
        thumb = Image.open(io.BytesIO(base64.b64decode(item["thumb"])))
        assert thumb.format == "JPEG" and max(thumb.size) <= 128
        with tarfile.open(root / "finalize" / item["shard"]) as tar:
            meta = json.loads(tar.extractfile(item["key"] + ".json").read())
        assert item["caption"] == meta["text"] and item["entries"] == meta["entries"]
        assert item["original_width"] == meta["original_width"]
    again = collect(str(root), samples=8, drop_samples=2, seed=3)["stages"]["finalize"]["samples"]
    assert [i["key"] for i in again] == [i["key"] for i in items]
    assert collect(str(root))["stages"]["finalize"].get("samples") is None  # off by default


def test_drop_samples_come_from_the_source_tars(full_root):
    _, made, stats = full_root
    d = stats["stages"]["finalize"]["drop_samples"]
    assert set(d) == {"too_small", "bad_aspect", "near_duplicate", "duplicate_image", "eval_contamination"}
    assert len(d["near_duplicate"]) == 2 and all(len(v) <= 2 for v in d.values())
    assert d["too_small"][0]["caption"] == "a tiny photo" and d["too_small"][0]["thumb"]
    assert made["val_photo"] in d["eval_contamination"][0]["url"]


def test_drop_samples_fall_back_to_the_download_folder(full_root, tmp_path):
    root, _, _ = full_root
    moved = tmp_path / "OUT"
    shutil.copytree(root, moved)
    drops = moved / "finalize" / "drops" / "part-00000.parquet"
    table = pq.read_table(drops).to_pylist()
    for r in table:  # the tars were at another place when finalize ran
        r["source_shard"] = "/somewhere/else/download/" + r["source_shard"].rsplit("/", 1)[1]
    pq.write_table(pa.Table.from_pylist(table), drops)
    d = collect(str(moved), samples=2, drop_samples=1)["stages"]["finalize"]["drop_samples"]
    assert d["too_small"][0]["caption"] == "a tiny photo"
    assert drop_samples(str(drops.parent), 1, 0, download=str(tmp_path / "nowhere")) == {}


def test_write_stats_writes_the_report_with_samples(full_root, tmp_path):
    from wit_builder.settings import Config

    root, _, _ = full_root
    out = tmp_path / "OUT2"
    shutil.copytree(root, out)
    report.write_stats(str(out), Config(), log=lambda _: None)
    page = (out / "stats" / "report.html").read_text()
    assert page.count('<figure class="sample">') >= report.SAMPLE_IMAGES
    assert '"thumb"' not in (out / "stats" / "stats.json").read_text()


def test_top_entries_have_names_and_cap_share(full_root):
    _, made, stats = full_root
    e = stats["stages"]["balance"]["entry_counts"]
    assert e["names"][0] == "dog" and e["names"][19] == "query 19"
    assert e["capped_entries"] == e["head_entries"]  # every entry above t was cut
    assert e["capped_share"] == pytest.approx(e["capped_entries"] / e["entries"])
    rows = report.top_entry_rows(e)
    assert rows[0][:5] == [1, "dog", 0, "1,000", "50"]
    page = report.render_html(stats)
    assert "<td>dog</td>" in page and "were cut to about t" in page


def test_a_balance_that_kept_every_pair_capped_nothing(tmp_path):
    """Entries above t whose pairs all stayed (before == after) were not capped."""
    pq.write_table(pa.table({"entry_id": [0, 1, 2], "count_before": [900, 700, 5],
                             "count_after": [900, 700, 5]}), tmp_path / "counts.parquet")
    e = entries.entry_count_stats(str(tmp_path), 50, top=3)
    assert e["head_entries"] == 2 and e["capped_entries"] == 0 and e["capped_share"] == 0
    assert e["pairs_before"] == e["pairs_after"]
    assert report.capped_text(e) == "2 entries had more than t pairs; none was cut"


def test_entry_names_of_a_stage_folder_from_the_sibling_match(full_root):
    root, _, _ = full_root
    e = collect(str(root / "balance"))["stages"]["balance"]["entry_counts"]
    assert e["names"][1] == "cat"


def test_original_sizes_before_the_resize(full_root):
    _, _, stats = full_root
    f = stats["stages"]["finalize"]
    assert f["original_sizes"]["width"]["count"] == f["image_sizes"]["width"]["count"] == f["rows"]
    assert f["original_sizes"]["width"]["mean"] > f["image_sizes"]["width"]["mean"]  # some were shrunk
    assert max(len(f["image_sizes"][s]["hist"]) for s in ("width", "height")) * 16 <= 256 + 16
    png = plots.plot_image_sizes(f["image_sizes"], f["original_sizes"])
    img = Image.open(io.BytesIO(base64.b64decode(png)))
    assert img.size[0] >= 1000  # drawn at the page width, two panels side by side


def test_pipeline_seconds_rows_per_second_jobs_config_versions(full_root):
    _, made, stats = full_root
    fin = next(p for p in stats["pipeline"] if p["stage"] == "finalize")
    assert fin["seconds"] == 12.5 and fin["spark_jobs"] == 17
    assert fin["rows_per_second"] == round(fin["rows_in"] / 12.5, 1)
    assert stats["stages"]["finalize"]["config"]["t"] == 6
    assert stats["stages"]["finalize"]["versions"]["pyspark"] == "3.5.1"
    page = report.render_html(stats)
    assert "<th>Spark jobs</th>" in page and "<th>rows/s</th>" in page and "<td class=\"num\">17</td>" in page
    assert "<h2>Config</h2>" in page and "samples_per_shard" in page
    assert "<h2>Versions</h2>" in page and "3.5.1" in page


def test_sample_cards_escape_captions():
    card = report._sample_card({"key": "k", "caption": '<script>alert("x")</script> & <b>', "thumb": "AAAA",
                                "entries": ["<i>dog</i>"], "width": 10, "height": 5})
    assert "<script" not in card and "<b>" not in card and "<i>" not in card
    assert "&lt;script&gt;" in card and "&amp;" in card and "&lt;i&gt;dog&lt;/i&gt;" in card
    assert '<img alt="sample k: &lt;script&gt;' in card


def test_json_leaves_thumbnails_out(full_root, tmp_path, capsys):
    root, _, stats = full_root
    assert "thumb" not in to_json(stats)
    assert '"thumb"' in to_json(stats, thumbs=True)
    assert cli.main(["stats", str(root / "finalize"), "--json", "--html", str(tmp_path / "r.html")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stages"]["finalize"]["samples"] and "thumb" not in data["stages"]["finalize"]["samples"][0]
    assert (tmp_path / "r.html").read_text().count('src="data:image/jpeg;base64,') >= 16


# --- the score stage: CLIP score distribution and the lowest / highest pairs (issue 15) -------

def test_scored_samples_name_their_entries_by_word(tmp_path):
    """A shard json without entry names (a download not given the query list) showed `#206` in
    the score section while every other section named the entry from the match stage's list."""
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps(["dog", "cat", "red kite"]))
    scored = {"lowest": [{"key": "1", "entry_ids": [2], "entries": []}],
              "highest": [{"key": "2", "entry_ids": [0, 1]}]}
    per_stage = {"match": {"manifest": {"queries": {"path": str(queries)}}},
                 "score": {"manifest": {}, "score_samples": scored}}
    entries.add_entry_names(str(tmp_path), {"match": "", "score": ""}, per_stage)
    assert scored["lowest"][0]["entries"] == ["red kite"]
    assert scored["highest"][0]["entries"] == ["dog", "cat"]
    page = "".join(report.score_html({"clip_score": {}, "score_samples": scored}))
    assert "entries: red kite" in page and "#2" not in page


def test_score_stage_report_shows_distribution_and_extreme_pairs(full_root, tmp_path):
    from shard_maker import make_score

    root, _, _ = full_root
    out = tmp_path / "OUT"
    shutil.copytree(root, out)
    summary = make_score(out)
    stats = collect(str(out), samples=4, drop_samples=1)
    s = stats["stages"]["score"]
    assert s["clip_score"]["threshold"] == 0.1 and stats["pipeline"][-1]["drops"]["low_clip_score"] > 0
    for side in ("lowest", "highest"):  # every pair the manifest names, with its image and score
        items = s["score_samples"][side]
        assert [(i["key"], i["clip_score"]) for i in items] == \
               [(p["key"], p["clip_score"]) for p in summary[side]]
        assert all(i["thumb"] and i["caption"] for i in items)
    assert s["score_samples"]["lowest"][0]["clip_score"] < s["score_samples"]["highest"][0]["clip_score"]

    page = report.render_html(stats)
    assert '<img alt="CLIP score distribution" src="data:image/png;base64,' in page
    for side in ("lowest", "highest"):
        grid = page.split(f'id="score-{side}">', 1)[1].split("</div>", 1)[0]
        assert grid.count('<figure class="sample"><img alt="sample ') == 3
        assert f"CLIP score {summary[side][0]['clip_score']:.3f}" in grid
    facts = dict(report.stage_facts(s))
    assert "kept when >= 0.1000" in facts["CLIP score"] and f"{summary['scored']:,} pairs scored" in facts["CLIP score"]
    assert "thumb" not in to_json(stats)


def test_score_section_without_samples_or_scores():
    """render_html on a score manifest alone (no thumbnails drawn): the histogram and no grid;
    a run that scored nothing says so instead of plotting."""
    hist = {"edges": [0.0, 0.1, 0.2, 0.3], "counts": [2, 5, 1]}
    cs = {"threshold": -1.0, "scored": 8, "mean": 0.15, "quantiles": {"0.1": 0.05, "0.5": 0.14, "0.9": 0.25},
          "histogram": hist, "lowest": [], "highest": []}
    stats = {"path": "OUT", "pipeline": [], "stages": {"score": {"path": "OUT/score", "clip_score": cs}}}
    page = report.render_html(stats)
    assert '<img alt="CLIP score distribution"' in page and 'id="score-lowest"' not in page
    stats["stages"]["score"]["clip_score"] = {"threshold": -1.0, "scored": 0}
    assert "CLIP score distribution: no data" in report.render_html(stats)
    assert plots.plot_clip_scores(None) is None


def test_json_goes_to_stdout_or_into_a_file_as_for_every_command(full_root, tmp_path, capsys):
    """`stats --json` printed while `eval --json FILE` wrote a file: every command that reports
    takes `--json [FILE]`, JSON on stdout instead of the lines, or into FILE beside them."""
    root, _, _ = full_root
    assert cli.main(["stats", str(root / "finalize"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"]["finalize"]  # the JSON alone
    target = tmp_path / "stats.json"
    assert cli.main(["stats", str(root / "finalize"), "--json", str(target)]) == 0
    assert "finalize" in capsys.readouterr().out and json.loads(target.read_text())["stages"]
    parser = cli.build_parser()
    for argv in (["stats", "OUT"], ["eval", "--checkpoint", "c.pt", "--retrieval", "v.tsv"],
                 ["doctor"]):
        assert parser.parse_args([*argv, "--json"]).json == "-"
        assert parser.parse_args([*argv, "--json", "r.json"]).json == "r.json"
        assert parser.parse_args(argv).json is None
