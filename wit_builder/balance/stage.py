"""`balance`: at most about `t` pairs per query entry (CLIP: 20,000), head entries subsampled.

count[e] = number of pairs matching entry e; p[e] = min(1, t / count[e]). Each (pair, entry) gets
a coin, a uniform in [0, 1) derived from a hash of (uid, entry id, seed); a pair is kept when
any of its entries' coins is below p[e], so P(keep) = 1 - prod(1 - p[e]). The coins depend on
nothing but the pair, so the result does not depend on partitioning, executors or reruns.
The coins (coins.py) are shared with finalize's exact balance.

Output: the kept rows (same columns), OUT/balance/entry_counts/ (entry_id, count_before,
count_after, p; Parquet) and a head/tail summary in the manifest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.coins import ENTRY_IDS, keep_mask

BALANCED_OUT = "balanced_out"
COUNTS_DIR = "entry_counts"
# --- the stage ----------------------------------------------------------------------------------

def _entry_counts(df, name: str):
    from pyspark.sql import functions as F

    return (df.select(F.explode(ENTRY_IDS).alias("entry_id"))
            .groupBy("entry_id").agg(F.count("*").alias(name)))


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    import pandas as pd
    import pyarrow.parquet as pq

    t, seed = cfg.balance.t, cfg.balance.seed
    hint = "give the output of match or filter"
    rows = stage_inputs.read_small(inputs, hint, cfg.spark.driver_rows)
    if rows is not None:  # small: on the driver, without Spark jobs' fixed cost
        stage_inputs.require_columns(rows, ["uid", ENTRY_IDS], inputs, hint)
        result, before, after = _balance_local(rows, t, seed, out_dir)
    else:
        result, before, after = _balance_with_spark(spark, inputs, hint, t, seed, out_dir)
    table = before.merge(after, on="entry_id", how="left").fillna({"count_after": 0})
    table = table.astype({"entry_id": "int32", "count_before": "int64", "count_after": "int64"})
    table = table.sort_values("entry_id", ignore_index=True)
    table["p"] = np.minimum(1.0, t / table["count_before"])
    counts_dir = storage.join(out_dir, COUNTS_DIR)  # small, on the driver: through fsspec
    fs, path = storage.filesystem(counts_dir)
    fs.makedirs(path, exist_ok=True)
    with storage.open_file(storage.join(counts_dir, "part-00000.parquet"), "wb") as f:
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(table), preserve_index=False), f)
    result.extra = {"balance": summary(table, t)}
    return result


def _counts_array(before) -> np.ndarray:
    size = int(before["entry_id"].max()) + 1 if len(before) else 0
    counts = np.zeros(size, np.int64)
    counts[before["entry_id"].to_numpy()] = before["count_before"].to_numpy()
    return counts


def _with_reasons(batch: pa.RecordBatch, counts: np.ndarray, t: int, seed: int):
    kept = keep_mask(batch.column("uid"), batch.column(ENTRY_IDS), counts, t, seed)
    reason = pa.array(np.where(kept, None, BALANCED_OUT), pa.string())
    return pa.RecordBatch.from_arrays(batch.columns + [reason],
                                      names=batch.schema.names + ["drop_reason"])


def _local_entry_counts(entry_ids, name: str):
    import pandas as pd

    flat = pc.list_flatten(entry_ids).to_numpy(zero_copy_only=False)
    ids, n = np.unique(flat.astype(np.int64), return_counts=True)
    return pd.DataFrame({"entry_id": ids.astype(np.int32), name: n.astype(np.int64)})


def _balance_local(rows: pa.Table, t: int, seed: int, out_dir: str):
    rows = rows.drop_columns([c for c in ("drop_reason",) if c in rows.column_names])
    before = _local_entry_counts(rows.column(ENTRY_IDS), "count_before")
    counts = _counts_array(before)
    batches = rows.to_batches() or [pa.RecordBatch.from_pylist([], schema=rows.schema)]
    annotated = pa.Table.from_batches([_with_reasons(b, counts, t, seed) for b in batches])
    result = stages.write_with_drops_local(annotated, out_dir)
    kept = annotated.filter(pc.is_null(annotated.column("drop_reason")))
    return result, before, _local_entry_counts(kept.column(ENTRY_IDS), "count_after")


def _balance_with_spark(spark, inputs, hint, t: int, seed: int, out_dir: str):
    from pyspark.sql.types import StringType, StructField, StructType

    df = stage_inputs.read_rows(spark, inputs, hint)
    stage_inputs.require_columns(df, ["uid", ENTRY_IDS], inputs, hint)
    before = _entry_counts(df, "count_before").toPandas()
    shipped = spark.sparkContext.broadcast(_counts_array(before))
    schema = StructType(df.schema.fields + [StructField("drop_reason", StringType())])
    result = stages.write_with_drops(
        df.mapInArrow(lambda batches: (_with_reasons(b, shipped.value, t, seed) for b in batches),
                      schema), out_dir)
    shipped.destroy()
    after = _entry_counts(spark.read.parquet(storage.spark_path(out_dir)), "count_after").toPandas()
    return result, before, after


def summary(table, t: int) -> dict:
    """Head (count > t) vs tail: how many entries, and their share of matches before and after."""
    head = table["count_before"] > t
    total_before, total_after = int(table["count_before"].sum()), int(table["count_after"].sum())
    share = lambda col, total: round(float(table.loc[head, col].sum()) / total, 6) if total else 0.0
    return {"t": t, "entries_matched": int(len(table)), "head_entries": int(head.sum()),
            "pairs_before": total_before, "pairs_after": total_after,
            "head_share_before": share("count_before", total_before),
            "head_share_after": share("count_after", total_after),
            "max_count_before": int(table["count_before"].max()) if len(table) else 0,
            "max_count_after": int(table["count_after"].max()) if len(table) else 0}
