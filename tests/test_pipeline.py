"""The curate chain's stage selection and its summary (fake stage outputs, no Spark)."""

import json

import pytest

from wit_builder import pipeline, registry
from wit_builder.errors import UserError


def fake_stage(out, stage, rows_in, rows_out, drops):
    folder = out / stage
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "stage": stage, "rows_in": rows_in, "rows_out": rows_out, "drops": drops,
        "seconds": 1.5, "records_read": 7}))
    (folder / "_SUCCESS").write_text("")


def test_select_stages():
    assert pipeline.select(registry.CURATE, None, None) == ["extract", "match", "filter", "balance"]
    assert pipeline.select(registry.CURATE, "match", "filter") == ["match", "filter"]
    with pytest.raises(UserError, match="comes after"):
        pipeline.select(registry.CURATE, "balance", "extract")


def test_summary_accounts_for_every_row(tmp_path, capsys):
    fake_stage(tmp_path, "extract", 100, 90, {"empty_url": 10})
    fake_stage(tmp_path, "match", 90, 60, {"no_match": 30})
    fake_stage(tmp_path, "filter", 60, 20, {"language": 35, "duplicate": 5})
    fake_stage(tmp_path, "balance", 25, 20, {})  # a stale balance from another run
    summary = pipeline.summarize(str(tmp_path), {"extract": "earlier run", "match": "ran",
                                                 "filter": "up to date"})
    assert [s["stage"] for s in summary["stages"]] == ["extract", "match", "filter"]
    assert summary["every_row_accounted"]
    assert (summary["input_rows"], summary["output_rows"]) == (100, 20)
    assert summary["stages"][0]["extra"] == {"records_read": 7}
    pipeline.print_summary(summary)
    table = capsys.readouterr().out
    for word in ["earlier run", "up to date", "no_match", "language", "35", "every row accounted"]:
        assert word in table

    broken = pipeline.summarize(str(tmp_path), {s: "ran" for s in registry.CURATE})
    assert not broken["every_row_accounted"]  # balance's 25 in != filter's 20 out
    pipeline.print_summary(broken)
    assert "NOT ACCOUNTED" in capsys.readouterr().out
