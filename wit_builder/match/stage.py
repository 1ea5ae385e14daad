"""The match stage: every row gets `entry_ids`, the query-list entries its text contains (MetaCLIP
substring rules, matcher.py); rows that contain none are dropped as `no_match`."""

from __future__ import annotations

from functools import partial

import pyarrow as pa

from wit_builder import inputs as stage_inputs
from wit_builder import runner, stages, storage
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


HINT = "give the output of extract"


def check_config(cfg) -> None:
    queries_path(cfg)


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The inputs and the query list (the output depends on it too)."""
    stage_inputs.check(inputs, HINT)
    return stages.Plan(inputs, extra=[queries_path(cfg)])


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    path = plan.extra[0]
    entries = load_queries(path)
    if not entries:
        raise UserError(f"query list {path} is empty (build one with `wit-builder queries build`)")
    key = (fingerprint(entries), ctx.cfg.match.normalize)
    rows = runner.read(ctx, plan.inputs, HINT, ["text"])
    schema = runner.with_columns(rows.schema, [(ENTRY_IDS, pa.list_(pa.int32())),
                                               (runner.REASON, pa.string())])
    marked = runner.map_batches(rows, partial(_match_batch, key), schema, shared=entries,
                                batch_rows=ctx.cfg.spark.arrow_batch_rows)
    result, _ = runner.write_with_drops(ctx, marked)
    result.extra = {"queries": {"path": path, "entries": len(entries), "fingerprint": key[0]},
                    "normalize": ctx.cfg.match.normalize}
    return result


def _match_batch(key: tuple[str, str], batch: pa.RecordBatch, entries) -> pa.RecordBatch:
    """A batch with its `entry_ids` and drop reason (those it had replaced). The matcher is
    built once per process for the list `key` names (`entries`: the list, shipped once)."""
    batch = batch.select([n for n in batch.schema.names if n not in (ENTRY_IDS, runner.REASON)])
    return annotate(batch, get_matcher(key, lambda: entries))
