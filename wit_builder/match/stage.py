"""The match stage: every row gets `entry_ids`, the query-list entries its text contains (MetaCLIP
substring rules, matcher.py); rows that contain none are dropped as `no_match`."""

from __future__ import annotations

import pyarrow as pa

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.errors import UserError
from wit_builder.coins import ENTRY_IDS
from wit_builder.match.matcher import annotate, get_matcher
from wit_builder.queries.listfile import fingerprint, load_queries


def queries_path(cfg) -> str:
    """The configured query list, which must exist (checked before Spark starts)."""
    path = cfg.match.queries
    if not path:
        raise UserError("no query list: set [match] queries or give --queries FILE (build one with "
                        "`wit-builder queries build`, or use query_lists/wit-queries-en.json.gz)")
    if not storage.exists(path):
        raise UserError(f"query list not found: {path} (give an existing file to --queries)")
    return path


def extra_inputs(cfg) -> list[str]:
    return [queries_path(cfg)]


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

    path = queries_path(cfg)
    entries = load_queries(path)
    if not entries:
        raise UserError(f"query list {path} is empty (build one with `wit-builder queries build`)")
    key = (fingerprint(entries), cfg.match.normalize)
    hint = "give the output of extract"
    extra = {"queries": {"path": path, "entries": len(entries), "fingerprint": key[0]},
             "normalize": cfg.match.normalize}
    table = stage_inputs.read_small(inputs, hint, cfg.spark.driver_rows)
    if table is not None:  # small: on the driver, without Spark jobs' fixed cost
        stage_inputs.require_columns(table, ["text"], inputs, hint)
        table = table.drop_columns([c for c in (ENTRY_IDS, "drop_reason") if c in table.column_names])
        matcher = get_matcher(key, lambda: entries)
        batches = table.to_batches(max_chunksize=cfg.spark.arrow_batch_rows) or \
            [pa.RecordBatch.from_pylist([], schema=table.schema)]
        result = stages.write_with_drops_local(
            pa.Table.from_batches([annotate(b, matcher) for b in batches]), out_dir)
        result.extra = extra
        return result
    df = stage_inputs.read_rows(spark, inputs, hint)
    stage_inputs.require_columns(df, ["text"], inputs, hint)
    df = df.drop(ENTRY_IDS, "drop_reason")
    shipped = spark.sparkContext.broadcast(entries)  # sent once; read only where not cached
    schema = StructType(df.schema.fields + [StructField(ENTRY_IDS, ArrayType(IntegerType())),
                                            StructField("drop_reason", StringType())])

    def match_batches(batches):
        matcher = get_matcher(key, lambda: shipped.value)
        for batch in batches:
            yield annotate(batch, matcher)

    result = stages.write_with_drops(df.mapInArrow(match_batches, schema), out_dir)
    shipped.destroy()
    result.extra = extra
    return result
