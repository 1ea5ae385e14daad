"""Shared fixtures: the real data in ../shared/data and one local SparkSession per test run."""

import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call when img2dataset imports

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need_shared(relative: str = "") -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("WIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"shared data missing: {path} (WIT_REQUIRE_SHARED_DATA=1)")
        pytest.skip(f"shared data missing: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (read-only); skips, or fails under WIT_REQUIRE_SHARED_DATA=1."""
    return _need_shared()


@pytest.fixture(scope="session")
def spark():
    """The one local SparkSession of the test run, built by the project's own factory."""
    from wit_builder.spark import get_spark

    session = get_spark(master="local[2]", app_name="wit-builder-tests",
                        conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "1g"},
                        ui=False, log_level="ERROR")
    yield session
    session.stop()


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def _listener(host: str):
    """A listening socket nobody accepts on: a connection attempt would wait in its queue."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = socket.create_server((host, 0), family=family)
    except OSError:
        pytest.skip(f"no {host} on this machine")
    server.setblocking(False)
    return server


def _connected(server) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


@pytest.fixture
def internal_listeners():
    """(address, port) of listeners on 127.0.0.2 and ::1 standing for internal services; the
    test fails if anything connected to them."""
    servers = [_listener("127.0.0.2"), _listener("::1")]
    try:
        yield [(s.getsockname()[0], s.getsockname()[1]) for s in servers]
        assert not any(_connected(s) for s in servers)  # refused without touching them
    finally:
        for s in servers:
            s.close()
