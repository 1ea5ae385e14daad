"""Read WebDataset tars and hash their images: sha256 of the bytes, 64-bit pHash of the pixels.

`hash_shards_to` runs one Spark job (a few tasks per core, several tars each) that writes small
metadata rows per tar to Parquet (never the image bytes); the finalize decisions are made on
those rows and the images are copied only once, by the reshard step.
"""

from __future__ import annotations

import hashlib
from functools import partial

import numpy as np
from PIL import Image as _Image

from wit_builder import images, storage
from wit_builder.shard.samples import image_of, sample_meta
from wit_builder.shard.tars import read_samples

_LANCZOS = _Image.Resampling.LANCZOS  # imagehash's ANTIALIAS
EVAL_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def sample_schema():
    """Arrow schema of the per-sample rows; `rid` = shard << 32 | position names a sample."""
    import pyarrow as pa

    return pa.schema([("rid", pa.int64()), ("shard", pa.int32()), ("pos", pa.int32()),
                      ("key", pa.string()), ("uid", pa.string()), ("entry_ids", pa.list_(pa.int32())),
                      ("sha256", pa.string()), ("phash", pa.int64()), ("width", pa.int32()),
                      ("height", pa.int32()), ("drop_reason", pa.string())])


def phash_hex(value: int) -> str:
    """The 16-hex-digit form imagehash prints (`str(imagehash.phash(img))`)."""
    return format(value & 0xFFFF_FFFF_FFFF_FFFF, "016x")


def _dct_rows():
    """The first 8 rows of scipy.fftpack's unnormalised 32-point DCT-II matrix."""
    global _DCT8
    if _DCT8 is None:
        k, n = np.arange(8)[:, None], np.arange(32)[None, :]
        _DCT8 = 2.0 * np.cos(np.pi * k * (2 * n + 1) / 64)
    return _DCT8


_DCT8 = None
_TIE = 1e-6  # a low-frequency coefficient this close to the median takes imagehash's own path


def phash_of_gray(gray) -> int:
    """imagehash.phash of a grayscale PIL image as a signed 64-bit int, bit for bit.

    Same 32x32 LANCZOS thumbnail and 2-D DCT-II as imagehash; only the 8x8 low frequencies are
    computed (two small matrix products instead of two full FFT-based DCTs). Products and FFT
    round differently in the last bits, so when a coefficient lies within _TIE of the median
    (where a rounding difference could flip its bit) the hash is computed with scipy.fftpack
    exactly as imagehash does."""
    pixels = np.asarray(gray.resize((32, 32), _LANCZOS), dtype=np.float64)
    c = _dct_rows()
    low = c @ pixels @ c.T
    middle = np.partition(low.ravel(), (31, 32))  # np.median's two middle values, its mean
    med = (middle[31] + middle[32]) / 2
    if np.min(np.abs(low - med)) < _TIE:
        import scipy.fftpack

        dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
        low = dct[:8, :8]
        med = np.median(low)
    bits = np.packbits((low > med).flatten())
    return int.from_bytes(bits.tobytes(), "big", signed=True)


def _gray_thumbnail_source(data: bytes):
    """((width, height), the image decoded to grayscale in draft mode) of an encoded image, or
    None if it does not decode; ImageRefused when it is over `images`' bounds (pixels, scans),
    before anything is decoded.

    pHash looks at a 32x32 thumbnail: the JPEG decoder may scale down by up to 8x in the DCT (a
    no-op for other formats). The whole stream is still decoded, so a truncated file fails here
    as it should."""
    try:
        img = images.open_checked(data)
    except images.ImageRefused as e:
        if e.reason == "not_an_image":
            return None
        raise
    try:
        with img:
            size = img.size
            img.draft("L", (64, 64))
            return size, img.convert("L")
    except Exception:  # any decoder error is bad data: the caller counts it as a drop
        return None


def image_facts(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, pHash as a signed 64-bit int) of an encoded image; None if it does not
    decode, ImageRefused if it is too big to decode (images.open_checked).

    The pHash is imagehash.phash of the image decoded in draft mode, bit for bit."""
    decoded = _gray_thumbnail_source(data)
    if decoded is None:
        return None
    (width, height), gray = decoded
    return width, height, phash_of_gray(gray)


def image_facts_reference(data: bytes) -> tuple[int, int, int] | None:
    """image_facts through imagehash.phash itself (the reference the fast path is tested on)."""
    import imagehash

    decoded = _gray_thumbnail_source(data)
    if decoded is None:
        return None
    (width, height), gray = decoded
    bits = np.packbits(imagehash.phash(gray).hash.flatten())
    return width, height, int.from_bytes(bits.tobytes(), "big", signed=True)


def _entry_ids(meta: dict) -> list[int] | None:
    ids = meta.get("entry_ids")
    try:
        ids = sorted({int(i) for i in ids}) if ids is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return ids if not ids or (ids[0] >= 0 and ids[-1] < 2**31) else None  # an int32 column


def judge(facts, min_side: int, max_aspect_ratio: float) -> str | None:
    """The drop reason of an image by its decoded facts, or None to keep it."""
    if facts is None:
        return "undecodable_image"
    width, height, _ = facts
    if min(width, height) < min_side:
        return "too_small"
    if max(width, height) > max_aspect_ratio * min(width, height):
        return "bad_aspect"
    return None


def _shard_rows(shard: int, path: str, min_side: int, max_aspect_ratio: float):
    """One row per sample of the tar, and one per problem the reader reports (tars.py): an
    oversized member or a damaged shard is that sample's drop reason."""
    for pos, sample in enumerate(read_samples(path)):
        meta = sample_meta(sample.files)
        _, data = image_of(sample.files)
        facts, reason = None, sample.problem
        if reason is None:
            try:
                facts = image_facts(data) if data is not None else None
                reason = judge(facts, min_side, max_aspect_ratio)
            except images.ImageRefused as e:  # too big to decode
                reason = e.reason
        yield {
            "rid": shard << 32 | pos, "shard": shard, "pos": pos, "key": sample.key,
            # a foreign sample without a uid gets its place (its key may repeat in the shard)
            "uid": str(meta.get("uid") or f"{shard}:{pos}"),
            "entry_ids": _entry_ids(meta),
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "phash": facts[2] if facts else None,
            "width": facts[0] if facts else None,
            "height": facts[1] if facts else None,
            "drop_reason": reason,
        }


def _hash_to_parquet(part, folder: str, min_side: int, max_aspect_ratio: float):
    """Task body: hash each (shard, tar) of the partition into FOLDER/part-SHARD.parquet; yield
    (shard, rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = sample_schema()
    for shard, path in part:
        table = pa.Table.from_pylist(list(_shard_rows(shard, path, min_side, max_aspect_ratio)),
                                     schema=schema)
        with storage.open_file(storage.join(folder, f"part-{shard:06d}.parquet"), "wb") as f:
            pq.write_table(table, f)
        yield shard, table.num_rows


def hash_shards_to(spark, tars: list[str], min_side: int, max_aspect_ratio: float,
                   folder: str) -> int:
    """Hash every sample of `tars` in one Spark job (a few tasks per core) into `sample_schema()`
    Parquet files under `folder` (part-SHARD.parquet, one per tar); return the number of rows.
    The rows are stored once, so the driver can read them when they are few and Spark when
    they are many, without hashing twice and without caching them in executor memory."""
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    # a few tasks per core, several tars each: a task costs tens of milliseconds to launch
    slices = max(1, min(len(tars), 4 * spark.sparkContext.defaultParallelism))
    counts = spark.sparkContext.parallelize(list(enumerate(tars)), slices) \
        .mapPartitions(partial(_hash_to_parquet, folder=folder, min_side=min_side,
                               max_aspect_ratio=max_aspect_ratio)).collect()
    return sum(n for _, n in counts)


def read_hashed(folder: str, tars: list[str]):
    """The rows `hash_shards_to` wrote, as one Arrow table in shard order (driver side)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for shard in range(len(tars)):
        with storage.open_file(storage.join(folder, f"part-{shard:06d}.parquet"), "rb") as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables) if tables else sample_schema().empty_table()


def _eval_task(batches):
    import pyarrow as pa

    for batch in batches:
        paths = batch.column("path").to_pylist()
        hashes = []
        for path in paths:
            with storage.open_file(path, "rb") as f:
                data = f.read()
            try:
                facts = image_facts(data)
            except images.ImageRefused:  # too big to decode: like an undecodable file
                facts = None
            hashes.append(facts[2] if facts else None)
        yield pa.RecordBatch.from_arrays([pa.array(paths, pa.string()), pa.array(hashes, pa.int64())],
                                         names=["path", "phash"])


def hash_files(spark, paths: list[str]):
    """DataFrame (path, phash) of image files (evaluation sets); undecodable files get a null."""
    slices = max(1, min(len(paths), spark.sparkContext.defaultParallelism * 4))
    rdd = spark.sparkContext.parallelize([(p,) for p in paths], slices)
    return spark.createDataFrame(rdd, "path string").mapInArrow(_eval_task, "path string, phash long")
