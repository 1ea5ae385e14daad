"""Reading WebDataset tars, fast and safely: samples as (key, {extension: bytes}), in file order.

The one tar reader of every stage that reads shards it may not have made (finalize, score, stats,
train). It parses tar headers itself (ustar, GNU and pax), about ten times faster per member
than tarfile; gzip, bzip2 and xz shards are decompressed as a stream. tests/
finalize/test_stage.py checks it against tarfile on pax, GNU and ustar archives.

A foreign shard may be hostile, so nothing in it is trusted, and every problem is one sample's
`problem`, which callers count as one drop with that reason (never a hang or a traceback):
- `oversized_member`: a member larger than `max_member` (MAX_MEMBER_BYTES) is never read, its
  bytes are skipped. So a gzip bomb costs a stream's buffers, not gigabytes;
- `corrupt_member`: a member whose pax records are malformed (a record length of 0, negative or
  past its header; a size that is not a number) is not read; its plain header still frames it,
  so the shard goes on;
- `corrupt_shard`: damaged structure (a bad header or checksum, a size past the end of the file,
  a cut, empty or non-tar file, data that does not decompress) ends the shard, as nothing after
  it can be trusted to be a member: the sample being read, or a key-less sample when none was,
  comes with this problem. So a damaged shard costs one drop besides its good samples.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from wit_builder import storage

# The download stage's default `max_bytes`: no image it stores is larger, and no caption or json
# comes near it.
MAX_MEMBER_BYTES = 20_000_000
_SKIP_CHUNK = 1 << 20
_REGULAR = (b"0", b"\0", b"7")
_DECOMPRESSORS = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f)), (b"BZh", bz2.BZ2File),
                  (b"\xfd7zXZ\x00", lzma.LZMAFile))


class CorruptTar(ValueError):
    """The tar's structure is damaged: nothing after this point can be trusted. `name`: the
    member whose header was read last, when the damage is in its data."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


class Sample(NamedTuple):
    key: str | None  # the member path up to the first dot of its base name; None: no sample
    files: dict  # {extension: bytes} of the members read
    problem: str | None  # None, "oversized_member", "corrupt_member" or "corrupt_shard"


def read_samples(path: str, wanted: Callable[[int, str], bool] | None = None,
                 max_member: int = MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Every sample of a WebDataset tar, in file order, as `Sample`s (see the module docstring).

    Same grouping rule as webdataset: the key is the member path up to the first dot of its
    base name; consecutive members with one key form a sample. `wanted(position, key)`, when
    given, says whether to read a sample's members: the others come with empty `files`, their
    bytes skipped unread."""
    with storage.open_file(path, "rb") as raw:
        yield from samples_of(raw, wanted, max_member)


def samples_of(raw, wanted=None, max_member: int = MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """`read_samples` of an open binary stream."""
    key, files, problem, pos, take = None, {}, None, -1, True
    try:
        for member in _members(raw, max_member):
            member_key = _key(member.name)
            if member_key is None:
                continue
            ext = posixpath.basename(member.name).partition(".")[2]
            if member_key != key:
                if key is not None:
                    yield Sample(key, files, problem)
                key, files, problem, pos = member_key, {}, None, pos + 1
                take = wanted is None or wanted(pos, key)
            if member.damaged:
                problem = "corrupt_member"
            elif member.size > max_member:
                problem = "oversized_member"
            elif take:
                files[ext.lower()] = member.read()
    except CorruptTar as e:
        damaged_key = _key(e.name) if e.name else None
        if damaged_key and damaged_key != key:  # the damage starts a sample: the one before is whole
            if key is not None:
                yield Sample(key, files, problem)
            key, files = damaged_key, {}
        yield Sample(key, files, "corrupt_shard")
        return
    if key is not None:
        yield Sample(key, files, problem)


class _Member:
    """A regular file of the tar: `name`, `size`, `damaged` (its pax records are malformed: its
    name and size are the plain header's), and `read()`, its bytes; one not read is skipped."""

    def __init__(self, stream, name: str, size: int, damaged: bool):
        self._stream, self.name, self.size, self.damaged, self.was_read = stream, name, size, damaged, False

    def read(self) -> bytes:
        self.was_read = True
        return _read_exactly(self._stream, self.size)


_EXTENDED = (b"x", b"g", b"L", b"K")  # pax, pax global, GNU long name, GNU long link name


def _key(name: str) -> str | None:
    """A member's sample key: its path up to the first dot of its base name (None: no dot)."""
    folder, base = posixpath.split(name)
    stem, dot, _ = base.partition(".")
    return posixpath.join(folder, stem) if dot else None


def _members(raw, max_member) -> Iterator[_Member]:
    """Each regular file of the tar stream `raw`, as a `_Member`. Raises CorruptTar where the
    structure is damaged; malformed pax records (a length of 0, negative, past the header; a
    size that is not a number) damage only the member they describe, whose plain header still
    frames it."""
    stream = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    magic = stream.peek(6)[:6]
    end = None  # where the file ends, when it can be known without reading it
    for prefix, opener in _DECOMPRESSORS:
        if magic.startswith(prefix):
            stream = _Decompressed(opener(stream))
            break
    else:
        if stream.seekable():
            here = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(here)
    header, pax_global, pending, damaged, first = stream.read(512), {}, {}, False, True
    while True:
        if not header and not first:
            return  # the end-of-archive blocks are missing; tarfile accepts that too
        if len(header) < 512:
            raise CorruptTar("unexpected end of tar data")
        if header == b"\0" * 512:
            return
        if not _checksum_ok(header):
            raise CorruptTar("bad tar header checksum" if not first else "not a tar file")
        first = False
        kind = header[156:157]
        size = _number(header[124:136])
        attrs = {**pax_global, **pending}
        if "size" in attrs and kind not in _EXTENDED and not damaged:
            try:
                size = _decimal(attrs["size"])
            except CorruptTar:
                damaged = True
        name = None if kind in _EXTENDED else _name(header, {} if damaged else attrs)
        if size < 0:
            raise CorruptTar(f"negative member size {size}", name)
        padded = -(-size // 512) * 512
        if end is not None and stream.tell() + padded > end:
            raise CorruptTar("a member runs past the end of the file", name)
        if kind in _EXTENDED:
            if size > max_member:
                raise CorruptTar(f"a {size}-byte extended header")
            data = _read_exactly(stream, size)
            _skip(stream, padded - size)
            if kind == b"x":
                try:
                    pending = {**pending, **_pax(data)}
                except CorruptTar:
                    damaged = True
            elif kind == b"g":
                pax_global = {**pax_global, **_pax(data)}  # every later member's: the shard's end
            elif kind == b"L":
                pending = {**pending, "path": data.split(b"\0", 1)[0]}
        else:
            if kind in _REGULAR and not (kind == b"\0" and name.endswith("/")):
                member = _Member(stream, name, size, damaged)
                yield member
                _skip(stream, padded - size if member.was_read else padded)
            else:
                _skip(stream, padded)
            pending, damaged = {}, False
        header = stream.read(512)


class _Decompressed(io.RawIOBase):
    """A decompressing stream whose decoding errors are CorruptTar (a damaged shard, not a bug)."""

    def __init__(self, stream):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise CorruptTar(f"does not decompress: {e}") from None


def _read_exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) < n:
        raise CorruptTar("unexpected end of tar data")
    return data


def _skip(stream, n: int) -> None:
    """Skip n bytes without keeping them: a seek where the stream has one, else chunked reads."""
    if n <= 0:
        return
    if stream.seekable():
        stream.seek(n, io.SEEK_CUR)
        return
    while n > 0:
        got = len(stream.read(min(n, _SKIP_CHUNK)))
        if not got:
            raise CorruptTar("unexpected end of tar data")
        n -= got


def _name(header: bytes, attrs: dict) -> str:
    if "path" in attrs:
        return attrs["path"].decode("utf-8", "surrogateescape")
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0" and prefix:
        name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    field = field.split(b"\0", 1)[0].strip()
    if field and not all(48 <= b <= 55 for b in field):
        raise CorruptTar(f"bad octal number {field[:20]!r}")
    return int(field, 8) if field else 0


def _decimal(value: bytes) -> int:
    """A pax number: ASCII digits only (int() would also take signs, spaces and underscores)."""
    if not value.isdigit() or len(value) > 20:
        raise CorruptTar(f"bad pax number {value[:20]!r}")
    return int(value)


def _pax(data: bytes) -> dict:
    """Records `LENGTH KEY=VALUE\\n`, LENGTH counting the whole record, as POSIX defines them."""
    records, i = {}, 0
    while i < len(data) and data[i:i + 1] != b"\0":
        space = data.find(b" ", i, i + 21)
        if space < 0:
            raise CorruptTar("bad pax record")
        length = _decimal(data[i:space])
        record = data[space + 1:i + length]
        if length <= space - i + 1 or i + length > len(data) or not record.endswith(b"\n"):
            raise CorruptTar(f"bad pax record length {length}")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise CorruptTar("bad pax record")
        records[key.decode("utf-8", "surrogateescape")] = value
        i += length
    return records


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except CorruptTar:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 256
    if stored == unsigned:
        return True
    high = sum(1 for b in header[:148] + header[156:] if b > 127)
    return stored == unsigned - 256 * high


class TarWriter:
    """webdataset.TarWriter's members (same tarfile stream, names, sorted extensions, mode 0o444,
    user and group "bigdata", mtime now), for samples of bytes and str values, without
    importing webdataset (which imports torch: seconds per executor process). The headers are
    plain ustar, as img2dataset's shards (webdataset means to write ustar but hands tarfile its
    default, PAX, which costs every member an extended header for its float mtime). The one
    tar writer of every stage that writes shards."""

    def __init__(self, raw):
        import tarfile

        self._tarfile = tarfile
        self._tar = tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, sample: dict) -> None:
        import io
        import time

        key = sample["__key__"]
        for ext in sorted(sample):
            if ext == "__key__" or ext[0] == "_":
                continue
            value = sample[ext]
            if isinstance(value, str):
                value = value.encode("utf-8")
            info = self._tarfile.TarInfo(key + "." + ext)
            info.size = len(value)
            info.mtime = time.time()
            info.mode = 0o0444
            info.uname = info.gname = "bigdata"
            self._tar.addfile(info, io.BytesIO(value))

    def close(self) -> None:
        self._tar.close()
