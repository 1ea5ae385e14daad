"""`wit-builder run` checks its config before Spark starts; the pipeline configs load."""

from pathlib import Path

import pytest

from wit_builder.cli import main
from wit_builder.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["run"], "nothing to run on: no inputs"),
    (["run", "--input", "in"], "no output root"),
    (["run", "--input", "in", "--out", "o", "--until", "train"], "config key run.until: 'train' is not allowed"),
])
def test_run_refuses_an_incomplete_config_before_spark(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_run_flags_and_config_file_meet_in_the_run_section(tmp_path):
    cfg = load_config(REPO / "pipelines" / "local.toml", ["run.input=a,s3://b/c", "run.until=balance"])
    assert cfg.run.input == ["a", "s3://b/c"] and cfg.run.until == "balance"
    assert cfg.run.out == "out/local"


def test_stats_step_writes_json_and_html_for_every_stage(shared_data, tmp_path):
    import json

    from shard_maker import make_out_root
    from wit_builder.stats.report import write_stats

    make_out_root(shared_data / "images", tmp_path)
    write_stats(str(tmp_path), load_config(), log=lambda _: None)
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert {"filter", "balance", "download"} <= set(stats["stages"])
    assert (tmp_path / "stats" / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
