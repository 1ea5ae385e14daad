"""The one per-process cache: built once per key, at most `keep` of a kind, a failed build keeps
nothing, and a forked child builds its own."""

import os

import pytest

from wit_builder import per_process


@pytest.fixture
def kind():
    name = "test objects"
    per_process.forget(name)
    yield name
    per_process.forget(name)


def test_an_object_is_built_once_per_key(kind):
    built = []
    make = lambda key: lambda: built.append(key) or object()
    a = per_process.get(kind, "a", make("a"))
    assert per_process.get(kind, "a", make("a")) is a
    b = per_process.get(kind, "b", make("b"))
    assert b is not a and per_process.get(kind, "a", make("a")) is a
    assert built == ["a", "b"]


def test_keep_drops_the_least_recently_used_before_building(kind):
    held = []

    def build(key):
        held.append(len(per_process._OBJECTS[kind]))  # what is still held while building
        return key

    for key in ("a", "b", "a"):
        per_process.get(kind, key, lambda: build(key), keep=1)
    assert held == [0, 0, 0]  # never two at once: "a" was built again after "b" replaced it


def test_a_failed_build_keeps_nothing(kind):
    def broken():
        raise ValueError("not a model")

    with pytest.raises(ValueError):
        per_process.get(kind, "m", broken)
    assert per_process.get(kind, "m", lambda: "loaded") == "loaded"


def test_a_forked_child_builds_its_own(kind):
    parent = per_process.get(kind, None, lambda: os.getpid())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its object is built in it, not the parent's copy
        os.write(write, str(per_process.get(kind, None, lambda: os.getpid())).encode())
        os._exit(0)
    os.close(write)
    child = int(os.read(read, 64))
    os.waitpid(pid, 0)
    assert parent == os.getpid() and child == pid
