"""`wit-builder curate`: extract -> match -> filter -> balance on the real shared data."""

import json
import shutil
import signal

import pandas as pd
import pytest

from wit_builder.cli import main
from wit_builder import pipeline, registry

from kill_helper import run_and_kill_when
from test_filter_stage import ENGLISH, FILENAME, GERMAN

QUERIES = str(pipeline.__file__).rsplit("/wit_builder/", 1)[0] + "/query_lists/wit-queries-en.json.gz"


def curate(*args) -> int:
    return main(["curate", *args])


def read(out, stage) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(f) for f in sorted((out / stage).glob("*.parquet")))


def summary_of(out) -> dict:
    return json.loads((out / pipeline.SUMMARY).read_text())


def check_accounting(summary: dict, expected: list[str]):
    assert [s["stage"] for s in summary["stages"]] == expected
    assert summary["every_row_accounted"]
    for s in summary["stages"]:
        assert s["rows_in"] == s["rows_out"] + sum(s["drops"].values()), s["stage"]
    for a, b in zip(summary["stages"], summary["stages"][1:]):
        assert b["rows_in"] == a["rows_out"]


def test_curate_real_candidates_until_from_and_resume(spark, shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--format", "jsonl", "--set", "extract.page_url_column=page_url",
              "--queries", QUERIES, "--out", str(out)]
    src = str(shared_data / "candidates" / "alt_text_pairs.jsonl")

    assert curate("--input", src, *common, "--until", "filter") == 0
    assert not (out / "balance").exists()
    first = summary_of(out)
    check_accounting(first, ["extract", "match", "filter"])
    assert first["input_rows"] == 3073
    assert {s["status"] for s in first["stages"]} == {"ran"}
    drops = first["stages"][2]["drops"]
    assert drops["language"] > 1000 and "url_rule" in drops

    filtered = read(out, "filter")
    assert GERMAN not in set(filtered["text"]) and FILENAME not in set(filtered["text"])
    assert set(filtered["lang"]) == {"en"}

    common_from = [a for a in common if a not in ("--format", "jsonl")]
    assert curate("--from", "balance", *common_from) == 0
    second = summary_of(out)
    check_accounting(second, ["extract", "match", "filter", "balance"])
    assert [s["status"] for s in second["stages"]] == ["earlier run"] * 3 + ["ran"]
    balanced = read(out, "balance")
    english = balanced[balanced["text"] == ENGLISH]
    assert len(english) == 1 and len(english.iloc[0]["entry_ids"]) > 0  # matched and kept
    assert second["output_rows"] == len(balanced)

    capsys.readouterr()
    assert curate("--input", src, *common) == 0  # everything up to date: nothing redone
    third = summary_of(out)
    assert [s["status"] for s in third["stages"]] == ["up to date"] * 4
    table = capsys.readouterr().out
    for word in ["extract", "match", "filter", "balance", "language", "no_match",
                 "every row accounted for"]:
        assert word in table


def test_curate_counts_corrupt_gzip_and_huge_text(spark, shared_data, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ["warcat_at.warc.gz", "corrupt_warcat_at.warc.gz", "pywb_example.warc.gz"]:
        shutil.copy(shared_data / "crawl" / "warc" / name, inputs / name)
    huge = {"url": "https://e.org/huge.jpg", "text": "word " * 200_000}  # 1 MB
    fine = {"url": "https://e.org/dog.jpg", "text": "The old man is walking his dog in the park"}
    (inputs / "pairs.jsonl").write_text(json.dumps(huge) + "\n" + json.dumps(fine) + "\n")
    out = tmp_path / "out"
    assert curate("--input", str(inputs), "--queries", QUERIES, "--out", str(out),
                  "--until", "extract") == 0
    summary = summary_of(out)
    check_accounting(summary, ["extract"])
    extract = summary["stages"][0]
    assert extract["drops"].get("text_too_long", 0) >= 1
    # the damaged copy is counted (a corrupt or truncated record), not fatal
    assert any("corrupt" in r or "truncated" in r for r in extract["drops"]), extract["drops"]
    assert "https://e.org/dog.jpg" in set(read(out, "extract")["url"])


@pytest.mark.parametrize("args,message", [
    (["--input", "{empty}", "--format", "jsonl", "--queries", QUERIES], "no input files"),
    (["--input", "{data}", "--format", "xml", "--queries", QUERIES], "not allowed"),
    (["--input", "{data}", "--format", "jsonl", "--queries", "{tmp}/missing.json"], "not found"),
    (["--input", "{data}", "--format", "jsonl"], "--queries"),
    (["--format", "jsonl", "--queries", QUERIES], "--input"),
    (["--from", "match", "--queries", QUERIES], "input not found"),
    (["--from", "balance", "--until", "match"], "comes after"),
    (["--from", "filter", "--input", "{data}"], "drop --input"),
])
def test_curate_bad_requests_are_one_line_errors(spark, shared_data, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    values = {"empty": tmp_path / "empty", "tmp": tmp_path,
              "data": shared_data / "candidates" / "alt_text_pairs.jsonl"}
    args = [a.format(**values) for a in args]
    capsys.readouterr()
    assert curate(*args, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out" / "extract").exists()


def _stage_counts(out) -> list[dict]:
    return [{k: s.get(k) for k in ("stage", "rows_in", "rows_out", "drops")}
            for s in summary_of(out)["stages"]]


def test_curate_killed_during_filter_then_rerun_loses_and_doubles_nothing(spark, shared_data,
                                                                          tmp_path):
    """SIGKILL (no cleanup runs) while filter writes its staging folder, then a plain rerun."""
    src = str(shared_data / "candidates" / "alt_text_pairs.jsonl")

    def args(out):
        return ["--input", src, "--format", "jsonl", "--set", "extract.page_url_column=page_url",
                "--queries", QUERIES, "--out", str(out)]

    assert curate(*args(tmp_path / "whole")) == 0
    out = tmp_path / "out"
    for stage in ("extract", "match"):  # up to date in the killed run: it goes straight to filter
        shutil.copytree(tmp_path / "whole" / stage, out / stage)
    code = run_and_kill_when(["curate", *args(out), "--master", "local[1]",
                              "--set", "spark.driver_rows=0"],  # Spark's filter: killable
                             lambda: bool(list(out.glob(".filter.tmp-*/*"))), "filter's start")
    assert code == -signal.SIGKILL, f"curate ended (rc {code}) before the kill"
    assert not (out / "filter").exists() and list(out.glob(".filter.tmp-*"))

    assert curate(*args(out)) == 0
    assert [s["status"] for s in summary_of(out)["stages"]] == ["up to date"] * 2 + ["ran"] * 2
    assert _stage_counts(out) == _stage_counts(tmp_path / "whole")
    for stage in ("filter", "balance"):
        assert sorted(read(out, stage)["uid"]) == sorted(read(tmp_path / "whole", stage)["uid"])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_small_local_curate_starts_no_spark_session(spark, shared_data, tmp_path, monkeypatch):
    """Every stage runs this small input on the driver: the command never makes a session. With
    the one driver limit at 0, every stage runs on Spark, in one session, each counting its own
    jobs."""
    from wit_builder import spark as spark_module

    made = []
    real = spark_module.spark_from_config
    monkeypatch.setattr(spark_module, "spark_from_config",
                        lambda *a: made.append(a) or real(*a))
    src = str(shared_data / "candidates" / "alt_text_pairs.jsonl")
    args = ["--input", src, "--set", "extract.page_url_column=page_url", "--queries", QUERIES]
    assert curate(*args, "--out", str(tmp_path / "a")) == 0
    assert made == []
    jobs = {s: json.loads((tmp_path / "a" / s / "manifest.json").read_text())["spark_jobs"]
            for s in registry.CURATE}
    assert jobs == dict.fromkeys(registry.CURATE, 0)

    assert curate(*args, "--out", str(tmp_path / "b"), "--set", "spark.driver_rows=0") == 0
    assert len(made) == 1  # one session, made when extract first needed it
    jobs = {s: json.loads((tmp_path / "b" / s / "manifest.json").read_text())["spark_jobs"]
            for s in registry.CURATE}
    assert all(jobs[s] > 0 for s in registry.CURATE)
    assert _stage_counts(tmp_path / "b") == _stage_counts(tmp_path / "a")
