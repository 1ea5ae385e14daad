"""A whole stage output published at once: written into a staging folder beside it, then
renamed over it; and the tidying of what a killed run left."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager

from wit_builder import storage


def _leftovers(parent: str, name: str, kind: str) -> list[str]:
    prefix = f".{name}.{kind}-"
    return sorted((os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)),
                  key=os.path.getmtime)


def recover_staged(final: str) -> None:
    """Tidy what killed runs left beside a local output `final` (see `staging_dir`): when
    `final` is missing and an `.<name>.old-*` folder is there, a kill came between the two
    renames of a replace, and that old output, whole, is moved back (the caller's up-to-date
    check then keeps or redoes it); every other `.<name>.tmp-*` and `.<name>.old-*` folder is
    removed. One run per output folder at a time: another run's staging folder would go too."""
    if storage.is_remote(final):
        return
    parent, name = os.path.split(os.path.abspath(final))
    if not os.path.isdir(parent):
        return
    old = _leftovers(parent, name, "old")
    if old and not os.path.exists(final):
        os.replace(old.pop(), final)
    for leftover in _leftovers(parent, name, "tmp") + old:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def staging_dir(final: str):
    """Yield a folder to write a whole output into; on success it replaces `final` at once.

    Local: a hidden sibling folder `.<name>.tmp-*`, renamed over `final`: the old `final` is
    renamed to `.<name>.old-*`, the new one to `final`, then the old one is deleted. A kill at
    any point leaves either `final` or its `.old-*`, which `recover_staged` (called here first,
    and by the stage runner before it looks at `final`) puts back. Remote: `final` itself,
    emptied first (the caller writes `_SUCCESS` last, which is what readers trust there).
    """
    fs, p = storage.filesystem(final)
    if storage.is_remote(final):
        storage.check_writable(final)
        if fs.exists(p):
            fs.rm(p, recursive=True)
        yield final
        return
    parent, name = os.path.split(os.path.abspath(p))
    os.makedirs(parent, exist_ok=True)
    recover_staged(p)
    tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        fs.rm(tmp, recursive=True)
        raise
    old = None
    if os.path.exists(p):
        old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(p, old)
    os.replace(tmp, p)
    if old:
        fs.rm(old, recursive=True)
