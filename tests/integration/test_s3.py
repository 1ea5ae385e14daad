"""S3 end to end against a real S3-compatible server process (moto's server mode) on 127.0.0.1.

Candidate inputs and the query list are read from a bucket (inside Spark tasks, through fsspec),
finalize reads download shards from a bucket and writes its shards there, `wit-builder stats`
reads them and writes its report to the bucket, and the trainer's loader streams them. Transient
errors are retried; a missing bucket, refused or absent credentials give one clear line.

Spark's own Parquet I/O on s3a:// needs hadoop-aws, which cannot be installed here (no Maven):
the stages that write Parquet write to a local folder in this test (see pipelines/cluster.toml).
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from shard_maker import make_download
from wit_builder import storage
from wit_builder.cli import main
from wit_builder.config import load_config
from wit_builder.errors import UserError
from wit_builder.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[2]
BUCKET = "wit-test"
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
QUERIES = ["logo", "photo", "news", "map", "the", "of", "and", "image", "icon", "home"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: Path, **env) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise TimeoutError(f"moto_server did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """The endpoint URL of a moto server holding BUCKET; stopped after the module."""
    proc, url = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        stop(proc)


def _boto_credentials() -> dict:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
            "region_name": "us-east-1"}


def _fresh_filesystems():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches clients with their credentials


@pytest.fixture
def s3_env(moto, monkeypatch):
    """This process (and the CLI subprocesses it starts) talk to the moto server."""
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WIT_S3_ENDPOINT_URL", moto)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    _fresh_filesystems()
    yield moto
    _fresh_filesystems()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WIT_SPARK_MASTER", "PYSPARK_GATEWAY_PORT")}
    env.setdefault("WIT_DRIVER_MEMORY", "1g")
    return subprocess.run([sys.executable, "-m", "wit_builder.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def upload(local: Path, url: str) -> None:
    fs, path = storage.filesystem(url)
    fs.put(str(local), path, recursive=local.is_dir())


# --- storage --------------------------------------------------------------------------------

def test_storage_round_trip(s3_env):
    base = f"s3://{BUCKET}/storage"
    storage.write_json_atomic(f"{base}/a/m.json", {"a": 1})
    storage.write_bytes_atomic(f"{base}/a/x.warc.gz", b"123")
    storage.write_bytes_atomic(f"{base}/a/_SUCCESS", b"")
    assert storage.read_json(f"{base}/a/m.json") == {"a": 1}
    assert storage.list_files(f"{base}/a") == [f"{base}/a/m.json", f"{base}/a/x.warc.gz"]
    assert storage.list_files(f"{base}/a/*.gz") == [f"{base}/a/x.warc.gz"]
    assert storage.file_fingerprint(f"{base}/a/x.warc.gz").startswith("3:")
    storage.check_writable(f"{base}/out")
    storage.remove(f"{base}/a")
    assert not storage.exists(f"{base}/a/m.json")


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the S3 server but answers every other request 500 InternalError."""

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.target = target.removeprefix("http://")
        self.seen = self.failed = 0
        self.lock = threading.Lock()


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen += 1
            fail = self.server.seen % 2 == 1
            self.server.failed += fail
        if fail:
            error = b"<Error><Code>InternalError</Code><Message>Please try again.</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        upstream = http.client.HTTPConnection(self.server.target, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


def test_transient_errors_are_retried(s3_env, monkeypatch):
    proxy = FlakyProxy(s3_env)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WIT_S3_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
        _fresh_filesystems()
        base = f"s3://{BUCKET}/flaky"
        for i in range(2):
            storage.write_bytes_atomic(f"{base}/f{i}.txt", f"file {i}".encode())
        assert [storage.read_text(f) for f in storage.list_files(base)] == ["file 0", "file 1"]
        assert proxy.failed >= 3, "the proxy injected no errors: the test tested nothing"
    finally:
        proxy.shutdown()
        proxy.server_close()


# --- clear messages -------------------------------------------------------------------------

def test_missing_bucket_is_a_clear_user_error(s3_env, capsys):
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        storage.check_writable("s3://no-such-bucket/out")
    with pytest.raises(UserError, match="does not exist|not found"):
        storage.list_files("s3://no-such-bucket/crawl/")
    assert main(["run", "--input", "s3://no-such-bucket/in", "--out", "s3://no-such-bucket/out",
                 "--queries", "q.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s3://no-such-bucket/out: bucket 'no-such-bucket' does not exist")
    assert "Traceback" not in err and err.count("\n") == 1


def test_refused_and_missing_credentials_are_clear_user_errors(tmp_path, monkeypatch, capsys):
    # A second server that checks credentials (moto's IAM auth after 0 free requests).
    proc, url = start_moto(tmp_path / "auth.log", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        monkeypatch.setenv("WIT_S3_ENDPOINT_URL", url)
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        _fresh_filesystems()
        with pytest.raises(UserError, match="denied"):
            storage.check_writable(f"s3://{BUCKET}/out")
        with pytest.raises(UserError, match="denied"):
            storage.read_text(f"s3://{BUCKET}/queries.json")
        with pytest.raises(UserError, match="rejected the credentials"):
            storage.list_files(f"s3://{BUCKET}/crawl/")
        assert main(["stats", f"s3://{BUCKET}/out"]) == 2
        assert capsys.readouterr().err.startswith(f"error: s3://{BUCKET}/out: ")

        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        _fresh_filesystems()
        with pytest.raises(UserError, match="no S3 credentials found"):
            storage.read_text(f"s3://{BUCKET}/queries.json")
    finally:
        _fresh_filesystems()
        stop(proc)


# --- the pipeline on S3 ---------------------------------------------------------------------

def _sorted_rows(stage_dir: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    table = pq.read_table(sorted(stage_dir.glob("*.parquet")))
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return sorted(table.to_pylist(), key=lambda r: (r["uid"], r["url"], r["text"]))


def test_candidates_and_queries_read_from_a_bucket(s3_env, spark, shared_data, tmp_path):
    local_in = tmp_path / "candidates"
    local_in.mkdir()
    shutil.copy(shared_data / "candidates" / "alt_text_pairs.jsonl", local_in)
    (tmp_path / "queries.json").write_text(json.dumps(QUERIES))
    upload(local_in, f"s3://{BUCKET}/candidates")
    upload(tmp_path / "queries.json", f"s3://{BUCKET}/queries.json")

    # the CLI in its own process, as a user runs it: executors read the bucket themselves
    done = cli("run", "--input", f"s3://{BUCKET}/candidates/", "--queries",
               f"s3://{BUCKET}/queries.json", "--until", "match", "--out", str(tmp_path / "s3"),
               "--master", "local[2]")
    assert done.returncode == 0, done.stderr[-4000:]

    cfg = load_config(None, [f"run.input={local_in}", f"run.out={tmp_path / 'local'}",
                             "run.until=match", f"match.queries={tmp_path / 'queries.json'}"])
    run_pipeline(cfg, spark=spark, log=lambda _: None)
    for stage in ("extract", "match"):
        from_s3 = _sorted_rows(tmp_path / "s3" / stage)
        assert from_s3, stage
        assert {r["source"] for r in from_s3} == {f"s3://{BUCKET}/candidates/alt_text_pairs.jsonl"}
        assert [{**r, "source": None} for r in from_s3] == \
            [{**r, "source": None} for r in _sorted_rows(tmp_path / "local" / stage)]


def test_extract_writes_its_rows_into_a_bucket(s3_env, shared_data, tmp_path):
    """Extract's tasks write their Parquet files themselves (fsspec), so its output can be a
    bucket; the rows equal those of a local run."""
    upload(shared_data / "candidates" / "alt_text_pairs.jsonl", f"s3://{BUCKET}/ex/in.jsonl")
    out = f"s3://{BUCKET}/ex/out"
    for target in (out, str(tmp_path / "local")):
        done = cli("extract", "--input", f"s3://{BUCKET}/ex/in.jsonl", "--out", target,
                   "--master", "local[2]")
        assert done.returncode == 0, done.stderr[-4000:]
    assert storage.exists(f"{out}/extract/_SUCCESS")
    manifest = storage.read_json(f"{out}/extract/manifest.json")
    fs, path = storage.filesystem(f"{out}/extract")
    with fs.open(next(f for f in fs.ls(path) if f.endswith(".parquet")), "rb") as f:
        from_s3 = sorted(pq.read_table(f).to_pylist(), key=lambda r: (r["uid"], r["url"], r["text"]))
    assert len(from_s3) == manifest["rows_out"] > 0
    assert from_s3 == _sorted_rows(tmp_path / "local" / "extract")


def test_shards_and_stats_in_a_bucket_and_the_trainer_reads_them(s3_env, shared_data, tmp_path):
    from wit_builder.clip.data import SkipCounter, expand_shards, read_samples

    made = make_download(shared_data / "images", tmp_path / "download")
    upload(tmp_path / "download", f"s3://{BUCKET}/pipeline/download")
    out = f"s3://{BUCKET}/pipeline"
    done = cli("finalize", "--input", f"{out}/download", "--out", out, "--master", "local[2]")
    assert done.returncode == 0, done.stderr[-4000:]

    sizes = storage.read_json(f"{out}/finalize/sizes.json")
    assert sizes and all(storage.exists(f"{out}/finalize/{name}") for name in sizes)
    manifest = storage.read_json(f"{out}/finalize/manifest.json")
    assert manifest["rows_out"] == sum(sizes.values()) > 0
    assert manifest["rows_in"] == made["fetched"]

    done = cli("stats", f"{out}/finalize", "--json", "--html", f"{out}/report.html")
    assert done.returncode == 0, done.stderr[-4000:]
    stats = json.loads(done.stdout)
    assert stats["path"] == f"{out}/finalize"
    assert storage.read_text(f"{out}/report.html").lstrip().lower().startswith("<!doctype html")

    urls = expand_shards([f"{out}/finalize/{name}" for name in sorted(sizes)])
    skips = SkipCounter()
    samples = list(read_samples(iter(urls), skips))
    assert len(samples) == sum(sizes.values()) and not skips.counts
    assert all(s["jpg"][:2] == b"\xff\xd8" and s["txt"] for s in samples)
