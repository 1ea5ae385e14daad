"""The demo's generated corpus and image server, without Spark."""

import urllib.error
import urllib.request

import pytest
from warcio.archiveiterator import ArchiveIterator

from wit_builder.demo import run as demo
from wit_builder.demo.corpus import write_site, write_warc


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corpus_is_the_same_bytes_every_time(tmp_path):
    for name in ("a", "b"):
        pages = write_site(tmp_path / name)
        write_warc(tmp_path / name / "crawl.warc.gz", tmp_path / name / "site", "http://127.0.0.1:8000", pages)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and len(a) > 400
    stamp = (tmp_path / "a" / "crawl.warc.gz").stat().st_mtime_ns
    write_warc(tmp_path / "a" / "crawl.warc.gz", tmp_path / "a" / "site", "http://127.0.0.1:8000", pages)
    assert (tmp_path / "a" / "crawl.warc.gz").stat().st_mtime_ns == stamp  # unchanged: not rewritten


def test_warc_holds_every_page_under_the_server_address(tmp_path):
    pages = write_site(tmp_path)
    write_warc(tmp_path / "c.warc.gz", tmp_path / "site", "http://127.0.0.1:9", pages)
    with open(tmp_path / "c.warc.gz", "rb") as f:
        responses = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f)
                     if r.rec_type == "response"]
    assert responses == [f"http://127.0.0.1:9/{p}" for p in pages + ["style.css"]]


def test_server_serves_images_an_opt_out_and_a_rogue_redirect(tmp_path):
    write_site(tmp_path)
    with demo.serve(tmp_path / "site") as base:
        with urllib.request.urlopen(f"{base}/img/train-circle-red-00.jpg") as r:
            assert r.read(3) == b"\xff\xd8\xff" and r.headers.get("X-Robots-Tag") is None
        with urllib.request.urlopen(f"{base}/img/noai/opt-out.jpg") as r:
            assert r.headers["X-Robots-Tag"] == "noai"
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(f"{base}/redirect/metadata.jpg")
        assert caught.value.code == 302 and caught.value.headers["Location"] == demo.METADATA_ADDRESS
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/img/missing.jpg")
        assert caught.value.code == 404


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_demo_config_keeps_user_settings_and_fills_generated_paths(tmp_path):
    cfg = demo.demo_config(tmp_path, overrides=["balance.t=7"])
    assert cfg.balance.t == 7 and cfg.download.allow_networks == ["127.0.0.0/8"]
    assert cfg.match.queries == str(demo.QUERIES)
    assert cfg.finalize.eval_image_folders == [str(tmp_path / "corpus" / "eval" / "images")]
    cfg = demo.demo_config(tmp_path, overrides=["match.queries=/elsewhere.json"])
    assert cfg.match.queries == "/elsewhere.json"
