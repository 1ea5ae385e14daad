"""SIGKILL a whole `wit-builder` run (its Spark JVM and Python workers too) at a chosen moment."""

import os
import signal
import subprocess
import sys
import time


def run_and_kill_when(args: list[str], ready, what: str, limit: float = 300) -> int:
    """Start `wit-builder ARGS` in a session of its own, SIGKILL the whole group once `ready()`
    is true, and return its exit code (-SIGKILL when the kill came first)."""
    proc = subprocess.Popen([sys.executable, "-m", "wit_builder.cli", *args],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + limit
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"{what} never happened"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode
