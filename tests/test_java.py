"""Java is found the way pyspark finds it (JAVA_HOME, then PATH), or one error line explains."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wit_builder.errors import UserError
from wit_builder.java import find_java

REPO = Path(__file__).resolve().parents[1]


def _fake_java(home: Path, says: str) -> Path:
    """HOME/bin/java: a script that prints `says` on stderr, as `java -version` does."""
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{says}' >&2\n")
    java.chmod(0o755)
    return java


def _extract_without_java(input_file: Path, out: Path, java_home: str | None, *settings: str):
    """`wit-builder extract` with no java on PATH (only the venv's bin) and JAVA_HOME as given."""
    bin_dir = os.path.dirname(sys.executable)
    assert shutil.which("java", path=bin_dir) is None
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=bin_dir, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    if java_home is not None:
        env["JAVA_HOME"] = java_home
    return subprocess.run([sys.executable, "-m", "wit_builder.cli", "extract", "--input",
                           str(input_file), "--out", str(out),
                           *(arg for setting in settings for arg in ("--set", setting))],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("java_home", ["empty folder", None])
def test_extract_without_java_is_one_error_line_and_exit_2(shared_data, tmp_path, java_home):
    if java_home:
        java_home = str(tmp_path / "jdk")
        os.mkdir(java_home)
    done = _extract_without_java(shared_data / "candidates" / "alt_text_pairs.jsonl",
                                 tmp_path / "out", java_home, "spark.driver_rows=0")  # Spark's
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "JAVA_GATEWAY_EXITED" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    expected = f"JAVA_HOME={java_home} has no bin/java" if java_home else \
        "JAVA_HOME is not set and there is no java on PATH"
    assert expected in lines[0]
    assert "openjdk-17-jre-headless" in lines[0] and "conda" in lines[0]
    assert not (tmp_path / "out" / "extract").exists()


def test_a_small_local_extract_needs_no_java(shared_data, tmp_path):
    """It runs on the driver, so no Spark session (and no JVM) is started."""
    done = _extract_without_java(shared_data / "candidates" / "alt_text_pairs.jsonl",
                                 tmp_path / "out", None)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "extract" / "_SUCCESS").exists()


@pytest.mark.parametrize("bad_input, message", [
    ("missing.jsonl", "input not found"),
    ("notes.xyz", "cannot tell the format"),
])
def test_input_mistakes_are_reported_before_java_is_looked_for(tmp_path, bad_input, message):
    """Checks that need no Java come first: the user fixes the input before installing Java."""
    if bad_input == "notes.xyz":
        (tmp_path / bad_input).write_text("x")
    done = _extract_without_java(tmp_path / bad_input, tmp_path / "out", None)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1
    assert "java" not in done.stderr.lower()


def test_java_home_comes_first_and_names_its_version(tmp_path):
    java = _fake_java(tmp_path / "jdk21", 'openjdk version "21.0.2" 2024-01-16')
    _fake_java(tmp_path / "other", 'openjdk version "17.0.15" 2025-04-15')
    found = find_java({"JAVA_HOME": str(tmp_path / "jdk21"), "PATH": str(tmp_path / "other" / "bin")})
    assert (found.executable, found.version, found.major, found.source) == \
        (str(java), "21.0.2", 21, "JAVA_HOME")


def test_path_is_used_when_java_home_is_unset_or_empty(tmp_path):
    java = _fake_java(tmp_path / "jdk", 'openjdk version "17.0.15" 2025-04-15')
    for env in ({"PATH": str(java.parent)}, {"JAVA_HOME": "", "PATH": str(java.parent)}):
        found = find_java(env)
        assert (found.executable, found.major, found.source) == (str(java), 17, "PATH")


@pytest.mark.parametrize("says, shown", [('openjdk version "11.0.2" 2019-01-15', "Java 11.0.2"),
                                         ('java version "1.8.0_292"', "Java 1.8.0_292"),
                                         ('openjdk version "25" 2025-09-16', "Java 25")])
def test_other_versions_are_refused_with_what_was_found(tmp_path, says, shown):
    java = _fake_java(tmp_path / "jdk", says)
    with pytest.raises(UserError, match="pyspark 4 needs Java 17 or 21") as error:
        find_java({"JAVA_HOME": str(tmp_path / "jdk")})
    assert f"{shown} at {java} (from JAVA_HOME)" in str(error.value)


def test_a_bad_java_home_names_the_java_on_path_instead(tmp_path):
    java = _fake_java(tmp_path / "jdk", 'openjdk version "17.0.15" 2025-04-15')
    with pytest.raises(UserError, match=f"unset JAVA_HOME to use {java} from PATH"):
        find_java({"JAVA_HOME": str(tmp_path / "nowhere"), "PATH": str(java.parent)})


def test_the_release_file_tells_when_java_does_not(tmp_path):
    _fake_java(tmp_path / "jdk", "something else")
    (tmp_path / "jdk" / "release").write_text('IMPLEMENTOR="Debian"\nJAVA_VERSION="17.0.15"\n')
    assert find_java({"JAVA_HOME": str(tmp_path / "jdk")}).version == "17.0.15"
