"""Small inputs prepared on the driver, without Spark jobs: the fixed cost of a small download.

Why this stays a driver twin of prepare.py's Spark plan (issue 22): the plan is Spark SQL (a
grouped `min(struct)` and `repartition(files, "uid")`), not Arrow functions the runner could
run on either side, and on a small list it is all fixed cost. Measured (20,000 candidate rows,
local[2] on the shared 2-core box, session started and warmed by one job first): this module
0.07-0.14 s, the Spark plan 11.3 s the first time and 3.1 s the second. Spark's first shuffle,
aggregate and sort cost seconds of JVM warm-up, more than preparing some hundred thousand
rows takes. When every input is local Parquet (a stage folder or plain files, of string
columns) of at most `[spark] driver_rows` rows, the same files are written here with pyarrow:
one row per uid with the representative Spark's `min(struct)` picks, split over the input files
as Spark's `repartition(files, "uid")` splits them (spark_hash.py), each sorted by uid.
Anything else returns None and goes to Spark. Memory: the input rows, at most driver_rows of
them (~200 B each).
"""
from __future__ import annotations

import math
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.download.rows import ROW_COLUMNS, column_plan, queries_for, with_entries, with_uids
from wit_builder.download.spark_hash import partitions_of

_STRING = (pa.string(), pa.large_string())
# Paths whose Spark `_metadata.file_path` we can write exactly ("file:" + path, spaces as %20).
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9/._+=,@~ -]+$")


def prepare_on_driver(cfg, inputs: list[str], queries: str, input_dir: str,
                      per_file: int) -> tuple[int, int, int] | None:
    """(rows in, rows without a URL, unique rows written), or None when Spark must do it.
    `per_file`: the rows one input file holds (prepare.write_input's split)."""
    tables, limit = [], cfg.spark.driver_rows
    if limit <= 0:
        return None
    for path in inputs:
        files = _local_parquet(path)
        if files is None or sum(pq.read_metadata(f).num_rows for f in files) > limit:
            return None
        table = _normalised(path, files, cfg)
        if table is None:
            return None
        tables.append(table)
    rows = pa.concat_tables(tables)
    if rows.num_rows > limit:
        return None
    rows = pa.Table.from_batches(list(with_uids(rows.to_batches())), rows.schema)
    has_url = pc.is_valid(rows.column("uid"))
    unique = _one_per_uid(rows.filter(has_url))
    unique = unique.take(pc.sort_indices(unique, [("uid", "ascending")]))
    max_id = pc.max(pc.list_flatten(unique.column("entry_ids"))).as_py() if unique.num_rows else None
    entries, queries_key = queries_for(queries, max_id)
    batches = list(with_entries(unique.to_batches(), lambda: entries, queries_key))
    schema = pa.schema([(c, pa.list_(pa.int32()) if c == "entry_ids" else
                         pa.list_(pa.string()) if c == "entries" else pa.string())
                        for c in ROW_COLUMNS])
    os.makedirs(input_dir, exist_ok=True)
    _write_files(pa.Table.from_batches(batches, schema), math.ceil(unique.num_rows / per_file),
                 input_dir)
    return rows.num_rows, rows.num_rows - int(pc.sum(has_url).as_py() or 0), unique.num_rows


def _write_files(rows: pa.Table, files: int, input_dir: str) -> None:
    """`rows` (sorted by uid) as Spark writes `repartition(files, "uid")`: a row's file is its
    uid's hash partition; partitions without rows get no file (nor do they in Spark), except
    the one file of a single partition."""
    if files <= 1:
        pq.write_table(rows, os.path.join(input_dir, "part-00000.parquet"), compression="zstd")
        return
    part = pa.array(partitions_of(rows.column("uid").combine_chunks(), files))
    for i in range(files):
        chosen = rows.filter(pc.equal(part, i))  # keeps the uid order
        if chosen.num_rows:
            pq.write_table(chosen, os.path.join(input_dir, f"part-{i:05d}.parquet"),
                           compression="zstd")


def _local_parquet(path: str) -> list[str] | None:
    """The Parquet files of a local stage folder or plain Parquet input; None otherwise."""
    if storage.is_remote(path):
        return None
    if storage.exists(storage.join(path, stages.MANIFEST)):
        stages.require_complete(path)  # its rows: the top-level part files, as read_stage reads
        return storage.list_files(storage.join(path, "*.parquet"))
    stage_inputs.check([path], "give OUT/balance or a candidate list")
    files = storage.list_files(path)
    if not files or any(stage_inputs.format_of(f) != "parquet" for f in files):
        return None
    return files


def _normalised(path: str, files: list[str], cfg) -> pa.Table | None:
    """Our columns, as `prepare._normalised` selects them in Spark; None when a column is not a
    plain string (or list<int>, or an integer user id) column, whose cast only Spark does
    exactly."""
    parts = []
    for f in files:
        table = pq.read_table(f)
        plan = column_plan(table.column_names, cfg, path,
                           storage.exists(storage.join(path, stages.MANIFEST)))
        n = table.num_rows

        def strings(name, default=None):
            if plan[name] is None:
                return pa.array([default] * n, pa.string())
            column = table.column(plan[name])
            return column.cast(pa.string()) if column.type in _STRING else None

        if plan["source"] is None and not _PLAIN_PATH.match(f):
            return None
        columns = {"uid": strings("uid"), "url": strings("url"), "text": strings("text"),
                   "page_url": strings("page_url"),
                   "source": strings("source", "file:" + f.replace(" ", "%20")),
                   "lang": strings("lang"), "user_id": strings("user_id")}
        if plan["user_id"] is not None and pa.types.is_signed_integer(table.column(plan["user_id"]).type):
            columns["user_id"] = table.column(plan["user_id"]).cast(pa.string())  # as Spark casts
        ids = pa.array([[]] * n, pa.list_(pa.int32()))
        if plan["entry_ids"] is not None:
            column = table.column(plan["entry_ids"])
            if not pa.types.is_list(column.type) or not pa.types.is_integer(column.type.value_type):
                return None
            ids = column.cast(pa.list_(pa.int32())).fill_null(pa.scalar([], pa.list_(pa.int32())))
        if any(c is None for c in columns.values()):
            return None
        columns["text"] = columns["text"].fill_null("")
        parts.append(pa.table({"uid": columns["uid"], "url": columns["url"],
                               "text": columns["text"], "entry_ids": ids,
                               "page_url": columns["page_url"], "source": columns["source"],
                               "lang": columns["lang"], "user_id": columns["user_id"]}))
    return pa.concat_tables(parts)


def _one_per_uid(rows: pa.Table) -> pa.Table:
    """One row per uid: for a repeated uid, the least row in Spark's struct order (fields in
    column order, nulls first, lists element by element) — what `min(struct(...))` keeps."""
    counts = rows.group_by("uid").aggregate([("uid", "count")])
    repeated = counts.filter(pc.greater(counts.column("uid_count"), 1)).column("uid")
    if not len(repeated):
        return rows
    is_repeated = pc.is_in(rows.column("uid"), value_set=repeated.combine_chunks())
    best: dict = {}
    others = [c for c in rows.column_names if c != "uid"]
    for row in rows.filter(is_repeated).to_pylist():
        rank = tuple((value is not None, value if value is not None else 0)
                     for value in (row[c] for c in others))
        if row["uid"] not in best or rank < best[row["uid"]][0]:
            best[row["uid"]] = (rank, row)
    chosen = pa.Table.from_pylist([row for _, row in best.values()], rows.schema)
    return pa.concat_tables([rows.filter(pc.invert(is_repeated)), chosen])
