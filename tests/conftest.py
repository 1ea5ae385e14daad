"""Shared fixtures: the real data in ../shared/data and one local SparkSession per test run."""

import os
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
