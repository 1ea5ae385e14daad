import os

import pytest

from wit_builder import staging, storage
from wit_builder.errors import UserError


def test_list_files_folder_glob_single_and_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.warc.gz").write_bytes(b"1")
    (tmp_path / "a" / "y.txt").write_bytes(b"2")
    (tmp_path / "a" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "a" / ".tmp").mkdir()
    (tmp_path / "a" / ".tmp" / "z.warc.gz").write_bytes(b"3")
    assert storage.list_files(str(tmp_path / "a")) == [
        str(tmp_path / "a" / "x.warc.gz"), str(tmp_path / "a" / "y.txt")]
    assert storage.list_files(str(tmp_path / "a" / "*.gz")) == [str(tmp_path / "a" / "x.warc.gz")]
    assert storage.list_files(str(tmp_path / "a"), suffixes=(".txt",)) == [str(tmp_path / "a" / "y.txt")]
    assert storage.list_files(str(tmp_path / "a" / "y.txt")) == [str(tmp_path / "a" / "y.txt")]
    with pytest.raises(UserError, match="input not found"):
        storage.list_files(str(tmp_path / "missing"))


def test_atomic_write_replaces_whole_file(tmp_path):
    target = str(tmp_path / "sub" / "m.json")
    storage.write_json_atomic(target, {"a": 1})
    storage.write_json_atomic(target, {"a": 2})
    assert storage.read_json(target) == {"a": 2}
    assert os.listdir(tmp_path / "sub") == ["m.json"]


def test_staging_dir_publishes_only_on_success(tmp_path):
    final = str(tmp_path / "stage")
    with staging.staging_dir(final) as work:
        assert not os.path.exists(final)
        (open(os.path.join(work, "f"), "w")).write("1")
    assert os.listdir(final) == ["f"]
    with pytest.raises(RuntimeError):
        with staging.staging_dir(final) as work:
            open(os.path.join(work, "g"), "w").write("2")
            raise RuntimeError
    assert os.listdir(final) == ["f"]
    assert os.listdir(tmp_path) == ["stage"]


def test_spark_path_maps_s3():
    assert storage.spark_path("s3://b/p") == "s3a://b/p"
    assert storage.spark_path("/tmp/x") == "/tmp/x"


def _kill_at_replace(monkeypatch, n):
    """Make the n-th os.replace of staging_dir die like a kill (nothing after it runs)."""
    calls = []
    real = os.replace

    def replace(src, dst):
        calls.append(src)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        real(src, dst)
    monkeypatch.setattr(storage.os, "replace", replace)


def _publish(final, text):
    with staging.staging_dir(final) as work:
        open(os.path.join(work, "f"), "w").write(text)


@pytest.mark.parametrize("kill_at", [1, 2])  # old -> .old-*, new -> final
def test_staging_dir_survives_a_kill_between_the_renames(tmp_path, monkeypatch, kill_at):
    final = str(tmp_path / "stage")
    _publish(final, "old")
    with monkeypatch.context() as m:
        _kill_at_replace(m, kill_at)
        with pytest.raises(KeyboardInterrupt):
            _publish(final, "new")
    left = sorted(n.split("-")[0] for n in os.listdir(tmp_path))  # what the kill left
    assert left == ([".stage.tmp", "stage"] if kill_at == 1 else [".stage.old", ".stage.tmp"])
    staging.recover_staged(final)  # the next run: the old output back, the leftovers gone
    assert os.listdir(tmp_path) == ["stage"] and open(os.path.join(final, "f")).read() == "old"
    _publish(final, "new")
    assert os.listdir(tmp_path) == ["stage"] and open(os.path.join(final, "f")).read() == "new"


def test_staging_dir_removes_temporaries_of_killed_runs(tmp_path):
    final = str(tmp_path / "filter")
    for leftover in (".filter.tmp-1234abcd", ".filter.old-1234abcd"):
        os.makedirs(tmp_path / leftover / "sub")
    (tmp_path / ".match.tmp-1234abcd").mkdir()  # another stage's: not touched
    _publish(final, "x")
    assert sorted(os.listdir(tmp_path)) == [".match.tmp-1234abcd", "filter"]
