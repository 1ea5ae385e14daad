"""How a stage runs on the driver or on Spark: the one decision, and the operations stages use.

A row stage (match, filter, balance) writes its work once, as functions over Arrow batches and
tables, and hands them to the operations here. `read` decides where they run, from one limit:
local Parquet inputs of at most `[spark] driver_rows` rows in all are read into one Arrow table
on the driver (a Spark job's fixed cost, tenths of a second each and seconds on a fresh session,
is most of a small stage's time; a command whose stages all stay on the driver never starts
Spark); anything larger or remote is a Spark DataFrame. Each operation then runs the same
function on either side, as img2dataset's distributor runs one downloader in processes or in
pyspark:
`map_batches` and `by_key` (Arrow functions per batch or per whole group of a key), `lookup` (a
left join), `sum_by` and `count_by`, `run_tasks` (a function per task, such as extract's files),
`materialize`, `batches` and `table` (compute the rows, or bring them to the driver) and
`write_with_drops` (the kept rows written, the others counted by reason).

tests/integration/test_small_inputs.py (and each stage's own tests) run a stage both ways on
the same input and check the same rows and drops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import accumulate
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
    driver under the same limit, local or remote (through fsspec: their footers first, until
    the rows are over the limit)."""
    import pyarrow.parquet as pq

    def rows_of(path: str) -> int:
        with storage.open_file(path, "rb") as f:
            return pq.read_metadata(f).num_rows

    def read(path: str) -> pa.Table:
        with storage.open_file(path, "rb") as f:
            return pq.read_table(f, columns=columns)

    limit = ctx.cfg.spark.driver_rows
    if limit > 0 and all(n <= limit for n in accumulate(map(rows_of, files))):
        return Rows(table=pa.concat_tables([read(f) for f in files]))
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
    return len(paths) == 1 or all(n <= limit for n in accumulate(map(_size, files)))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # a *.paths entry that is not there: its task counts it
        return 0


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


def by_key(rows: Rows, key: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema,
           spread: stages.Context | None = None) -> Rows:
    """`fn(table)` on tables that hold every row of each `key` value they hold (nulls as one
    value); its tables have `schema`. `spread`: rows on the driver go to Spark tasks too, cut
    at `key` boundaries, and their results come back to the driver (work that is heavy per
    row, such as writing shards, then uses every core)."""
    if rows.on_driver and spread is None:
        return Rows(table=fn(rows.table))
    if rows.on_driver:
        context = spread.spark.sparkContext
        pieces = _pieces(rows.table, key, 4 * context.defaultParallelism)
        done = context.parallelize(pieces, len(pieces)).map(fn).collect() if pieces else []
        return Rows(table=pa.concat_tables([schema.empty_table(), *done]))
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


def runs(keys) -> tuple:
    """Start and length of each run of equal values of sorted `keys` (a numpy array)."""
    import numpy as np

    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, int)
    return starts, np.diff(np.r_[starts, len(keys)])


def _pieces(table: pa.Table, key: str, n: int) -> list[pa.Table]:
    """`table` sorted by `key` and cut into at most `n` pieces of about equal rows, each
    holding every row of the `key` values it holds."""
    import numpy as np

    table = table.sort_by(key)
    keys = table.column(key).to_numpy(zero_copy_only=False)
    if not len(keys):
        return []
    starts, _ = runs(keys)
    wanted = np.searchsorted(starts, np.linspace(0, len(keys), n + 1)[1:-1])  # the next start
    edges = np.unique(np.r_[0, starts[np.minimum(wanted, len(starts) - 1)], len(keys)])
    return [table.slice(lo, hi - lo) for lo, hi in zip(edges[:-1], edges[1:])]


def sum_by(rows: Rows, keys: list[str], value: str) -> pa.Table:
    """(keys..., value) on the driver: the sum of `value` per distinct `keys` (nulls a key value
    of their own), sorted by `keys`."""
    if rows.on_driver:
        sums = rows.table.group_by(keys).aggregate([(value, "sum")])
        sums = pa.table({**{k: sums.column(k) for k in keys}, value: sums.column(f"{value}_sum")})
    else:
        from pyspark.sql import functions as F

        try:
            sums = rows.frame.groupBy(*keys).agg(F.sum(value).alias(value)).toArrow()
        finally:
            release(rows)
    return sums.sort_by([(k, "ascending") for k in keys])


def count_by(rows: Rows, key: str) -> dict:
    """{value of `key`: rows with it} (null a value of its own)."""
    if rows.on_driver:
        return {r["values"]: r["counts"] for r in pc.value_counts(rows.table.column(key)).to_pylist()}
    from pyspark.sql import functions as F

    return {r[key]: r["n"] for r in rows.frame.groupBy(key).agg(F.count("*").alias("n")).collect()}


def lookup(rows: Rows, key: str, other: Rows, other_key: str, columns: list[str]) -> Rows:
    """`rows` plus `columns` of the `other` row whose `other_key` equals their `key` (`other`'s
    keys are unique, its rows on the same side as `rows`; null where none is)."""
    if rows.on_driver:
        at = pc.index_in(rows.table.column(key), value_set=other.table.column(other_key))
        table = rows.table
        for name in columns:
            table = table.append_column(name, other.table.column(name).take(at))
        return Rows(table=table)
    from pyspark.sql import functions as F

    right = other.frame.select(F.col(other_key).alias(key), *columns)
    joined = rows.frame.join(right, key, "left").select(*rows.frame.columns, *columns)
    return Rows(frame=joined, shipped=rows.shipped + other.shipped)


def materialize(rows: Rows) -> Rows:
    """The rows computed now (Spark: a local checkpoint, its broadcasts then released)."""
    if rows.on_driver:
        return rows
    frame = rows.frame.localCheckpoint()
    release(rows)
    return Rows(frame=frame)


def batches(rows: Rows, batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """The rows on the driver, up to `batch_rows` at a time (Spark: a partition at a time)."""
    if rows.on_driver:
        yield from (pa.Table.from_batches([b]) for b in rows.table.to_batches(max_chunksize=batch_rows))
        return
    schema, chunk = rows.schema, []
    for row in rows.frame.toLocalIterator():
        chunk.append(row.asDict())
        if len(chunk) == batch_rows:
            yield pa.Table.from_pylist(chunk, schema)
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(chunk, schema)
    release(rows)


def table(rows: Rows) -> pa.Table:
    """The rows as one Arrow table on the driver."""
    if rows.on_driver:
        return rows.table
    try:
        return rows.frame.toArrow()
    finally:
        release(rows)


def write_with_drops(ctx: stages.Context, rows: Rows) -> tuple[stages.StageResult, Rows]:
    """Write the rows whose `drop_reason` is null to ctx.out (without that column); count the
    others by reason. Returns the result and the kept rows (Spark: read back from ctx.out)."""
    if rows.on_driver:
        import pyarrow.parquet as pq

        counts = count_by(rows, REASON)
        counts.pop(None, 0)
        kept = rows.table.filter(pc.is_null(rows.table.column(REASON))).drop_columns([REASON])
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
        counts = count_by(Rows(frame=frame), REASON)
        frame.where(F.col(REASON).isNull()).drop(REASON) \
            .write.mode("overwrite").parquet(storage.spark_path(ctx.out))
    finally:
        frame.unpersist()
        release(rows)
    kept = counts.pop(None, 0)
    written = Rows(frame=ctx.spark.read.parquet(storage.spark_path(ctx.out)))
    return stages.StageResult(rows_in=kept + sum(counts.values()), rows_out=kept,
                              drops=counts), written


def release(rows: Rows) -> None:
    """Destroy the broadcasts the rows' plan read, once they are computed."""
    for shipped in rows.shipped:
        shipped.destroy()
