import subprocess
import sys

import pytest

from wit_builder.cli import build_parser, main

COMMANDS = ["queries", "extract", "match", "filter", "balance", "curate", "download", "finalize",
            "stats", "train", "eval", "run", "demo", "train-tokenizer", "config"]


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
