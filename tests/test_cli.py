import subprocess
import sys

import pytest

from wit_builder.cli import build_parser, main

COMMANDS = ["queries", "extract", "match", "filter", "balance", "curate", "download", "finalize",
            "stats", "train", "eval", "run", "demo", "train-tokenizer", "config", "doctor"]


def test_every_stage_has_a_subcommand_with_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "usage: wit-builder " + command in capsys.readouterr().out


def test_user_errors_are_one_line_and_exit_2(capsys):
    assert main(["config", "--set", "balance.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'balance.bogus'") and err.count("\n") == 1


def test_console_script_prints_effective_config():
    out = subprocess.run([sys.executable, "-m", "wit_builder.cli", "config", "--set", "balance.t=42"],
                         capture_output=True, text=True, check=True).stdout
    assert "[balance]\nt = 42\n" in out


def _subcommands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_stage_commands_come_from_the_registry_with_config_defaults():
    from wit_builder import registry

    commands = _subcommands()
    assert set(registry.DATA) <= set(commands)
    balance = commands["balance"].format_help()
    assert "(default: 20000)" in balance  # read from BalanceConfig, not written in the help
    assert "one of auto|warc|wat|html" in " ".join(commands["extract"].format_help().split())


@pytest.mark.parametrize("command, present, absent", [
    ("extract", ["--master", "--force", "--conf", "--set"], []),
    ("train", ["--debug", "--set", "--config", "--val-data", "--device"], ["--master", "--force"]),
    ("eval", ["--debug"], ["--master", "--force", "--set"]),
    ("stats", ["--set"], ["--master", "--force"]),
    ("config", ["--set"], ["--master", "--force"]),
])
def test_options_appear_only_where_they_act(command, present, absent):
    text = _subcommands()[command].format_help()
    assert all(option in text for option in present)
    assert not any(f" {option} " in text or f"[{option}" in text for option in absent)


def test_conf_flag_reaches_the_spark_section(capsys):
    assert main(["extract", "--input", "/nonexistent-input", "--out", "/tmp/x",
                 "--conf", "executor.memory=8g"]) == 2
    assert "write --conf spark.KEY=VALUE" in capsys.readouterr().err
