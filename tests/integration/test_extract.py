"""The extract stage on a real local Spark session and the real crawl data in ../shared/data."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crawl_helpers import read_pages_tsv, write_warc, write_wat
from wit_builder import cli, pipeline
from wit_builder.urls import uid
from wit_builder.config import load_config
from wit_builder.errors import UserError


def _extract(spark, inputs, out, *overrides, force=False):
    cfg = load_config(None, list(overrides))
    return pipeline.execute("extract", spark, cfg, [str(p) for p in inputs], str(out), force=force,
                          log=lambda _msg: None)


def _rows(run) -> list[dict]:
    return [row for part in sorted(Path(run.path).glob("*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def _accounting_holds(m: dict):
    assert m["rows_in"] == m["rows_out"] + sum(m["drops"].values())
    assert sum(m["records_skipped"].values()) <= m["records_read"]


def test_every_warc_file_counted_not_crashed(spark, shared_data, tmp_path):
    run = _extract(spark, [shared_data / "crawl/warc"], tmp_path)
    m = run.manifest
    _accounting_holds(m)
    assert m["files"] == 12 and m["formats"] == {"warc": 12}
    assert m["drops"]["corrupt_record"] == 2  # the truncated and the bit-flipped copy
    assert m["records_read"] == 484
    assert m["records_skipped"]["not_response"] == 400
    assert {"not_html", "no_images", "not_ok"} <= set(m["records_skipped"])
    rows = _rows(run)
    assert len(rows) == m["rows_out"] == 32
    assert all(r["url"].startswith(("http://", "https://")) for r in rows)
    assert all(r["uid"] == uid(r["url"], r["text"]) for r in rows)
    assert {r["kind"] for r in rows} <= {"alt", "title"}
    cc = [r for r in rows if r["source"].endswith("cc_whirlwind.warc.gz")]
    assert {r["page_url"] for r in cc} == {"https://an.wikipedia.org/wiki/Escopete"}
    assert any(r["url"].startswith("https://upload.wikimedia.org/") for r in cc)  # from //...
    assert any(r["url"].startswith("https://an.wikipedia.org/static/") for r in cc)  # from /...
    # the truncated copy's cut record (/protocols) gives nothing; its intact records do
    truncated = [r for r in rows if r["source"].endswith("truncated_pywb_iana.warc.gz")]
    assert len(truncated) == 3
    assert [r for r in rows if "corrupt_" in r["source"]] == []
    assert {r["text"] for r in rows if r["source"].endswith("warcat_at.warc")} == \
           {r["text"] for r in rows if r["source"].endswith("warcat_at.warc.gz")}
    assert list((tmp_path / "extract").glob("_SUCCESS"))


def test_saved_pages_with_listing(spark, shared_data, tmp_path):
    run = _extract(spark, [shared_data / "crawl/html"], tmp_path)
    m = run.manifest
    _accounting_holds(m)
    assert m["files"] == 84 and m["records_read"] == 84
    assert m["drops"]["non_http"] >= 228  # data: placeholders of lazy-loaded images
    assert m["drops"]["relative_url"] > 0  # relative src on the 4 pages without a known URL
    rows = _rows(run)
    assert 2500 < len(rows) == m["rows_out"]
    urls = read_pages_tsv(shared_data / "crawl/html")
    by_file = {}
    for r in rows:
        by_file.setdefault(r["source"].rsplit("/", 1)[1], []).append(r)
    for name, page_rows in by_file.items():
        assert {r["page_url"] for r in page_rows} == {urls.get(name)}
    # <base href="https://auto-presse.de/">: relative images resolve against it
    assert all(r["url"].startswith("https://") for r in by_file["auto-presse.de-minisuv.html"])
    texts = {r["text"] for r in rows}
    assert "Michał Kolanko" in texts  # windows-1250 page decoded
    assert not any("\ufffd" in t or "\n" in t or "  " in t for t in texts)


def test_tabular_candidate_list(spark, shared_data, tmp_path):
    run = _extract(spark, [shared_data / "candidates/img2dataset_10k.parquet"], tmp_path)
    m = run.manifest
    _accounting_holds(m)
    assert m["rows_in"] == m["records_read"] == 10_000
    assert m["drops"]["relative_url"] == 1  # URL="UNLIKELY"
    rows = _rows(run)
    assert {r["kind"] for r in rows} == {"tabular"}
    assert "UNLIKELY" not in {r["url"] for r in rows}
    with pytest.raises(UserError, match="lack the url/text columns"):
        _extract(spark, [shared_data / "candidates/img2dataset_10k.parquet"], tmp_path / "b",
                 "extract.url_column=image")


def test_wat_and_warc_give_the_same_candidates(spark, shared_data, tmp_path):
    """The helper writes WARC responses from the saved pages, and WATs (Common Crawl's layout,
    links found by html.parser) from those and from the real WARC files."""
    html_dir = shared_data / "crawl/html"
    pages = [(url, (html_dir / name).read_bytes()) for name, url in sorted(read_pages_tsv(html_dir).items())]
    warcs, wats = tmp_path / "warc", tmp_path / "wat"
    warcs.mkdir(), wats.mkdir()
    write_warc(warcs / "pages.warc.gz", pages)
    for name in ("cc_whirlwind.warc.gz", "pywb_iana.warc.gz", "warcat_at.warc"):
        shutil.copy(shared_data / "crawl/warc" / name, warcs / name)
    for path in warcs.iterdir():
        write_wat(path, wats / (path.name.split(".")[0] + ".warc.wat.gz"))

    warc_run = _extract(spark, [warcs], tmp_path / "a")
    wat_run = _extract(spark, [wats], tmp_path / "b")
    assert wat_run.manifest["formats"] == {"wat": 4}

    def candidates(run):
        return sorted((r["uid"], r["url"], r["text"], r["page_url"], r["kind"]) for r in _rows(run))

    assert len(candidates(warc_run)) > 2500
    assert candidates(warc_run) == candidates(wat_run)
    assert warc_run.manifest["drops"] == wat_run.manifest["drops"]
    assert warc_run.manifest["rows_in"] == wat_run.manifest["rows_in"]

    # and the same pages as saved files (the html format) give the same rows again
    saved = tmp_path / "saved"
    saved.mkdir()
    listing = []
    for name, url in read_pages_tsv(html_dir).items():
        shutil.copy(html_dir / name, saved / name)
        listing.append(f"{name}\t{url}")
    (saved / "pages.tsv").write_text("file\toriginal_url\n" + "\n".join(listing) + "\n")
    html_rows = set(candidates(_extract(spark, [saved], tmp_path / "c")))
    page_urls = {url for url, _body in pages}
    warc_page_rows = {c for c in candidates(warc_run) if c[3] in page_urls}
    assert html_rows == warc_page_rows


def _wats(shared_data, tmp_path):
    """Common Crawl's own WAT excerpt, and WATs made from the real WARC files."""
    for name in ("cc_whirlwind.warc.gz", "pywb_iana.warc.gz", "warcat_at.warc"):
        write_wat(shared_data / "crawl/warc" / name, tmp_path / (name.split(".")[0] + ".warc.wat.gz"))
    shutil.copy(shared_data / "crawl/commoncrawl/whirlwind.warc.wat.gz", tmp_path)
    return [tmp_path]


@pytest.mark.parametrize("inputs, settings", [
    (lambda shared, _tmp: [shared / "crawl/warc"], []),  # the damaged copies too
    (lambda shared, _tmp: [shared / "crawl/html"], []),
    (_wats, []),
    (lambda shared, _tmp: [shared / "candidates/img2dataset_10k.parquet",
                           shared / "candidates/alt_text_pairs.jsonl"],
     ["extract.page_url_column=page_url"]),
], ids=["warc", "html", "wat", "tabular"])
def test_driver_path_equals_spark_path(spark, shared_data, tmp_path, inputs, settings):
    (tmp_path / "in").mkdir()
    paths = inputs(shared_data, tmp_path / "in")
    runs = {way: _extract(spark, paths, tmp_path / way, *settings,
                          *(["spark.driver_rows=0"] if way == "spark" else []))
            for way in ("driver", "spark")}
    driver, by_spark = runs["driver"].manifest, runs["spark"].manifest
    assert driver["spark_jobs"] == 0 < by_spark["spark_jobs"]
    for key in ("rows_in", "rows_out", "drops", "records_read", "records_skipped",
                "pages_truncated", "files", "files_missing", "formats"):
        assert driver[key] == by_spark[key], key
    assert driver["rows_out"] > 0
    parts = {way: {p.name: pq.read_table(p).to_pylist()
                   for p in sorted(Path(run.path).glob("*.parquet"))} for way, run in runs.items()}
    assert parts["driver"] == parts["spark"]  # the same files, rows in the same order


def test_what_runs_on_the_driver(spark, shared_data, tmp_path):
    one = [shared_data / "crawl/warc/pywb_iana.warc.gz"]
    two = one + [shared_data / "crawl/warc/warcat_at.warc.gz"]

    def jobs(inputs, limit, out):
        return _extract(spark, inputs, tmp_path / out, f"spark.driver_rows={limit}").manifest["spark_jobs"]
    assert jobs(two, 1_000_000, "a") == 0  # small: 64 MB
    assert jobs(two, 1, "b") > 0  # larger than the limit (64 bytes)
    assert jobs(one, 1, "c") == 0  # one task uses one core either way
    assert jobs(one, 0, "d") > 0  # 0: always Spark


def _cli(*args) -> int:
    return cli.main(list(args))


def test_cli_run_skip_force_and_errors(spark, shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    inputs = ["--input", str(shared_data / "crawl/warc/pywb_iana.warc.gz"),
              str(shared_data / "crawl/warc/truncated_pywb_iana.warc.gz")]
    assert _cli("extract", *inputs, "--format", "warc", "--out", str(out)) == 0
    stage = out / "extract"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert (stage / "_SUCCESS").exists() and list(stage.glob("*.parquet"))
    assert manifest["drops"]["corrupt_record"] == 1
    assert manifest["config"]["format"] == "warc"
    capsys.readouterr()

    assert _cli("extract", *inputs, "--format", "warc", "--out", str(out)) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert json.loads((stage / "manifest.json").read_text()) == manifest

    assert _cli("extract", *inputs, "--format", "warc", "--out", str(out), "--force") == 0
    assert "skipped" not in capsys.readouterr().out
    assert json.loads((stage / "manifest.json").read_text())["started"] >= manifest["started"]

    assert _cli("extract", *inputs, "--format", "gif", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key extract.format") and err.count("\n") == 1
    assert _cli("extract", "--input", str(tmp_path / "missing"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: input not found") and err.count("\n") == 1


def test_cli_lists_its_inputs_once(spark, shared_data, tmp_path, capsys, monkeypatch):
    from wit_builder.extract import stage

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "crawl/warc/pywb_iana.warc.gz", folder)
    (folder / "notes.xyz").write_text("not a crawl file")
    plans = []
    real_plan = stage.plan_files
    monkeypatch.setattr(stage, "plan_files",
                        lambda *a, **k: plans.append(a) or real_plan(*a, **k))
    capsys.readouterr()
    assert _cli("extract", "--input", str(folder), "--out", str(tmp_path / "out")) == 0
    assert len(plans) == 1  # checked before Spark started; the run used that plan
    assert capsys.readouterr().out.count("extract: ignoring 1 file(s) of unknown format") == 1
    assert json.loads((tmp_path / "out/extract/manifest.json").read_text())["files"] == 1
    # a run that no check preceded plans itself
    run = _extract(spark, [folder], tmp_path / "again")
    assert len(plans) == 2 and run.manifest["files"] == 1


def test_whole_file_gzip_and_oversized_page_are_counted(spark, tmp_path):
    """Issue 13: a `gzip x.warc` file is read fully; images beyond max_page_bytes are drops."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pages = [(f"http://e.com/{i}", f'<img src="a{i}.jpg" alt="cat {i}"><img src="b{i}.jpg" alt="dog {i}">'
              .encode()) for i in range(5)]
    write_warc(inputs / "whole.warc.gz", pages, whole_file_gzip=True)
    big = "".join(f'<p>{"text " * 200}</p><img src="/i{i}.jpg" alt="big {i}">' for i in range(30))
    write_warc(inputs / "big.warc.gz", [("http://e.com/big", big.encode())])
    run = _extract(spark, [inputs], tmp_path / "out", f"extract.max_page_bytes={len(big) // 3}")
    m = run.manifest
    _accounting_holds(m)
    kept_big = sum(r["text"].startswith("big") for r in _rows(run))
    assert 5 < kept_big < 15 and m["rows_out"] == 10 + kept_big
    assert m["drops"] == {"page_truncated": 30 - kept_big} and m["pages_truncated"] == 1


def test_cli_refuses_listing_entries_on_internal_hosts(spark, internal_listeners, tmp_path,
                                                       capsys):
    """The review's repro: a *.paths listing naming a metadata-like and an admin URL on
    internal addresses. One error line; the listeners see no HEAD, GET or range request."""
    (v4, port4), (v6, port6) = internal_listeners
    listing = tmp_path / "crawl.paths"
    listing.write_text(f"http://{v4}:{port4}/latest/meta-data/iam?x=.jsonl\n"
                       f"http://[{v6}]:{port6}/internal/admin?x=.warc.gz\n")
    assert _cli("extract", "--input", str(listing), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing input http://{v4}:{port4}/latest/meta-data/iam?x="
                          ".jsonl (blocked_address: loopback;") and err.count("\n") == 1
    # inputs themselves too (pipeline.execute checks them before fingerprinting)
    assert _cli("extract", "--input", f"http://[{v6}]:{port6}/x.warc.gz", "--out",
                str(tmp_path / "out")) == 2
    assert capsys.readouterr().err.startswith(f"error: refusing input http://[{v6}]:{port6}/")
