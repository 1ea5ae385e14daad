import json
import os

import pytest

from wit_builder import stages
from wit_builder.errors import UserError
from wit_builder.stages import StageResult, run_stage


def _body(calls, rows_out=3, drops=None):
    def body(work):
        calls.append(work)
        with open(os.path.join(work, "part-0.txt"), "w") as f:
            f.write("rows")
        return StageResult(rows_in=rows_out + sum((drops or {}).values()), rows_out=rows_out,
                           drops=drops or {})
    return body


def test_manifest_success_skip_stale_and_force(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("a")
    out = str(tmp_path / "out")
    calls = []
    run = run_stage("extract", out, {"x": 1}, [str(src)], _body(calls, 3, {"empty_text": 2}))
    manifest = json.loads((tmp_path / "out/extract/manifest.json").read_text())
    assert (tmp_path / "out/extract/_SUCCESS").exists()
    assert manifest["rows_in"] == 5 and manifest["rows_out"] == 3
    assert manifest["drops"] == {"empty_text": 2}
    assert manifest["inputs"][0]["path"] == str(src) and not run.skipped
    assert {"python", "started", "finished", "seconds"} <= set(manifest) | set(manifest["versions"])

    assert run_stage("extract", out, {"x": 1}, [str(src)], _body(calls)).skipped
    assert len(calls) == 1
    assert not run_stage("extract", out, {"x": 2}, [str(src)], _body(calls)).skipped  # config
    src.write_text("changed input")
    assert not run_stage("extract", out, {"x": 2}, [str(src)], _body(calls)).skipped  # input
    assert not run_stage("extract", out, {"x": 2}, [str(src)], _body(calls), force=True).skipped
    assert len(calls) == 4
    # nothing but the final folder is left behind
    assert os.listdir(tmp_path / "out") == ["extract"]


def test_downstream_goes_stale_when_upstream_is_redone(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("a")
    out = str(tmp_path / "out")
    up = run_stage("extract", out, {}, [str(src)], _body([]))
    calls = []
    run_stage("match", out, {}, [up.path], _body(calls))
    run_stage("extract", out, {}, [str(src)], _body([]), force=True)
    assert not run_stage("match", out, {}, [up.path], _body(calls)).skipped
    assert len(calls) == 2


def test_failed_body_leaves_previous_output_and_no_temporaries(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("a")
    out = str(tmp_path / "out")
    run_stage("extract", out, {}, [str(src)], _body([]))
    before = (tmp_path / "out/extract/manifest.json").read_text()

    def boom(work):
        raise ValueError("half way")

    with pytest.raises(ValueError):
        run_stage("extract", out, {}, [str(src)], boom, force=True)
    assert (tmp_path / "out/extract/manifest.json").read_text() == before
    assert os.listdir(tmp_path / "out") == ["extract"]


def test_lost_rows_are_a_bug_not_a_manifest(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("a")

    def lossy(work):
        return StageResult(rows_in=10, rows_out=7, drops={"empty_text": 1})

    with pytest.raises(RuntimeError, match="rows were lost"):
        run_stage("extract", str(tmp_path / "out"), {}, [str(src)], lossy)
    assert not (tmp_path / "out" / "extract").exists()


def test_incomplete_stage_is_a_user_error(tmp_path):
    half = tmp_path / "out" / "match"
    half.mkdir(parents=True)
    with pytest.raises(UserError, match="did not finish"):
        stages.require_complete(str(half))
    with pytest.raises(UserError, match="input not found"):
        stages.require_complete(str(tmp_path / "nothing"))


def test_forced_rerun_killed_between_the_renames_keeps_an_output(tmp_path, monkeypatch):
    src = tmp_path / "input.txt"
    src.write_text("a")
    out = str(tmp_path / "out")
    first = run_stage("extract", out, {}, [str(src)], _body([]))
    real = os.replace

    def replace(a, b):  # dies at the second rename of the swap (staging folder -> OUT/extract)
        if os.path.basename(a).startswith(".extract.tmp-"):
            raise KeyboardInterrupt
        real(a, b)
    with monkeypatch.context() as m:
        m.setattr(stages.storage.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            run_stage("extract", out, {}, [str(src)], _body([]), force=True)
    assert not (tmp_path / "out/extract").exists()
    # the next run puts the old output back, finds it up to date, and leaves nothing else
    again = run_stage("extract", out, {}, [str(src)], _body([]))
    assert again.skipped and again.manifest == first.manifest
    assert os.listdir(tmp_path / "out") == ["extract"]
