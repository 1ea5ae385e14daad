"""LazySession: what it knows without a session, and what it does once one is made."""

import os

import pytest

from wit_builder.spark import LazySession, lazy_session, master_url


class FakeContext:
    master = "spark://cluster:7077"
    defaultParallelism = 48


class FakeSession:
    sparkContext = FakeContext()
    read = "a reader"


def test_a_local_master_and_its_cores_are_known_without_a_session():
    made = []
    lazy = LazySession(lambda: made.append(1) or FakeSession(), "local[3]")
    assert lazy.master == "local[3]" and lazy.default_parallelism == 3
    assert LazySession(lambda: None, "local[*]").default_parallelism == os.cpu_count()
    assert not lazy.started and made == []
    assert lazy.read == "a reader"  # anything else is the session's: it is made now, once
    assert lazy.started and lazy.read == "a reader" and made == [1]
    assert lazy.master == "spark://cluster:7077" and lazy.default_parallelism == 48


def test_an_unknown_master_starts_the_session():
    lazy = LazySession(FakeSession, master="")  # under spark-submit: its --master stands
    assert lazy.master == "spark://cluster:7077" and lazy.started


def test_hooks_run_when_the_session_is_made_or_at_once():
    seen = []
    lazy = LazySession(FakeSession, "local[2]")
    hook = seen.append
    lazy.on_start(hook)
    assert seen == []
    session = lazy.session()
    assert seen == [session]
    lazy.forget(hook)
    lazy.on_start(seen.append)  # made already: runs now
    assert seen == [session, session]


def test_lazy_session_takes_sessions_factories_and_lazy_ones():
    session = FakeSession()
    assert lazy_session(session).started and lazy_session(session).session() is session
    factory = lazy_session(FakeSession)
    assert not factory.started and isinstance(factory.session(), FakeSession)
    assert lazy_session(factory) is factory


@pytest.mark.parametrize("given, env, submitted, expected", [
    (None, None, False, "local[*]"), ("local[2]", None, False, "local[2]"),
    (None, "spark://h:7077", False, "spark://h:7077"), (None, None, True, "")])
def test_master_url(monkeypatch, given, env, submitted, expected):
    monkeypatch.delenv("WIT_SPARK_MASTER", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    if env:
        monkeypatch.setenv("WIT_SPARK_MASTER", env)
    if submitted:
        monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1234")
    assert master_url(given) == expected
