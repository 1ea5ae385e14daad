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
   balance stage's own coin (wit_builder.coins.keep_mask).

The kept samples are resharded (reshard.py); every dropped sample's uid, reason, source shard
and key go to `drops/part-00000.parquet` (the report shows some of them). Decisions run on
small metadata rows; image bytes are read twice (hash, copy) and never shuffled. One Spark job
hashes every tar into Parquet rows (OUT/finalize/_samples while the stage runs); up to
`[spark] driver_rows` samples the driver reads them and decides in numpy (`decide`), above it the
Spark plan (`_run_on_spark`) does, with the same results. Then one job reshards (two more for
the Spark plan's own steps).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from wit_builder import inputs as stage_inputs
from wit_builder import storage
from wit_builder.finalize import hashing, neardup, reshard
from wit_builder.stages import Context, Plan, StageResult


def check_config(cfg) -> None:
    neardup.check_bands(cfg.finalize.bands, cfg.finalize.hamming_distance)


def check(cfg, inputs: list[str]) -> Plan:
    """The input shards (Plan.detail)."""
    return Plan(inputs, detail=stage_inputs.input_tars(
        inputs, "give OUT/download or a folder of WebDataset shards"))


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

    from wit_builder.coins import keep_mask

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
    with _drops_writer(out_dir) as writer:
        rows = []
        for r in dropped.toLocalIterator():
            rows.append({"uid": r["uid"], "reason": r["reason"], "source_shard": tars[r["shard"]],
                         "key": r["key"]})
            if len(rows) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=DROPS_SCHEMA))
                rows = []
        writer.write_table(pa.Table.from_pylist(rows, schema=DROPS_SCHEMA))


@contextmanager
def _drops_writer(out_dir: str):
    folder = storage.join(out_dir, "drops")
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f, \
            pq.ParquetWriter(f, DROPS_SCHEMA) as writer:
        yield writer


def _write_drops_of(samples: pa.Table, reasons: list, tars: list[str], out_dir: str) -> None:
    """The driver path's drops file: the same rows `_write_drops` writes."""
    rows = np.flatnonzero(~_is_none(np.array(reasons, dtype=object)))
    picked = samples.select(["uid", "shard", "key"]).take(pa.array(rows, pa.int64()))
    table = pa.table({"uid": picked.column("uid"),
                      "reason": pa.array([reasons[i] for i in rows], pa.string()),
                      "source_shard": pa.array([tars[i] for i in picked.column("shard").to_pylist()],
                                               pa.string()),
                      "key": picked.column("key")}, schema=DROPS_SCHEMA)
    with _drops_writer(out_dir) as writer:
        writer.write_table(table)


# --- the decisions on the driver ---------------------------------------------------------------
#
# The metadata is one small row per sample (uid, entry ids, sha256, pHash, ...: about 200 bytes
# in Arrow, ~0.5 kB with the numpy working copies), so up to `[spark] driver_rows` the rows
# are collected once and every decision is taken here in numpy: the same rules with the same
# results as the Spark plan below (tests/finalize/test_stage.py runs both), in a few jobs
# instead of dozens. Above it the Spark plan runs.


def _first_of_group(keys: np.ndarray) -> np.ndarray:
    """True where keys[i] is the first occurrence of its value."""
    first = np.zeros(len(keys), bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _counts(entry_ids: pa.Array, rows: np.ndarray) -> dict[int, int]:
    picked = entry_ids.take(pa.array(rows, pa.int64()))
    flat = pc.list_flatten(picked).to_numpy(zero_copy_only=False)
    ids, n = np.unique(flat.astype(np.int64), return_counts=True)
    return dict(zip(ids.tolist(), n.tolist()))


def decide(samples: pa.Table, eval_hashes: np.ndarray | None, hamming_distance: int, bands: int,
           t: int, seed: int) -> tuple[list, pa.Table | None]:
    """Every sample's drop reason (None = kept), in the row order of `samples` (sample_schema
    rows), and the entry counts table (or None): steps 1-5 of this module, on the driver."""
    from wit_builder.coins import keep_mask

    reason = np.array(samples.column("drop_reason").to_pylist(), dtype=object)
    phash = samples.column("phash").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    alive = lambda: np.flatnonzero(_is_none(reason))

    if eval_hashes is not None and len(eval_hashes):
        rows = alive()
        hits = neardup.close_pairs_np(phash[rows], eval_hashes, hamming_distance, bands)
        reason[rows[np.isin(phash[rows], hits[:, 0])]] = "eval_contamination"

    rows = alive()
    if len(rows):
        nodes = np.unique(phash[rows])
        labels = neardup.components_np(nodes, neardup.close_pairs_np(nodes, None, hamming_distance,
                                                                      bands))
        cluster = labels[np.searchsorted(nodes, phash[rows])]
        order = pc.sort_indices(pa.table({"uid": samples.column("uid").take(pa.array(rows)),
                                          "rid": samples.column("rid").take(pa.array(rows))}),
                                sort_keys=[("uid", "ascending"), ("rid", "ascending")]).to_numpy()
        ordered = rows[order]
        sha = np.array(samples.column("sha256").take(pa.array(ordered)).to_pylist(), dtype="S64")
        dup = ~_first_of_group(sha)
        near = ~dup & ~_first_of_group(cluster[order])
        reason[ordered[dup]] = "duplicate_image"
        reason[ordered[near]] = "near_duplicate"

    entry_ids = samples.column("entry_ids").combine_chunks()
    with_ids = lambda: np.flatnonzero(_is_none(reason) & ~entry_ids.is_null().to_numpy(zero_copy_only=False))
    rows = with_ids()
    before = _counts(entry_ids, rows)
    if not before:
        return reason.tolist(), None
    if max(before.values()) > t:
        counts = np.zeros(max(before) + 1, np.int64)
        counts[list(before)] = list(before.values())
        take = pa.array(rows, pa.int64())
        keep = keep_mask(samples.column("uid").take(take), entry_ids.take(take), counts, t, seed)
        reason[rows[~keep]] = "balanced_out"
    after = _counts(entry_ids, with_ids())
    ids = sorted(before)
    table = pa.table({"entry_id": pa.array(ids, pa.int32()),
                      "count_before": pa.array([before[e] for e in ids], pa.int64()),
                      "count_after": pa.array([after.get(e, 0) for e in ids], pa.int64())})
    return reason.tolist(), table


def _is_none(values: np.ndarray) -> np.ndarray:
    return np.fromiter((v is None for v in values), bool, len(values))


def _write_entry_counts(entry_counts: pa.Table | None, out_dir: str) -> None:
    if entry_counts is not None:  # already on the driver: written through fsspec, no s3a needed
        folder = storage.join(out_dir, "entry_counts")
        fs, path = storage.filesystem(folder)
        fs.makedirs(path, exist_ok=True)
        with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f:
            pq.write_table(entry_counts, f)


def _result(drops: dict, written: list[dict], tars: list[str], evals: list[str]) -> StageResult:
    kept = drops.pop(None, 0)
    if sum(w["count"] for w in written) != kept:
        raise RuntimeError(f"finalize: wrote {sum(w['count'] for w in written)} samples, expected "
                           f"{kept} (did the input shards change during the run?)")
    return StageResult(rows_in=kept + sum(drops.values()), rows_out=kept, drops=drops,
                       extra={"shards": len(written), "input_shards": len(tars),
                              "eval_images": len(evals),
                              "tar_bytes": sum(w["tar_bytes"] for w in written)})


def _run_on_driver(spark, c, samples: pa.Table, tars, evals, out_dir: str) -> StageResult:
    eval_hashes = None
    if evals:
        got = hashing.hash_files(spark, evals).where(F.col("phash").isNotNull()).toArrow()
        eval_hashes = got.column("phash").to_numpy(zero_copy_only=False).astype(np.int64)
    reasons, entry_counts = decide(samples, eval_hashes, c.hamming_distance, c.bands, c.t, c.seed)
    _write_entry_counts(entry_counts, out_dir)
    _write_drops_of(samples, reasons, tars, out_dir)
    drops = {}
    for r in reasons:
        drops[r] = drops.get(r, 0) + 1
    kept_rows = np.flatnonzero(_is_none(np.array(reasons, dtype=object)))
    kept = samples.select(["shard", "pos", "sha256", "phash"]).take(pa.array(kept_rows, pa.int64()))
    kept = kept.sort_by([("shard", "ascending"), ("pos", "ascending")])
    written = reshard.write_planned(spark, kept, tars, out_dir, c.samples_per_shard)
    return _result(drops, written, tars, evals)


def run(ctx: Context, plan: Plan) -> StageResult:
    spark, out_dir, tars = ctx.spark, ctx.out, plan.detail
    c = ctx.cfg.finalize
    evals = eval_images(c.eval_image_folders)

    hashed = storage.join(out_dir, "_samples")  # the per-sample rows; removed before publishing
    n = hashing.hash_shards_to(spark, tars, c.min_side, c.max_aspect_ratio, hashed)
    if n <= ctx.cfg.spark.driver_rows:
        result = _run_on_driver(spark, c, hashing.read_hashed(hashed, tars), tars, evals, out_dir)
    else:
        from pyspark.sql.pandas.types import from_arrow_schema

        samples = spark.read.schema(from_arrow_schema(hashing.sample_schema())) \
            .parquet(storage.spark_path(hashed))
        result = _run_on_spark(spark, c, samples, tars, evals, out_dir)
    storage.remove(hashed)
    return result


def _run_on_spark(spark, c, samples: DataFrame, tars, evals, out_dir: str) -> StageResult:
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
    _write_entry_counts(entry_counts, out_dir)

    _write_drops(df, tars, out_dir)
    drops = {r["drop_reason"]: r["n"] for r in df.groupBy("drop_reason").agg(F.count("*").alias("n")).collect()}
    written = reshard.write(alive(df), tars, out_dir, c.samples_per_shard)
    return _result(drops, written, tars, evals)
