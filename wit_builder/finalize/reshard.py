"""Copy the kept samples into fixed-size shards `{00000..N}.tar` with sizes.json and per-shard stats.

Kept samples keep their input order (source shard, then position) and sample i of that order
goes to output shard i // samples_per_shard, so an output shard reads a contiguous run of
source shards, each once. One Spark task writes one output shard: `NNNNN.tar` (webdataset's own
TarWriter, as img2dataset uses), `NNNNN.parquet` (the samples' metadata, one row each) and
`NNNNN_stats.json`. The driver then writes `sizes.json` (open_clip's convention).
"""

from __future__ import annotations

import json
import time

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from wit_builder import storage
from wit_builder.phash import phash_hex
from wit_builder.shard.samples import (STATS_SUFFIX, image_of, meta_row, parquet_schema,
                                       sample_meta, shard_stats, write_card, write_sizes)
from wit_builder.shard.tars import TarWriter, read_samples

WRITTEN_SCHEMA = "out_shard int, name string, count long, tar_bytes long, image_bytes long"


def plan(kept: DataFrame, samples_per_shard: int) -> tuple[DataFrame, int]:
    """Kept rows (shard, pos, ...) plus out_shard and out_pos; and the number of output shards.

    Only one row per source shard (its kept count) comes to the driver."""
    counts = sorted((r["shard"], r["n"]) for r in kept.groupBy("shard").agg(F.count("*").alias("n")).collect())
    offsets, total = [], 0
    for shard, n in counts:
        offsets.append((shard, total))
        total += n
    spark = kept.sparkSession
    offsets_df = spark.createDataFrame(offsets or [(0, 0)], "shard int, offset long")
    index = F.col("offset") + F.row_number().over(Window.partitionBy("shard").orderBy("pos")) - 1
    placed = kept.join(F.broadcast(offsets_df), "shard").withColumn("_i", index) \
        .withColumn("out_shard", F.floor(F.col("_i") / samples_per_shard).cast("int")) \
        .withColumn("out_pos", (F.col("_i") % samples_per_shard).cast("int")).drop("_i", "offset")
    return placed, -(-total // samples_per_shard)


def _write_shard(group, tars: list[str], out_dir: str, digits: int, pos_digits: int):
    """applyInPandas body: write one output shard from its planned rows."""
    import pandas as pd

    group = group.sort_values(["shard", "pos"])
    rows = zip(group["shard"], group["pos"], group["out_pos"], group["sha256"], group["phash"])
    return pd.DataFrame([_write_rows(int(group["out_shard"].iloc[0]), rows, tars, out_dir, digits,
                                     pos_digits)])


def _write_rows(out_shard: int, planned_rows, tars: list[str], out_dir: str, digits: int,
                pos_digits: int) -> dict:
    """Write one output shard from its planned rows (shard, pos, out_pos, sha256, phash), in
    (shard, pos) order; return its `WRITTEN_SCHEMA` row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = storage.shard_name(out_shard, digits)
    base = storage.join(out_dir, name)
    wanted = {}
    for shard, pos, out_pos, sha256, phash in planned_rows:
        wanted.setdefault(int(shard), {})[int(pos)] = (int(out_pos), sha256, int(phash))
    rows, image_bytes, start = [], 0, time.time()
    with storage.open_file(base + ".tar", "wb") as raw:
        writer = TarWriter(raw)
        try:  # closed before `raw` whatever happens (else tarfile writes to a closed file)
            for shard, planned in wanted.items():
                left = len(planned)
                # only the planned samples are read: the others' bytes are skipped
                for pos, (_, files, _) in enumerate(read_samples(tars[shard],
                                                                 lambda p, _: p in planned)):
                    row = planned.get(pos)
                    if row is None:
                        continue
                    out_pos, sha256, phash = row
                    key = name + f"{out_pos:0{pos_digits}d}"
                    ext, data = image_of(files)
                    row = meta_row({**sample_meta(files), "key": key, "sha256": sha256,
                                    "phash": phash_hex(phash)}, files, tars[shard])
                    sample = {"__key__": key, ext: data, "txt": files.get("txt", b""),
                              "json": json.dumps(row, indent=4)}
                    writer.write(sample)
                    rows.append(row)
                    image_bytes += len(data)
                    left -= 1
                    if left == 0:
                        break
        finally:
            writer.close()
    with storage.open_file(base + ".parquet", "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), f)
    fs, path = storage.filesystem(base + ".tar")
    written = {"out_shard": out_shard, "name": name + ".tar", "count": len(rows),
               "tar_bytes": int(fs.size(path)), "image_bytes": image_bytes}
    storage.write_json_atomic(base + STATS_SUFFIX, shard_stats(
        len(rows), len(rows), start, time.time(), {"success": len(rows)},
        tar_bytes=written["tar_bytes"], image_bytes=image_bytes,
        sources=sorted({tars[s] for s in wanted})))
    return written


def _finish(written: list[dict], out_dir: str) -> list[dict]:
    """Sort the shards' rows and write sizes.json (open_clip's convention)."""
    written.sort(key=lambda r: r["out_shard"])
    write_sizes(out_dir, {r["name"]: r["count"] for r in written})
    write_card(out_dir, "finalize")
    return written


def _layout(n_shards: int, samples_per_shard: int) -> tuple[int, int]:
    return max(5, len(str(max(n_shards - 1, 0)))), len(str(samples_per_shard - 1))


def write_planned(spark, kept, tars: list[str], out_dir: str, samples_per_shard: int) -> list[dict]:
    """`write` for kept rows already on the driver: `kept` holds (shard, pos, sha256, phash)
    columns (Arrow table or dict of arrays) of every kept sample in (shard, pos) order. Output
    shard i gets samples [i * samples_per_shard, (i + 1) * samples_per_shard) of that order, as
    `plan` places them; one Spark job writes every shard, nothing is shuffled."""
    cols = {c: kept[c] for c in ("shard", "pos", "sha256", "phash")}
    cols = {c: v.to_pylist() if hasattr(v, "to_pylist") else list(v) for c, v in cols.items()}
    total = len(cols["shard"])
    n_shards = -(-total // samples_per_shard)
    digits, pos_digits = _layout(n_shards, samples_per_shard)
    tasks = []
    for out_shard in range(n_shards):
        lo, hi = out_shard * samples_per_shard, min(total, (out_shard + 1) * samples_per_shard)
        tasks.append((out_shard, list(zip(cols["shard"][lo:hi], cols["pos"][lo:hi],
                                          range(hi - lo), cols["sha256"][lo:hi],
                                          cols["phash"][lo:hi]))))
    if not tasks:
        return _finish([], out_dir)

    def body(part):
        for out_shard, rows in part:
            yield _write_rows(out_shard, rows, tars, out_dir, digits, pos_digits)

    slices = min(len(tasks), 4 * spark.sparkContext.defaultParallelism)
    written = spark.sparkContext.parallelize(tasks, slices).mapPartitions(body).collect()
    return _finish(written, out_dir)


def write(kept: DataFrame, tars: list[str], out_dir: str, samples_per_shard: int) -> list[dict]:
    """Write the output shards and sizes.json; return one dict per shard (name, count, bytes)."""
    placed, n_shards = plan(kept, samples_per_shard)
    digits, pos_digits = _layout(n_shards, samples_per_shard)
    def body(group):
        return _write_shard(group, tars, out_dir, digits, pos_digits)

    written = [r.asDict() for r in placed.select("out_shard", "out_pos", "shard", "pos", "phash", "sha256")
               .groupBy("out_shard").applyInPandas(body, WRITTEN_SCHEMA).collect()]
    return _finish(written, out_dir)
