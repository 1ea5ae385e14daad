"""The README's commands are the ones CI runs: a drift here would let CI test something else."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv .venv")]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = _readme_commands()[:2]
    assert demo.endswith("wit-builder demo")
    assert "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "WIT_REQUIRE_SHARED_DATA=1" in ci
    assert _readme_commands()[1] in ci.splitlines()
