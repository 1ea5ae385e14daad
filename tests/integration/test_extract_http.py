"""extract on http(s) inputs named directly and on listings served over HTTP (issue 23 #12,
#16, #4), against real servers on 127.0.0.1 and 127.0.0.2."""

import gzip
import json
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from image_server import ImageServer
from wit_builder import pipeline, storage
from wit_builder.config import load_config
from wit_builder.errors import UserError
from wit_builder.extract.plan import plan_files as plan
from wit_builder.safety import parse_networks

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
    """The extract command's work: its reads allowed to reach the loopback server, as cli.main
    allows [download] allow_networks."""
    cfg = load_config(None, [LOOPBACK, *overrides])
    with storage.networks(parse_networks(cfg.download.allow_networks)):
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


# --- #4: DNS rebinding ------------------------------------------------------------------------------

@pytest.fixture()
def rebinding(tmp_path, monkeypatch):
    """(url, requests): a file on a loopback server at 127.0.0.2 that counts requests, named by
    a host that resolves to 203.0.113.5 (a documentation address, allowed by the tests below)
    for the address checks before a read (safety.check_input), and to 127.0.0.2 for every other
    lookup: the answer a rebinding name gives once it was checked."""
    from wit_builder import safety

    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            requests.append(args)

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real_lookup, real_check, checking = socket.getaddrinfo, safety.check_input, []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real_lookup(host, port, *args, **kwargs)
        address = "203.0.113.5" if checking else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    def check_input(*args, **kwargs):
        checking.append(True)
        try:
            return real_check(*args, **kwargs)
        finally:
            checking.pop()
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(safety, "check_input", check_input)
    yield f"http://rebind.test:{server.server_address[1]}/pairs.jsonl", requests
    server.shutdown()
    server.server_close()


def test_a_host_that_rebinds_after_its_check_gets_no_request(rebinding, tmp_path, capsys):
    """The address check passed (203.0.113.5, allowed here), then fsspec/aiohttp resolved the
    name again and connected to 127.0.0.2: 3 requests got through. Every connect is checked now:
    the command ends with one error line, and the server sees nothing."""
    from wit_builder.cli import main

    url, requests = rebinding
    code = main(["extract", "--input", url, "--out", str(tmp_path / "out"),
                 "--set", 'download.allow_networks=["203.0.113.0/24"]'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: refusing to connect (blocked_address: loopback")
    assert err.count("\n") == 1 and requests == []


def test_a_task_counts_a_file_whose_host_rebinds(rebinding):
    """Inside a task (the plan was checked on the driver): the file is counted as refused."""
    from wit_builder.extract import files as extract

    url, requests = rebinding
    cfg = load_config(None, ['download.allow_networks=["203.0.113.0/24"]'])
    batches = list(extract.extract_file(extract.InputFile(url, "jsonl"),
                                        extract.Options.from_config(cfg)))
    tally = dict(zip(batches[-1].column("tally").to_pylist(), batches[-1].column("n").to_pylist()))
    assert tally == {"files_refused": 1} and requests == []
