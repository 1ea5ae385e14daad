"""extract on http(s) inputs named directly and on listings served over HTTP (issue 23 #12,
#16), against a real server on 127.0.0.1 (allowed by download.allow_networks)."""

import gzip
import json

import pytest

from image_server import ImageServer
from wit_builder import pipeline
from wit_builder.config import load_config
from wit_builder.errors import UserError
from wit_builder.extract.plan import plan
from wit_builder.download.safety import parse_networks

LOOPBACK = 'download.allow_networks=["127.0.0.0/8"]'
PAIRS = [{"url": f"http://e.com/{i}.jpg", "text": f"a photo of cat {i}"} for i in range(5)]


@pytest.fixture()
def served(tmp_path):
    folder = tmp_path / "served"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (folder / "lists/more.jsonl.gz").write_bytes(gzip.compress(
        json.dumps({"url": "http://e.com/x.jpg", "text": "a dog"}).encode() + b"\n"))
    server = ImageServer({"/data/": folder}).start()
    (folder / "lists/crawl.paths").write_text(
        f"pairs.jsonl\n{server.url('/data/lists/more.jsonl.gz')}\n")
    yield server, folder
    server.stop()


def _extract(spark, inputs, out, *overrides):
    cfg = load_config(None, [LOOPBACK, *overrides])
    pipeline.check(cfg, ["extract"], inputs)
    return pipeline.execute("extract", spark, cfg, inputs, str(out), log=lambda _msg: None)


def test_an_http_file_and_an_http_listing_named_directly(spark, served, tmp_path):
    """The README advertises http(s) inputs; they failed with `http://http://...`."""
    server, _ = served
    run = _extract(spark, [server.url("/data/lists/pairs.jsonl")], tmp_path / "a")
    assert run.manifest["rows_out"] == 5 and run.manifest["files"] == 1
    # a listing served over HTTP: a relative entry (beside the listing) and an absolute URL
    run = _extract(spark, [server.url("/data/lists/crawl.paths")], tmp_path / "b")
    assert run.manifest["rows_out"] == 6 and run.manifest["files"] == 2
    assert server.hits("/data/lists/pairs.jsonl") and server.hits("/data/lists/more.jsonl.gz")


@pytest.mark.parametrize("entry", ["{local}", "file://{local}", "local://{local}",
                                   "simplecache::file://{local}", "memory://x.jsonl"])
def test_a_listing_from_the_web_names_no_local_files(served, tmp_path, entry):
    """Its entries named local files, which extract then read: now an error, unless
    extract.listing_local_files allows it (a listing on this machine may name them)."""
    server, folder = served
    local = tmp_path / "secret.jsonl"
    local.write_text(json.dumps({"url": "http://e.com/s.jpg", "text": "private"}) + "\n")
    (folder / "lists/evil.paths").write_text(entry.format(local=local) + "\n")
    allowed = parse_networks(["127.0.0.0/8"])
    with pytest.raises(UserError, match="refusing entry .* a listing read from the network"):
        plan([server.url("/data/lists/evil.paths")], allowed=allowed)
    if entry in ("{local}", "file://{local}"):
        assert [f.format for f in plan([server.url("/data/lists/evil.paths")], allowed=allowed,
                                       listing_local_files=True)] == ["jsonl"]
        (tmp_path / "mine.paths").write_text(entry.format(local=local) + "\n")
        assert len(plan([str(tmp_path / "mine.paths")])) == 1  # a local listing: the user's own
