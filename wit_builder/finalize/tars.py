"""Reading WebDataset tars fast: samples as (key, {extension: bytes}), in file order.

The reader parses tar headers itself (ustar, GNU and pax), about ten times faster per member
than tarfile, which still reads anything that is not a plain tar stream. tests/unit/
test_finalize_fast.py checks it against tarfile on pax, GNU and ustar archives.
"""

from __future__ import annotations

import io
import posixpath
import tarfile

from wit_builder import storage


def read_samples(path: str):
    """Yield (key, {extension: bytes}) per sample of a WebDataset tar, in file order.

    Same grouping rule as webdataset: the key is the member path up to the first dot of its
    base name; consecutive members with one key form a sample.
    """
    with storage.open_file(path, "rb") as raw:
        key, files = None, {}
        for name, data in tar_files(raw):
            folder, base = posixpath.split(name)
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            member_key = posixpath.join(folder, stem)
            if member_key != key:
                if key is not None:
                    yield key, files
                key, files = member_key, {}
            files[ext.lower()] = data
        if key is not None:
            yield key, files


_REGULAR = (b"0", b"\0", b"7")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax(data: bytes) -> dict:
    records, i = {}, 0
    while i < len(data):
        space = data.index(b" ", i)
        length = int(data[i:space])
        key, _, value = data[space + 1:i + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value
        i += length
    return records


def tar_files(raw):
    """Yield (name, bytes) of each regular file of an uncompressed tar stream, in order, as
    tarfile reads them (ustar, GNU and pax headers: pax path and size, GNU long names).

    About ten times faster than tarfile per member: one header parse, no TarInfo objects.
    A stream that does not start with a valid tar header (compressed, not a tar) is read with
    tarfile instead, which also raises tarfile's own errors for damaged archives."""
    first = raw.read(512)
    if len(first) < 512 or not _checksum_ok(first):
        rest = io.BytesIO(first + raw.read()) if not hasattr(raw, "seek") else raw
        if rest is raw:
            raw.seek(0)
        with tarfile.open(fileobj=rest, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, tar.extractfile(member).read()
        return
    header, pax_global, pending = first, {}, {}
    while True:
        if len(header) < 512:
            raise ValueError("unexpected end of tar data")
        if header == b"\0" * 512:
            return
        if not _checksum_ok(header):
            raise ValueError("bad tar header checksum")
        kind = header[156:157]
        size = _number(header[124:136])
        attrs = {**pax_global, **pending}
        if "size" in attrs and kind not in (b"x", b"g", b"L", b"K"):
            size = int(attrs["size"])
        data = raw.read(size)
        if len(data) < size:
            raise ValueError("unexpected end of tar data")
        if size % 512:
            raw.read(512 - size % 512)
        if kind == b"x":
            pending = {**pending, **_pax(data)}
        elif kind == b"g":
            pax_global = {**pax_global, **_pax(data)}
        elif kind == b"L":
            pending = {**pending, "path": data.split(b"\0", 1)[0]}
        elif kind == b"K":
            pass
        else:
            if kind in _REGULAR:
                if "path" in attrs:
                    name = attrs["path"].decode("utf-8", "surrogateescape")
                else:
                    name = header[0:100].split(b"\0", 1)[0]
                    prefix = header[345:500].split(b"\0", 1)[0]
                    if header[257:263] == b"ustar\0" and prefix:
                        name = prefix + b"/" + name
                    name = name.decode("utf-8", "surrogateescape")
                if not (kind == b"\0" and name.endswith("/")):
                    yield name, data
            pending = {}
        header = raw.read(512)


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 256
    if stored == unsigned:
        return True
    high = sum(1 for b in header[:148] + header[156:] if b > 127)
    return stored == unsigned - 256 * high
