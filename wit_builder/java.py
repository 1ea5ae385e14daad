"""Find the Java that pyspark will start, before it starts it.

pyspark 4 launches `$JAVA_HOME/bin/java` when JAVA_HOME is set, else the `java` on PATH, and
needs Java 17 or 21. Without one it dies with a 20-line JAVA_GATEWAY_EXITED traceback that says
nothing about Java, so we look first, the same way, and turn what we find into one line.
A JAVA_HOME that is set but wrong is an error, not a reason to try PATH: pyspark would not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from wit_builder.errors import UserError

SUPPORTED = (17, 21)
INSTALL = ("install Java 17 with `apt-get install -y openjdk-17-jre-headless` on Debian/Ubuntu "
           "or `conda install -c conda-forge openjdk=17`, or point JAVA_HOME at a Java 17 or 21")
# `openjdk version "17.0.15" 2025-04-15`, `java version "1.8.0_292"`, `JAVA_VERSION="21.0.2"`
_VERSION = re.compile(r'(?:version|JAVA_VERSION=)\s*"([0-9][^"]*)"')


@dataclass(frozen=True)
class Java:
    executable: str
    version: str  # "17.0.15"
    major: int
    source: str  # "JAVA_HOME" or "PATH"

    def describe(self) -> str:
        return f"Java {self.version} at {self.executable} (from {self.source})"


def find_java(environ=None) -> Java:
    """The usable Java pyspark will run, or a UserError saying what was found and what to do."""
    env = os.environ if environ is None else environ
    home = env.get("JAVA_HOME", "")
    if home:  # pyspark's launcher takes a non-empty JAVA_HOME as is
        executable, source = os.path.join(home, "bin", "java"), "JAVA_HOME"
        if not os.access(executable, os.X_OK):
            on_path = shutil.which("java", path=env.get("PATH", ""))
            fix = f"unset JAVA_HOME to use {on_path} from PATH" if on_path else INSTALL
            raise UserError(f"JAVA_HOME={home} has no bin/java, and pyspark uses JAVA_HOME when "
                            f"it is set ({fix})")
    else:
        executable, source = shutil.which("java", path=env.get("PATH", "")), "PATH"
        if executable is None:
            raise UserError(f"no Java: JAVA_HOME is not set and there is no java on PATH "
                            f"(pyspark 4 needs Java 17 or 21; {INSTALL})")
    version = _version(executable)
    major = _major(version)
    java = Java(executable, version, major, source)
    if major not in SUPPORTED:
        raise UserError(f"{java.describe()}: pyspark 4 needs Java 17 or 21 ({INSTALL})")
    return java


def _version(executable: str) -> str:
    """The version `java -version` prints (on stderr), else the one in the install's `release`."""
    try:
        done = subprocess.run([executable, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{executable} does not run: {exc} ({INSTALL})") from None
    found = _VERSION.search(done.stderr + done.stdout)
    if found:
        return found.group(1)
    release = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(executable))), "release")
    if os.path.isfile(release):
        with open(release, encoding="utf-8", errors="replace") as f:
            found = _VERSION.search(f.read())
        if found:
            return found.group(1)
    said = (done.stderr or done.stdout).strip().splitlines()
    raise UserError(f"{executable} does not say its version ({said[0] if said else 'no output'}; "
                    f"{INSTALL})")


def _major(version: str) -> int:
    """17 for "17.0.15", 8 for the old "1.8.0_292" numbering."""
    parts = re.findall(r"\d+", version)
    major = int(parts[0])
    return int(parts[1]) if major == 1 and len(parts) > 1 else major
