"""Preparing download's input: candidate rows -> the Parquet files img2dataset's Reader reads.

Input: finished stage folders or plain candidate lists (inputs.py). Plain lists get uids computed
from url and text as extract computes them (a list's own `uid` column is kept as `user_id`); one
row per uid is kept (same uid = same url and
text: one sample), rows without a URL are counted, and entry ids become entry strings from the
query list. The files land in OUT/download/_input, hash-partitioned and sorted by uid (which
spreads each host's URLs over the run), written once, so shard i always holds the same rows.
`_input/_prepared.json` records what they were made from: the resume key.
"""

from __future__ import annotations

import hashlib
import json
import math

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.download.prepare_local import prepare_on_driver
from wit_builder.download.rows import (ROW_COLUMNS, ROW_DDL, column_plan, queries_for, query_list,
                                       with_entries, with_uids)

INPUT_DIR = "_input"
_HINT = "give OUT/balance or a candidate list"
SHARDS_PER_INPUT_FILE = 20  # img2dataset's Reader loads one input file at a time in the driver
# Settings that change what a shard contains; the others (threads, timeouts...) may differ
# between an interrupted run and its resumption.
_CONTENT_KEYS = ("image_size", "resize_mode", "resize_only_if_bigger", "encode_quality",
                 "samples_per_shard", "max_bytes", "max_pixels", "max_scans", "max_redirects",
                 "allow_networks", "user_agent", "honor_robots_tag", "honor_robots_txt")


def _resume_key(cfg, inputs: list[str], queries: str) -> str:
    section = cfg.section("download")
    state = {"inputs": [stages.fingerprint(p) for p in inputs + ([queries] if queries else [])],
             "columns": ROW_COLUMNS,  # shards of another layout cannot be resumed
             "download": {k: section[k] for k in _CONTENT_KEYS}}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare(spark, cfg, inputs, out_dir, queries: str | None = None) -> dict:
    """Write (or find from an interrupted run) the candidates img2dataset will read. `queries`:
    the query list naming the entries ("" for none; by default `rows.query_list`'s)."""
    queries = query_list(cfg, inputs) if queries is None else queries
    marker = storage.join(out_dir, INPUT_DIR, "_prepared.json")
    key = _resume_key(cfg, inputs, queries)
    if storage.exists(marker) and storage.read_json(marker).get("key") == key:
        return storage.read_json(marker)
    storage.remove(out_dir)  # another input or setting: nothing here can be reused
    input_dir = storage.join(out_dir, INPUT_DIR)
    per_file = cfg.download.samples_per_shard * SHARDS_PER_INPUT_FILE  # as write_input splits
    counts = (prepare_on_driver(cfg, inputs, queries, input_dir, per_file)
              or _prepare_with_spark(spark, cfg, inputs, queries, input_dir))
    rows_in, missing, n = counts
    prepared = {"key": key, "rows_in": rows_in, "rows": n,
                "shards": shard_count(input_dir, cfg.download.samples_per_shard),
                "drops": {k: v for k, v in {"missing_url": missing,
                                            "duplicate_pair": rows_in - missing - n}.items() if v}}
    storage.write_json_atomic(marker, prepared)
    return prepared


def _prepare_with_spark(spark, cfg, inputs, queries: str, input_dir) -> tuple[int, int, int]:
    """(rows in, rows without a URL, unique rows written) of any input, at any size."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    rows = None
    for path in inputs:  # one at a time: each list may name its columns its own way
        df = _normalised(stage_inputs.read_rows(spark, [path], _HINT), cfg, path)
        rows = df if rows is None else rows.unionByName(df)
    # One row per uid (same uid = same url and text: one sample), with a deterministic
    # representative; rows without a URL gather under uid null.
    rows = rows.mapInArrow(with_uids, rows.schema)
    # Partition by uid ourselves: a cached aggregate keeps its shuffle's partition count (AQE
    # does not coalesce cached plans), which would be spark.sql.shuffle.partitions (200).
    rows = rows.repartition(rows.rdd.getNumPartitions(), "uid")
    others = [c for c in rows.columns if c != "uid"]
    groups = (rows.groupBy("uid").agg(F.count(F.lit(1)).alias("n"),
                                      F.min(F.struct(*others)).alias("r"))
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        has_url = F.col("uid").isNotNull()
        counts = groups.agg(F.sum("n").alias("rows"),
                            F.sum(F.when(~has_url, F.col("n"))).alias("missing"),
                            F.count(F.when(has_url, 1)).alias("unique"),
                            F.max(F.array_max("r.entry_ids")).alias("max_id")).first()
        n = counts["unique"]
        entries, queries_key = queries_for(queries, counts["max_id"])
        bc = spark.sparkContext.broadcast(entries)
        unique = groups.where(has_url).select("uid", *[F.col(f"r.{c}").alias(c) for c in others])
        write_input(unique, n, cfg.download.samples_per_shard, input_dir,
                    lambda batches: with_entries(batches, lambda: bc.value, queries_key))
        bc.unpersist()
    finally:
        groups.unpersist()
    return counts["rows"] or 0, counts["missing"] or 0, n


def write_input(df, n: int, per_shard: int, path: str, map_batches=None) -> None:
    """Parquet files for img2dataset's Reader, each sorted by uid (the order shards follow)."""
    files = max(1, math.ceil(n / (per_shard * SHARDS_PER_INPUT_FILE)))
    df = df.repartition(files, "uid").sortWithinPartitions("uid")
    if map_batches is not None:
        df = df.mapInArrow(map_batches, ROW_DDL)
    df.write.mode("overwrite").parquet(storage.spark_path(path))


def _normalised(df, cfg, path):
    """Our row columns from a stage output or a list with url/text columns (any case)."""
    from pyspark.sql import functions as F

    plan = column_plan(df.columns, cfg, path, storage.exists(storage.join(path, stages.MANIFEST)))

    def col(name, default):
        return F.col(f"`{plan[name]}`") if plan[name] else default

    none = F.lit(None).cast("string")
    no_ids = F.array().cast("array<int>")
    return df.select(
        col("uid", none).cast("string").alias("uid"),
        col("url", none).cast("string").alias("url"),
        F.coalesce(col("text", none).cast("string"), F.lit("")).alias("text"),
        F.coalesce(col("entry_ids", no_ids).cast("array<int>"), no_ids).alias("entry_ids"),
        col("page_url", none).cast("string").alias("page_url"),
        col("source", F.col("_metadata.file_path")).cast("string").alias("source"),
        col("lang", none).cast("string").alias("lang"),
        col("user_id", none).cast("string").alias("user_id"))


def shard_count(input_dir: str, per_shard: int) -> int:
    """How many shards img2dataset's Reader makes of these files (each file starts a shard)."""
    import pyarrow.parquet as pq

    fs, p = storage.filesystem(input_dir)
    total = 0
    for f in sorted(fs.glob(p.rstrip("/") + "/*.parquet")):
        with fs.open(f, "rb") as handle:
            total += math.ceil(pq.ParquetFile(handle).metadata.num_rows / per_shard)
    return total
