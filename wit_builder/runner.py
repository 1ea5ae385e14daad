"""How a stage runs on the driver or on Spark: the one decision, and the operations stages use.

A row stage (match, filter, balance) writes its work once, as functions over Arrow batches and
tables, and hands them to the operations here. `read` decides where they run, from one limit:
local Parquet inputs of at most `[spark] driver_rows` rows in all are read into one Arrow table
on the driver (a Spark job's fixed cost, tenths of a second each and seconds on a fresh session,
is most of a small stage's time; a command whose stages all stay on the driver never starts
Spark); anything larger or remote is a Spark DataFrame. Each operation then runs the same
function on either side, as img2dataset's distributor runs one downloader in processes or in
pyspark:

- `map_batches(rows, fn, schema, shared)`: `fn(batch, shared)` on every batch (Spark:
  `mapInArrow`, `shared` broadcast once);
- `by_key(rows, key, fn, schema)`: `fn(table)` on whole groups of `key` (Spark: one shuffle by
  `key`, `fn` on each partition's rows at once; the driver: on the whole table);
- `sum_by(rows, keys, value)`: the sums of `value` per distinct `keys`, as pandas;
- `run_tasks(ctx, tasks, fn, schema, on_driver)`: `fn(task, i)` for every task (extract's
  files; `tasks_on_driver` decides from the files' bytes);
- `write_with_drops(rows, out_dir)`: the rows whose `drop_reason` is null as Parquet, the others
  counted by reason; returns the result and the kept rows.

tests/integration/test_small_inputs.py runs each stage both ways on the same input and checks
the same rows and drops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage

REASON = "drop_reason"


@dataclass
class Rows:
    """A stage's rows: one Arrow `table` on the driver, or a Spark `frame`."""
    table: pa.Table | None = None
    frame: Any = None
    # Spark broadcasts the frame's plan reads; destroyed once its rows are written
    shipped: list = field(default_factory=list)

    @property
    def on_driver(self) -> bool:
        return self.table is not None

    @property
    def schema(self) -> pa.Schema:
        if self.on_driver:
            return self.table.schema
        from pyspark.sql.pandas.types import to_arrow_schema

        return to_arrow_schema(self.frame.schema)


def read(ctx: stages.Context, inputs: list[str], hint: str, required: list[str]) -> Rows:
    """The inputs' rows, on the driver when they are local and small (the one decision)."""
    table = stage_inputs.read_small(inputs, hint, ctx.cfg.spark.driver_rows)
    rows = Rows(table=table) if table is not None else \
        Rows(frame=stage_inputs.read_rows(ctx.spark, inputs, hint))
    stage_inputs.require_columns(rows.table if rows.on_driver else rows.frame, required, inputs,
                                 hint)
    return rows


def read_parquet(ctx: stages.Context, files: list[str], columns: list[str]) -> Rows:
    """`columns` of Parquet files (a stage's own files, such as download's shard rows), on the
    driver under the same limit."""
    import pyarrow.parquet as pq

    limit = ctx.cfg.spark.driver_rows
    if limit > 0 and not any(storage.is_remote(f) for f in files) and \
            sum(pq.read_metadata(f).num_rows for f in files) <= limit:
        return Rows(table=pa.concat_tables([pq.read_table(f, columns=columns) for f in files]))
    return Rows(frame=ctx.spark.read.parquet(*[storage.spark_path(f) for f in files])
                .select(*columns))


# A stage that reads raw files (extract) knows their bytes, not their rows: it runs them on the
# driver up to this many bytes per row of the limit (1,000,000 rows: 64 MB of input).
BYTES_PER_ROW = 64


def tasks_on_driver(ctx: stages.Context, paths: list[list[str]]) -> bool:
    """Whether tasks reading these files (a list per task) run on the driver: with a local
    master, when the files are on this machine and few bytes (`[spark] driver_rows` x
    BYTES_PER_ROW), or are one task's (one task uses one core either way). One process then
    reads them sooner than a Spark job starts (seconds of JVM warm-up and Python workers on a
    fresh session)."""
    limit = ctx.cfg.spark.driver_rows * BYTES_PER_ROW
    files = [f for task in paths for f in task]
    if limit <= 0 or not ctx.spark.master.startswith("local") or \
            any(storage.is_remote(f) for f in files):
        return False
    if len(paths) == 1:
        return True
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f)
        except OSError:  # a *.paths entry that is not there: its task counts it
            pass
        if total > limit:
            return False
    return True


def run_tasks(ctx: stages.Context, tasks: list, fn: Callable[[Any, int], Iterator[pa.RecordBatch]],
              schema: pa.Schema, on_driver: bool) -> Rows:
    """The batches of `fn(task, i)` for every task: on the driver in turn, or one Spark task
    each (the task list broadcast once)."""
    if on_driver:
        return Rows(table=pa.Table.from_batches(
            [b for i, task in enumerate(tasks) for b in fn(task, i)], schema))
    from pyspark.sql.pandas.types import from_arrow_schema

    # One task per range() id: range() splits n ids into n partitions of one id each.
    indexes = ctx.spark.range(0, len(tasks), 1, numPartitions=len(tasks))
    shipped = ctx.spark.sparkContext.broadcast(tasks)

    def body(batches):
        for batch in batches:
            for i in batch.column(0).to_pylist():
                yield from fn(shipped.value[i], i)

    return Rows(frame=indexes.mapInArrow(body, from_arrow_schema(schema)), shipped=[shipped])


def with_columns(schema: pa.Schema, added: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """`schema` plus `added` columns (a column of the same name is replaced, at the end)."""
    names = {name for name, _ in added}
    return pa.schema([f for f in schema if f.name not in names] +
                     [pa.field(name, kind) for name, kind in added])


def map_batches(rows: Rows, fn: Callable[[pa.RecordBatch, Any], pa.RecordBatch],
                schema: pa.Schema, shared: Any = None, batch_rows: int | None = None) -> Rows:
    """`fn(batch, shared)` on every batch (on the driver: of at most `batch_rows` rows, or as
    read; Spark's are `[spark] arrow_batch_rows`); its batches have `schema`."""
    if rows.on_driver:
        batches = rows.table.to_batches(max_chunksize=batch_rows) or [pa.RecordBatch.from_pylist([], rows.table.schema)]
        out = [fn(b, shared) for b in batches]
        return Rows(table=pa.Table.from_batches(out, schema))
    from pyspark.sql.pandas.types import from_arrow_schema

    spark = rows.frame.sparkSession
    bc = spark.sparkContext.broadcast(shared) if shared is not None else None
    body = lambda batches: (fn(b, bc.value if bc is not None else None) for b in batches)
    return Rows(frame=rows.frame.mapInArrow(body, from_arrow_schema(schema)),
                shipped=rows.shipped + ([bc] if bc is not None else []))


def by_key(rows: Rows, key: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> Rows:
    """`fn(table)` on tables that hold every row of each `key` value they hold (nulls as one
    value); its tables have `schema`."""
    if rows.on_driver:
        return Rows(table=fn(rows.table))
    from pyspark.sql.pandas.types import from_arrow_schema

    frame = rows.frame
    spark = frame.sparkSession
    # The shuffle sized like the input or the cores (not spark.sql.shuffle.partitions' 200:
    # a cached result keeps its plan's partitions as they are).
    parts = max(frame.rdd.getNumPartitions(), spark.sparkContext.defaultParallelism)

    def body(batches):
        batches = list(batches)
        if batches:
            yield from fn(pa.Table.from_batches(batches)).to_batches()

    return Rows(frame=frame.repartition(parts, key).mapInArrow(body, from_arrow_schema(schema)),
                shipped=rows.shipped)


def sum_by(rows: Rows, keys: list[str], value: str):
    """pandas (keys..., value): the sum of `value` per distinct `keys` (nulls a key value of
    their own), sorted by `keys`."""
    if rows.on_driver:
        sums = rows.table.group_by(keys).aggregate([(value, "sum")])
        table = pa.table({**{k: sums.column(k) for k in keys}, value: sums.column(f"{value}_sum")})
        return table.to_pandas().sort_values(keys, ignore_index=True)
    from pyspark.sql import functions as F

    try:
        sums = rows.frame.groupBy(*keys).agg(F.sum(value).alias(value)).toPandas()
    finally:
        _release(rows)
    return sums.sort_values(keys, ignore_index=True)


def write_with_drops(ctx: stages.Context, rows: Rows) -> tuple[stages.StageResult, Rows]:
    """Write the rows whose `drop_reason` is null to ctx.out (without that column); count the
    others by reason. Returns the result and the kept rows (Spark: read back from ctx.out)."""
    if rows.on_driver:
        import pyarrow.parquet as pq

        reasons = rows.table.column(REASON)
        counts = {r["values"]: r["counts"] for r in pc.value_counts(reasons).to_pylist()
                  if r["values"] is not None}
        kept = rows.table.filter(pc.is_null(reasons)).drop_columns([REASON])
        fs, path = storage.filesystem(ctx.out)
        fs.makedirs(path, exist_ok=True)
        with storage.open_file(storage.join(ctx.out, "part-00000.parquet"), "wb") as f:
            pq.write_table(kept, f, compression="zstd")
        return (stages.StageResult(rows_in=rows.table.num_rows, rows_out=kept.num_rows,
                                   drops=counts), Rows(table=kept))
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # Cached, so the rows are computed once for the counts and the write.
    frame = rows.frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {row[REASON]: row["n"] for row in
                  frame.groupBy(REASON).agg(F.count("*").alias("n")).collect()}
        frame.where(F.col(REASON).isNull()).drop(REASON) \
            .write.mode("overwrite").parquet(storage.spark_path(ctx.out))
    finally:
        frame.unpersist()
        _release(rows)
    kept = counts.pop(None, 0)
    written = Rows(frame=ctx.spark.read.parquet(storage.spark_path(ctx.out)))
    return stages.StageResult(rows_in=kept + sum(counts.values()), rows_out=kept,
                              drops=counts), written


def _release(rows: Rows) -> None:
    """Destroy the broadcasts the rows' plan read, once they are computed."""
    for shipped in rows.shipped:
        shipped.destroy()
