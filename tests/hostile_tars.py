"""Hostile WebDataset tars made on the fly: malformed pax records, oversized (gzip bomb) members,
cut and empty files, foreign member paths and json."""

import gzip
import io
import json
import tarfile

from PIL import Image


def jpeg(size=(96, 80), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def member(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One ustar member: header, data, padding to 512 bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = len(data), kind, 1
    return info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def sample(key: str, image: bytes | None = None, text: str = "a red square", meta=None) -> bytes:
    """The members of one sample: KEY.jpg, KEY.txt, KEY.json."""
    meta = {"uid": f"uid-{key}", "caption": text} if meta is None else meta
    return (member(f"{key}.jpg", jpeg() if image is None else image) + member(f"{key}.txt", text.encode())
            + member(f"{key}.json", json.dumps(meta).encode()))


END = b"\0" * 1024

def pax_record(key: str, value: bytes) -> bytes:
    """A well-framed pax record `LENGTH KEY=VALUE\\n` (LENGTH counts itself)."""
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


# pax records that once hung or crashed the reader: a record length of 0 (the loop never
# advanced), a negative one, a size of 10^30 (OverflowError) and a negative size.
BAD_PAX = {
    "zero_length": b"0 path=x.jpg\n",
    "negative_length": b"-12 path=x.jpg\n",
    "huge_size": pax_record("size", b"1" + b"0" * 30),
    "negative_size": pax_record("size", b"-5"),
}


def pax_shard(records: bytes, before: int = 8, after: int = 8) -> bytes:
    """`before` good samples, then one whose image member has the pax header `records`, then
    `after` good samples: about 40 KB."""
    good = lambda keys: b"".join(sample(f"{k:06d}") for k in keys)  # noqa: E731
    bad = (member("PaxHeaders/bad.jpg", records, tarfile.XHDTYPE) + member(f"{before:06d}.jpg", jpeg())
           + member(f"{before:06d}.txt", b"the bad one"))
    return good(range(before)) + bad + good(range(before + 1, before + 1 + after)) + END


def gzip_bomb_shard(member_bytes: int = 200_000_000) -> bytes:
    """A gzip-compressed tar (a few hundred KB) holding one good sample and one whose image is
    `member_bytes` of zeros."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as gz:
        gz.write(sample("000000"))
        info = tarfile.TarInfo("000001.jpg")
        info.size, info.mtime = member_bytes, 1
        gz.write(info.tobuf(tarfile.USTAR_FORMAT))
        chunk = b"\0" * (1 << 20)
        left = member_bytes
        while left:
            gz.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
        gz.write(b"\0" * (-member_bytes % 512))
        gz.write(member("000001.txt", b"the bomb") + sample("000002") + END)
    return buf.getvalue()
