"""`wit-builder doctor`: every item reported on this machine; a broken one fails in a clear line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3

from test_s3 import BUCKET, CREDENTIALS, start_moto, stop  # the moto server of the S3 tests

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "query_lists" / "wit-queries-en.json.gz"
ITEMS = ["python", "packages", "java", "spark", "langid", "queries", "nsfw_model", "face_model",
         "pdq", "hash_lists", "out", "s3", "gpu", "chromium"]


def _doctor(*args: str, **env: str):
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **env}
    return subprocess.run([sys.executable, "-m", "wit_builder.cli", "doctor", *args],
                          capture_output=True, text=True, env=environ, timeout=300)


def _items(done) -> dict:
    doc = json.loads(done.stdout)
    assert list(doc["items"]) == ITEMS
    assert doc["ok"] == (done.returncode == 0)
    return doc["items"]


def test_doctor_reports_every_item_on_this_machine(tmp_path):
    done = _doctor("--json", "--queries", str(QUERIES), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    items = _items(done)
    for name in ["python", "packages", "java", "spark", "langid", "queries", "nsfw_model",
                 "face_model", "pdq", "hash_lists", "out"]:
        assert items[name]["status"] == "ok", (name, items[name])
    assert items["nsfw_model"]["facts"]["path"].endswith("nudenet/320n.onnx")
    assert items["nsfw_model"]["facts"]["bytes"] > 10_000_000
    assert items["java"]["facts"]["version"].split(".")[0] in ("17", "21")
    assert items["java"]["facts"]["source"] in ("JAVA_HOME", "PATH")
    assert items["spark"]["facts"]["seconds"] > 0
    assert items["queries"]["facts"]["entries"] > 100_000
    assert items["s3"]["status"] == "skip"  # no s3:// path given
    assert items["gpu"]["status"] in ("ok", "skip") and items["chromium"]["status"] in ("ok", "skip")
    assert not (tmp_path / "run").exists()  # the probe creates nothing


def test_lines_say_ok_or_what_to_do_and_a_bad_java_home_exits_1(tmp_path):
    (tmp_path / "jdk").mkdir()
    done = _doctor("--out", str(tmp_path), JAVA_HOME=str(tmp_path / "jdk"))
    assert done.returncode == 1
    lines = {line.split()[1]: line for line in done.stdout.splitlines()}  # "OK  java  ..."
    assert list(lines) == ITEMS
    assert lines["java"].startswith("FAIL") and f"JAVA_HOME={tmp_path / 'jdk'} has no bin/java" \
        in lines["java"]
    assert lines["spark"].startswith("FAIL") and "no usable Java" in lines["spark"]
    assert lines["python"].startswith("OK") and lines["out"].startswith("OK")


def test_a_missing_query_list_exits_1(tmp_path):
    done = _doctor("--json", "--queries", str(tmp_path / "nope.json"), "--out", str(tmp_path))
    assert done.returncode == 1
    items = _items(done)
    assert items["queries"] == {"status": "fail", "facts": {}, "detail": (
        f"query list not found: {tmp_path / 'nope.json'} (give an existing file to --queries)")}
    assert [n for n, item in items.items() if item["status"] == "fail"] == ["queries"]


def test_an_unwritable_out_exits_1(tmp_path):
    (tmp_path / "a_file").write_text("")
    done = _doctor("--json", "--queries", str(QUERIES), "--out", str(tmp_path / "a_file" / "run"))
    assert done.returncode == 1
    items = _items(done)
    assert items["out"]["status"] == "fail"
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in items["out"]["detail"]
    assert [n for n, item in items.items() if item["status"] == "fail"] == ["out"]


def test_s3_credentials_endpoint_and_bucket_when_out_is_on_s3(tmp_path):
    proc, url = start_moto(tmp_path / "moto.log", **CREDENTIALS)
    try:
        boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        env = {**CREDENTIALS, "WIT_S3_ENDPOINT_URL": url}
        done = _doctor("--json", "--out", f"s3://{BUCKET}/run", **env)
        assert done.returncode == 0, done.stdout + done.stderr
        s3 = _items(done)["s3"]
        assert s3["status"] == "ok" and s3["facts"] == {"endpoint": url, "credentials": "env",
                                                         "buckets": [BUCKET]}
        done = _doctor("--json", "--out", "s3://no-such-bucket/run", **env)
        assert done.returncode == 1
        items = _items(done)
        assert "bucket 'no-such-bucket' does not exist" in items["s3"]["detail"]
        assert [n for n, item in items.items() if item["status"] == "fail"] == ["out", "s3"]
    finally:
        stop(proc)



def test_hash_lists_are_counted_and_a_bad_one_fails_naming_its_line(tmp_path):
    """The screen items in-process (a doctor run starts Spark: seconds)."""
    from wit_builder import doctor
    from wit_builder.config import load_config

    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("# two hashes\n" + "0" * 64 + "\n" + "f" * 16 + "\n")
    bad.write_text("not a hash\n")
    items = {i.name: i for i in doctor._screen(load_config(None, [f"screen.hash_lists={good}"]))}
    assert items["hash_lists"].facts == {"good.txt": {"pdq": 1, "phash": 1}}
    assert items["nsfw_model"].status == items["face_model"].status == items["pdq"].status == "ok"
    failed = doctor._screen(load_config(None, [f"screen.hash_lists={good},{bad}"]))[-1]
    assert failed.status == "fail" and "hash list bad.txt line 1: expected 64 hex digits" in failed.detail
