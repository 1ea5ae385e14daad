"""Finalize: turn downloaded shards into training shards.

Every sample of the download tars is hashed (hashing.py), then judged in this order, each step
looking only at the samples still kept:

1. image filters: undecodable_image, too_small (shorter side), bad_aspect;
2. eval_contamination: pHash within `hamming_distance` of an image of an evaluation folder;
3. duplicate_image: same sha256 as a sample with a smaller uid;
4. near_duplicate: pHash chained within `hamming_distance` to a sample with a smaller uid
   (connected clusters over banded candidate pairs, neardup.py). Byte-identical images share a
   cluster, so 3 and 4 are decided in one pass with the same result as one after the other;
5. balanced_out: exact balance to `t` per query entry on what was really fetched, with the
   balance stage's own coin (wit_builder.balance.stage.keep_mask).

The kept samples are resharded (reshard.py); every dropped sample's uid, reason, source shard
and key go to `drops/part-00000.parquet` (the report shows some of them). Decisions run on small metadata rows; image bytes
are read twice (hash, copy) and never shuffled.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from wit_builder import stages, storage
from wit_builder.errors import UserError
from wit_builder.finalize import hashing, neardup, reshard
from wit_builder.stages import StageResult


def input_tars(inputs: list[str]) -> list[str]:
    tars = []
    for path in inputs:
        if storage.exists(storage.join(path, stages.MANIFEST)):
            stages.require_complete(path)
        tars += storage.list_files(path, suffixes=(".tar",))
    if not tars:
        raise UserError(f"no .tar shards found in {', '.join(inputs)} (give OUT/download or a "
                        "folder of WebDataset shards)")
    return tars


def eval_images(folders: list[str]) -> list[str]:
    return [f for folder in folders for f in storage.list_files(folder, suffixes=hashing.EVAL_IMAGE_SUFFIXES)]


def _drop(df: DataFrame, verdicts: DataFrame) -> DataFrame:
    """Give the still-kept rows named in `verdicts` (rid, reason) that drop reason."""
    return df.join(verdicts.select("rid", F.col("reason").alias("_hit")), "rid", "left") \
        .withColumn("drop_reason", F.coalesce(F.col("drop_reason"), F.col("_hit"))).drop("_hit") \
        .localCheckpoint()


def _duplicates(rows: DataFrame) -> DataFrame:
    """(rid, reason) of every row but the first (smallest uid) of its sha256 or pHash cluster."""
    rank = lambda group: F.row_number().over(Window.partitionBy(group).orderBy("uid", "rid"))
    reason = F.when(rank("sha256") > 1, "duplicate_image").when(rank("cluster") > 1, "near_duplicate")
    return rows.select("rid", reason.alias("reason")).where(F.col("reason").isNotNull())


def _balance_task(batches, counts, t: int, seed: int):
    import pyarrow as pa

    from wit_builder.balance.stage import keep_mask

    for batch in batches:
        keep = keep_mask(batch.column("uid"), batch.column("entry_ids"), counts.value, t, seed)
        yield pa.RecordBatch.from_arrays([batch.column("rid"), pa.array(keep, pa.bool_())],
                                         names=["rid", "keep"])


def _entry_counts(df: DataFrame) -> dict[int, int]:
    """{entry id: kept samples matching it}; one row per query entry reaches the driver."""
    alive = df.where(F.col("drop_reason").isNull() & F.col("entry_ids").isNotNull())
    rows = alive.select(F.explode("entry_ids").alias("entry_id")).groupBy("entry_id").count().collect()
    return {r["entry_id"]: r["count"] for r in rows}


def _balance(df: DataFrame, t: int, seed: int) -> tuple[DataFrame, pa.Table | None]:
    """Mark balanced_out rows with the balance stage's coin, counts taken on what was fetched
    and survived the steps before; also return (entry_id, count_before, count_after), or None
    when no sample carries entry ids (a plain candidate list, never matched)."""
    before = _entry_counts(df)
    if not before:
        return df, None
    if max(before.values()) > t:
        counts = np.zeros(max(before) + 1, np.int64)
        counts[list(before)] = list(before.values())
        shipped = df.sparkSession.sparkContext.broadcast(counts)
        alive = df.where(F.col("drop_reason").isNull() & F.col("entry_ids").isNotNull())
        verdict = alive.select("rid", "uid", "entry_ids").mapInArrow(
            partial(_balance_task, counts=shipped, t=t, seed=seed), "rid long, keep boolean")
        df = _drop(df, verdict.where(~F.col("keep")).select("rid", F.lit("balanced_out").alias("reason")))
        shipped.destroy()  # _drop is eager: the coins are all drawn
    after = _entry_counts(df)
    ids = sorted(before)
    table = pa.table({"entry_id": pa.array(ids, pa.int32()),
                      "count_before": pa.array([before[e] for e in ids], pa.int64()),
                      "count_after": pa.array([after.get(e, 0) for e in ids], pa.int64())})
    return df, table


DROPS_SCHEMA = pa.schema([("uid", pa.string()), ("reason", pa.string()),
                          ("source_shard", pa.string()), ("key", pa.string())])


def _write_drops(df: DataFrame, tars: list[str], out_dir: str, batch_rows: int = 65_536) -> None:
    """OUT/finalize/drops/part-00000.parquet: (uid, reason, source_shard, key) of every dropped
    sample, so the report can show dropped images. Rows stream to the driver a partition at a
    time and are written in batches (small metadata, bounded memory), through fsspec."""
    dropped = df.where(F.col("drop_reason").isNotNull()) \
        .select("uid", F.col("drop_reason").alias("reason"), "shard", "key")
    folder = storage.join(out_dir, "drops")
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f, \
            pq.ParquetWriter(f, DROPS_SCHEMA) as writer:
        rows = []
        for r in dropped.toLocalIterator():
            rows.append({"uid": r["uid"], "reason": r["reason"], "source_shard": tars[r["shard"]],
                         "key": r["key"]})
            if len(rows) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=DROPS_SCHEMA))
                rows = []
        writer.write_table(pa.Table.from_pylist(rows, schema=DROPS_SCHEMA))


def run(spark, cfg, inputs: list[str], out_dir: str) -> StageResult:
    c = cfg.finalize
    neardup.check_bands(c.bands, c.hamming_distance)
    tars = input_tars(inputs)
    evals = eval_images(c.eval_image_folders)

    samples = hashing.hash_shards(spark, tars, c.min_side, c.max_aspect_ratio,
                                  cfg.spark.arrow_batch_rows).persist(StorageLevel.MEMORY_AND_DISK)
    samples.count()  # hash once: later plans read the cache instead of decoding again
    alive = lambda frame: frame.where(F.col("drop_reason").isNull())

    df = samples
    if evals:
        eval_hashes = hashing.hash_files(spark, evals).where(F.col("phash").isNotNull())
        hits = neardup.close_pairs(alive(df), eval_hashes, c.hamming_distance, c.bands)
        contaminated = alive(df).join(hits.select(F.col("a").alias("phash")).distinct(), "phash")
        df = _drop(df, contaminated.select("rid", F.lit("eval_contamination").alias("reason")))

    clustered = neardup.cluster_ids(alive(df).select("rid", "uid", "phash", "sha256"),
                                    c.hamming_distance, c.bands)
    df = _drop(df, _duplicates(clustered))

    df, entry_counts = _balance(df, c.t, c.seed)
    if entry_counts is not None:  # already on the driver: written through fsspec, no s3a needed
        folder = storage.join(out_dir, "entry_counts")
        fs, path = storage.filesystem(folder)
        fs.makedirs(path, exist_ok=True)
        with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f:
            pq.write_table(entry_counts, f)

    _write_drops(df, tars, out_dir)
    drops = {r["drop_reason"]: r["n"] for r in df.groupBy("drop_reason").agg(F.count("*").alias("n")).collect()}
    kept = drops.pop(None, 0)
    written = reshard.write(alive(df), tars, out_dir, c.samples_per_shard)
    samples.unpersist()
    if sum(w["count"] for w in written) != kept:
        raise RuntimeError(f"finalize: wrote {sum(w['count'] for w in written)} samples, expected "
                           f"{kept} (did the input shards change during the run?)")
    return StageResult(rows_in=kept + sum(drops.values()), rows_out=kept, drops=drops,
                       extra={"shards": len(written), "input_shards": len(tars),
                              "eval_images": len(evals),
                              "tar_bytes": sum(w["tar_bytes"] for w in written)})
