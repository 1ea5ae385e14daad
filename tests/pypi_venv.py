"""A throwaway venv with packages from the package index, for tests that read our output with
another project's release (webdataset 1.x, Hugging Face datasets) in a process that sees nothing
of ours. Made once under pytest's cache folder (`.pytest_cache/d/NAME`), refreshed after a
week. When the index cannot be reached the test skips, saying so; under
WIT_REQUIRE_SHARED_DATA=1 (CI) it fails instead. Any other install failure fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CACHE_DAYS = 7


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def venv_python(request, name: str, requirements: list[str]) -> Path:
    """The python of the venv `name` holding `requirements` (pip requirement strings)."""
    folder = Path(request.config.cache.mkdir(name))
    python = folder / "venv" / "bin" / "python"
    stamp = folder / "installed"
    if stamp.exists() and python.exists() and time.time() - stamp.stat().st_mtime < CACHE_DAYS * 86400:
        return python
    first = requirements[0].split("=")[0].split("<")[0].split(">")[0]
    try:
        urllib.request.urlopen(f"{_index_url()}/{first}/", timeout=15).close()
    except OSError as err:
        reason = f"cannot install {first}: {_index_url()} unreachable ({err})"
        if os.environ.get("WIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{reason} (WIT_REQUIRE_SHARED_DATA=1)")
        pytest.skip(reason)
    stamp.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(folder / "venv")],
                   check=True, timeout=60)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                           "--upgrade", *requirements], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip install {' '.join(requirements)} failed:\n{done.stderr[-3000:]}"
    stamp.write_text("")
    return python
