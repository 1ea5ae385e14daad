"""Read WebDataset tars and hash their images: sha256 of the bytes, 64-bit pHash of the pixels.

`hash_shards_to` runs one Spark job (a few tasks per core, several tars each) that writes small
metadata rows per tar to Parquet (never the image bytes); the finalize decisions are made on
those rows and the images are copied only once, by the reshard step.
"""

from __future__ import annotations

import hashlib
from functools import partial

from wit_builder import images, storage
from wit_builder.phash import image_facts
from wit_builder.shard.samples import image_of, sample_meta
from wit_builder.shard.tars import read_samples

EVAL_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def sample_schema():
    """Arrow schema of the per-sample rows; `rid` = shard << 32 | position names a sample."""
    import pyarrow as pa

    return pa.schema([("rid", pa.int64()), ("shard", pa.int32()), ("pos", pa.int32()),
                      ("key", pa.string()), ("uid", pa.string()), ("entry_ids", pa.list_(pa.int32())),
                      ("sha256", pa.string()), ("phash", pa.int64()), ("width", pa.int32()),
                      ("height", pa.int32()), ("drop_reason", pa.string())])


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
        with storage.open_file(_part_file(folder, shard), "wb") as f:
            pq.write_table(table, f)
        yield shard, table.num_rows


def hash_shards_to(spark, tars: list[str], min_side: int, max_aspect_ratio: float,
                   folder: str) -> None:
    """Hash every sample of `tars` in one Spark job (a few tasks per core) into `sample_schema()`
    Parquet files under `folder` (part-SHARD.parquet, one per tar).
    The rows are stored once, so the driver can read them when they are few and Spark when
    they are many, without hashing twice and without caching them in executor memory."""
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    # a few tasks per core, several tars each: a task costs tens of milliseconds to launch
    slices = max(1, min(len(tars), 4 * spark.sparkContext.defaultParallelism))
    spark.sparkContext.parallelize(list(enumerate(tars)), slices) \
        .mapPartitions(partial(_hash_to_parquet, folder=folder, min_side=min_side,
                               max_aspect_ratio=max_aspect_ratio)).collect()


def hashed_files(folder: str, tars: list[str]) -> list[str]:
    """The Parquet files `hash_shards_to` wrote, in shard order."""
    return [_part_file(folder, shard) for shard in range(len(tars))]


def _part_file(folder: str, shard: int) -> str:
    return storage.join(folder, f"part-{shard:06d}.parquet")


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
