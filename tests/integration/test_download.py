"""The download stage end to end on the local image server, in the test session's Spark."""

import hashlib
import io
import socket
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from wit_builder import pipeline
from wit_builder.cli import main
from wit_builder.config import load_config

GOOD_PHOTOS = 20
SETTINGS = ["download.allow_networks=127.0.0.0/8", "download.samples_per_shard=8",
            "download.threads=4", "download.timeout=5", "download.total_timeout=10"]
EXPECTED_DROPS = {"http_404": 1, "not_an_image": 1, "truncated_image": 1, "too_many_pixels": 1,
                  "robots_optout": 1, "blocked_address": 2, "too_many_redirects": 1,
                  "bad_scheme": 1, "http_503": 1, "missing_url": 1, "duplicate_pair": 1}
ACCEPTED_CASES = ["noai_other_bot", "redirect_ok", "duplicate_a", "duplicate_b", "original",
                  "variant_small", "variant_lowq"]


def _flaky(_n):
    """503 until the test sets `_flaky.up` (before --retry-failed), then the photo."""
    if not _flaky.up:
        return 503, {}, b"busy"
    return 200, {"Content-Type": "image/jpeg"}, _flaky.photo


@pytest.fixture(scope="module")
def candidates(image_server, shared_data, tmp_path_factory):
    _flaky.photo = (shared_data / "images/coco_mini/skimage_rocket.jpg").read_bytes()
    _flaky.up = False
    flaky = image_server.route("/special/flaky.jpg", handler=_flaky)
    urls = image_server.photo_urls[:GOOD_PHOTOS]
    urls += [image_server.catalog[c] for c in sorted(image_server.catalog)]
    urls += [flaky, "ftp://127.0.0.1/photo.jpg", None]
    texts = [f"caption  number {i}\n" for i in range(len(urls))]
    urls.append(urls[0])  # the same pair twice: one candidate
    texts.append(texts[0])
    user_ids = [f"row-{i}" for i in range(len(urls) - 1)] + ["row-x"]  # the list's own ids
    path = tmp_path_factory.mktemp("cands") / "candidates.parquet"
    pq.write_table(pa.table({"URL": urls, "TEXT": texts, "Uid": user_ids}), path)
    return path


@pytest.fixture(scope="module")
def downloaded(spark, candidates, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cfg = load_config(None, SETTINGS)
    run = pipeline.execute("download", spark, cfg, [str(candidates)], str(out))
    return out / "download", run.manifest


def _samples(folder: Path):
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False))


def test_counts_and_reasons(downloaded, candidates):
    folder, manifest = downloaded
    assert manifest["rows_in"] == pq.read_metadata(candidates).num_rows
    assert manifest["drops"] == EXPECTED_DROPS
    assert manifest["rows_out"] == GOOD_PHOTOS + len(ACCEPTED_CASES)
    assert manifest["rows_in"] == manifest["rows_out"] + sum(manifest["drops"].values())
    assert (folder / "_SUCCESS").exists()


def test_shards_read_back_and_agree_with_stats(downloaded):
    folder, manifest = downloaded
    samples = _samples(folder)
    assert len(samples) == manifest["rows_out"]
    assert all({"jpg", "txt", "json"} <= set(s) for s in samples)
    stats = [json.loads(p.read_text()) for p in sorted(folder.glob("*_stats.json"))]
    assert len(stats) == len(list(folder.glob("*.tar"))) == manifest["shards"] == 5
    assert sum(s["successes"] for s in stats) == len(samples)
    for stat, tar in zip(stats, sorted(folder.glob("*.tar"))):
        in_tar = sum(1 for s in samples if s["__url__"] == str(tar))
        assert stat["successes"] == in_tar
        assert stat["count"] == pq.read_metadata(tar.with_suffix(".parquet")).num_rows
        with tarfile.open(tar) as members:  # plain ustar: no PAX record per member
            assert all(not m.pax_headers and m.isfile() for m in members.getmembers())


def test_sample_content(downloaded, image_server):
    folder, _ = downloaded
    photo_sha = hashlib.sha256(image_server.near_dup_photo.read_bytes()).hexdigest()
    same_photo = 0
    for sample in _samples(folder):
        meta = json.loads(sample["json"])
        assert {"uid", "url", "text", "entry_ids", "entries", "page_url", "source", "lang", "width",
                "height", "original_width", "original_height", "sha256", "status"} <= set(meta)
        assert "caption" not in meta
        assert meta["status"] == "success" and meta["entry_ids"] == [] == meta["entries"]
        assert sample["txt"].decode() == meta["text"] and "  " not in meta["text"]
        assert meta["source"].endswith("candidates.parquet")
        assert meta["user_id"] == "row-" + meta["text"].split()[-1]  # the list's uid, kept
        with Image.open(io.BytesIO(sample["jpg"])) as img:
            assert img.format == "JPEG" and img.size == (meta["width"], meta["height"])
        if min(meta["original_width"], meta["original_height"]) >= 256:
            assert min(img.size) == 256  # keep_ratio: shortest side to 256
        same_photo += meta["sha256"] == photo_sha
    assert same_photo == 5  # original, duplicate_a/_b, noai_other_bot, redirect_ok's target


@pytest.mark.parametrize("named_by", ["option", "match manifest"])
def test_stage_input_with_entries(spark, image_server, tmp_path, named_by):
    """A stage folder as input, through the CLI: entry ids become strings from the query list,
    given as an option or, without one, the list the match stage beside it used (its manifest
    names it: samples had `"entries": []` unless download was given the list again)."""
    balance = tmp_path / "run" / "balance"
    balance.mkdir(parents=True)
    pq.write_table(pa.table({
        "uid": ["a1", "b2", "c3"], "url": image_server.photo_urls[-3:],
        "text": ["a red bus", "two dogs", "a dog on a red bus"],
        "page_url": ["http://example.org/p", None, None], "source": ["crawl.warc.gz"] * 3,
        "lang": ["en", "de", None],
        "kind": ["alt"] * 3, "entry_ids": pa.array([[0], [1], [0, 1]], pa.list_(pa.int32()))}),
        balance / "part-0.parquet")
    (balance / "manifest.json").write_text("{}")
    (balance / "_SUCCESS").write_text("")
    queries = tmp_path / "metadata.json"
    queries.write_text(json.dumps(["red bus", "dog"]))
    overrides = [arg for setting in SETTINGS[1:] for arg in ("--set", setting)]
    if named_by == "option":
        overrides += ["--set", f"match.queries={queries}"]
    else:
        (tmp_path / "run" / "match").mkdir()
        (tmp_path / "run" / "match" / "manifest.json").write_text(json.dumps(
            {"stage": "match", "queries": {"path": str(queries), "entries": 2}}))
    code = main(["download", "--input", str(balance), "--out", str(tmp_path / "run"),
                 "--allow-networks", "127.0.0.0/8", *overrides])
    assert code == 0
    manifest = json.loads((tmp_path / "run" / "download" / "manifest.json").read_text())
    assert (manifest["rows_in"], manifest["rows_out"]) == (3, 3)
    metas = {m["uid"]: m for m in
             (json.loads(s["json"]) for s in _samples(tmp_path / "run" / "download"))}
    assert metas["c3"]["entries"] == ["red bus", "dog"] and metas["c3"]["entry_ids"] == [0, 1]
    assert metas["a1"]["page_url"] == "http://example.org/p"
    assert metas["b2"]["entries"] == ["dog"] and metas["b2"]["source"] == "crawl.warc.gz"
    # filter's language travels with the sample (finalize and the report read it)
    assert [metas[u]["lang"] for u in ("a1", "b2", "c3")] == ["en", "de", None]


def test_resume_then_retry_failed(spark, downloaded, candidates, image_server):
    """Runs after the tests above (same module): it changes the download folder."""
    folder, manifest = downloaded
    out = str(folder.parent)
    last = sorted(folder.glob("*_stats.json"))[-1]
    last_rows = pq.read_table(str(last).replace("_stats.json", ".parquet")).to_pylist()
    done_rows = [r for p in sorted(folder.glob("*.parquet"))[:-1] for r in pq.read_table(p).to_pylist()]
    hits = dict(image_server.requests)
    last.unlink()  # as if the run had stopped while writing the last shard
    (folder / "_SUCCESS").unlink()

    cfg = load_config(None, SETTINGS)
    again = pipeline.execute("download", spark, cfg, [str(candidates)], out).manifest
    assert {k: again[k] for k in ("rows_in", "rows_out", "drops")} == \
        {k: manifest[k] for k in ("rows_in", "rows_out", "drops")}
    path_of = lambda url: "/" + url.split("/", 3)[3]  # noqa: E731
    fetched_again = {path_of(r["url"]) for r in last_rows if r["url"].startswith("http")}
    photos = {path_of(u) for u in image_server.photo_urls}  # fetched by their own row only
    done_photos = {path_of(r["url"]) for r in done_rows if r["url"]} & photos
    assert done_photos and all(image_server.hits(p) == hits[p] for p in done_photos)
    assert all(image_server.hits(p) > hits.get(p, 0) for p in fetched_again
               if not p.startswith("/special/to-"))

    hits = dict(image_server.requests)
    _flaky.up = True
    retry = load_config(None, SETTINGS + ["download.retry_failed=true"])
    retried = pipeline.execute("download", spark, retry, [str(candidates)], out).manifest
    assert retried["rows_out"] == manifest["rows_out"] + 1  # the flaky URL
    assert "http_503" not in retried["drops"]
    assert retried["rows_in"] == retried["rows_out"] + sum(retried["drops"].values())
    assert image_server.hits("/special/flaky.jpg") == hits["/special/flaky.jpg"] + 1
    assert image_server.hits("/special/noai.jpg") == hits["/special/noai.jpg"] + 1  # failed: retried
    good = path_of(image_server.catalog["original"])
    assert image_server.hits(good) == hits[good]  # succeeded: not fetched again
    assert len(_samples(folder)) == retried["rows_out"]


def test_driver_tally_equals_spark_tally(spark, downloaded):
    """Runs after the retry above: several attempts per uid, successes and failures."""
    from pyspark.sql import functions as F

    from wit_builder.download import stage as download_stage

    from wit_builder import stages
    from wit_builder.config import load_config

    folder, _ = downloaded
    found = {}
    for way, limit in (("driver", 1_000_000), ("spark", 0)):
        cfg = load_config(None, [f"spark.driver_rows={limit}"])
        found[way] = download_stage._outcome_counts(stages.Context(spark, cfg, str(folder)))
    assert sorted(found["driver"], key=str) == sorted(found["spark"], key=str)
    local = found["driver"]
    by_spark = [(r["ok"], r["status"], r["error"], r["count"]) for r in
                download_stage._outcomes(spark, str(folder))
                .groupBy("ok", F.col("last.status").alias("status"),
                         F.col("last.error_message").alias("error")).count().collect()]
    assert sorted(local, key=str) == sorted(by_spark, key=str)
    assert any(ok == 0 for ok, *_ in local) and any(ok == 1 for ok, *_ in local)


@pytest.mark.timeout(180)  # the defect this guards against was a hang
def test_a_trickling_server_does_not_hold_the_stage(spark, image_server, tmp_path, capfd):
    """The review's repro: [photo, one byte every 2 s, photo] finishes within the deadline,
    and a progress line shows while it waits."""
    import time

    def trickle(wfile):
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100000):
            wfile.write(b"x")
            wfile.flush()
            time.sleep(2)
    urls = [image_server.photo_urls[0], image_server.route("/trickle", raw=trickle),
            image_server.photo_urls[1]]
    pq.write_table(pa.table({"url": urls, "text": ["one", "two", "three"]}),
                   tmp_path / "c.parquet")
    started = time.monotonic()
    code = main(["download", "--input", str(tmp_path / "c.parquet"), "--out", str(tmp_path),
                 "--set", "download.allow_networks=127.0.0.0/8", "--set", "download.timeout=5",
                 "--set", "download.total_timeout=10", "--set", "download.retries=2",
                 "--set", "spark.progress_seconds=2"])
    assert code == 0 and time.monotonic() - started < 60
    assert "download: 0/1 shards, 0 images/s" in capfd.readouterr().err
    manifest = json.loads((tmp_path / "download" / "manifest.json").read_text())
    assert (manifest["rows_out"], manifest["drops"]) == (2, {"timeout": 1})


def test_cli_refuses_a_bad_allow_list(spark, candidates, tmp_path, capsys):
    code = main(["download", "--input", str(candidates), "--out", str(tmp_path),
                 "--allow-networks", "10.0.0.0/33"])
    assert code == 2
    assert "allow_networks: '10.0.0.0/33' is not a CIDR range" in capsys.readouterr().err


def test_a_plain_lists_uid_column_is_not_trusted(spark, tmp_path):
    """Three different pairs sharing a user's uid stay three candidates (uids are ours); the
    user's uid is kept as user_id."""
    from wit_builder.download.prepare import prepare as _prepare
    from wit_builder.urls import uid

    urls = [f"http://10.0.0.{i}/a.jpg" for i in range(3)]
    pq.write_table(pa.table({"uid": ["dup"] * 3, "url": urls, "text": ["a", "b", "c"]}),
                   tmp_path / "c.parquet")
    prepared = _prepare(spark, load_config(None, SETTINGS), [str(tmp_path / "c.parquet")],
                        str(tmp_path / "out"))
    assert (prepared["rows_in"], prepared["rows"], prepared["drops"]) == (3, 3, {})
    rows = pq.read_table(tmp_path / "out" / "_input").to_pylist()
    assert sorted(r["uid"] for r in rows) == sorted(uid(u, t) for u, t in zip(urls, "abc"))
    assert [r["user_id"] for r in rows] == ["dup"] * 3


def test_cli_refuses_a_corrupt_parquet_in_one_line(spark, tmp_path, capsys):
    import os

    bad = tmp_path / "cands" / "part-1.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.table({"url": ["http://10.0.0.1/a.jpg"], "text": ["a"]}),
                   tmp_path / "cands" / "part-0.parquet")
    bad.write_bytes(b"PAR1" + os.urandom(4096))
    code = main(["download", "--input", str(bad.parent), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {bad}: not a readable Parquet file "
                   "(Parquet magic bytes not found in footer. Either the file is corrupted or "
                   "this is not a parquet file.)"]


def test_cli_refuses_an_input_on_an_internal_address(spark, tmp_path, capsys):
    listener = socket.create_server(("127.0.0.2", 0))
    listener.setblocking(False)
    url = f"http://127.0.0.2:{listener.getsockname()[1]}/c.parquet"
    try:
        code = main(["download", "--input", url, "--out", str(tmp_path / "out")])
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    finally:
        listener.close()
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: refusing input {url} (blocked_address: "
                                              "loopback;")


@pytest.mark.timeout(420)
def test_download_killed_then_rerun_loses_and_doubles_nothing(spark, image_server, tmp_path):
    """SIGKILL of a whole `wit-builder download` (its Spark JVM and workers) once some shards
    are done, then a plain rerun: the same counts as an uninterrupted run, no sample twice."""
    import signal
    import time

    from kill_helper import run_and_kill_when

    def slow(_n):  # keeps the run going long enough to be killed half way
        time.sleep(0.3)
        return 200, {"Content-Type": "image/jpeg"}, image_server.near_dup_photo.read_bytes()
    urls = [image_server.route(f"/slow/{i}.jpg", handler=slow) for i in range(48)]
    pq.write_table(pa.table({"url": urls, "text": [f"photo {i}" for i in range(48)]}),
                   tmp_path / "c.parquet")
    settings = ["--set", "download.allow_networks=127.0.0.0/8", "--set",
                "download.samples_per_shard=4", "--set", "download.threads=2"]
    assert main(["download", "--input", str(tmp_path / "c.parquet"), "--out",
                 str(tmp_path / "whole"), *settings]) == 0
    out = tmp_path / "killed"
    code = run_and_kill_when(["download", "--input", str(tmp_path / "c.parquet"), "--out",
                              str(out), *settings, "--master", "local[1]"],
                             lambda: len(list(out.glob("download/*_stats.json"))) >= 2,
                             "a finished shard")
    assert code == -signal.SIGKILL, f"download ended (rc {code}) first"
    assert not (out / "download" / "_SUCCESS").exists()
    done_before = len(list(out.glob("download/*_stats.json")))

    assert main(["download", "--input", str(tmp_path / "c.parquet"), "--out", str(out),
                 *settings]) == 0
    whole = json.loads((tmp_path / "whole" / "download" / "manifest.json").read_text())
    again = json.loads((out / "download" / "manifest.json").read_text())
    assert {k: again[k] for k in ("rows_in", "rows_out", "drops", "shards")} == \
        {k: whole[k] for k in ("rows_in", "rows_out", "drops", "shards")}
    samples = _samples(out / "download")
    assert len(samples) == again["rows_out"] == 48
    assert sorted(json.loads(s["json"])["uid"] for s in samples) == \
        sorted(json.loads(s["json"])["uid"] for s in _samples(tmp_path / "whole" / "download"))
    assert 2 <= done_before < again["shards"]  # the rerun kept finished shards, did the rest
