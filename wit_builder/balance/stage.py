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

from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import inputs as stage_inputs
from wit_builder import coins, runner, stages

BALANCED_OUT = "balanced_out"
HINT = "give the output of match or filter"


def check(cfg, inputs: list[str]) -> stages.Plan:
    stage_inputs.check(inputs, HINT)
    return stages.Plan(inputs)


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    t, seed = ctx.cfg.balance.t, ctx.cfg.balance.seed
    rows = runner.read(ctx, plan.inputs, HINT, ["uid", coins.ENTRY_IDS])
    before = coins.entry_counts(rows)
    schema = runner.with_columns(rows.schema, [(runner.REASON, pa.string())])
    marked = runner.map_batches(rows, partial(_with_reasons, t, seed), schema,
                                shared=coins.counts_array(before))
    result, kept = runner.write_with_drops(ctx, marked)
    table = coins.before_and_after(before, coins.entry_counts(kept))
    table = table.append_column("p", pc.min_element_wise(
        1.0, pc.divide(float(t), table.column("count_before").cast(pa.float64()))))
    coins.write_entry_counts(table, ctx.out)
    result.extra = {"balance": summary(table, t)}
    return result


def _with_reasons(t: int, seed: int, batch: pa.RecordBatch, counts: np.ndarray) -> pa.RecordBatch:
    batch = batch.select([n for n in batch.schema.names if n != runner.REASON])
    kept = coins.keep_mask(batch.column("uid"), batch.column(coins.ENTRY_IDS), counts, t, seed)
    reason = pa.array(np.where(kept, None, BALANCED_OUT), pa.string())
    return pa.RecordBatch.from_arrays(batch.columns + [reason],
                                      names=batch.schema.names + [runner.REASON])


def summary(table: pa.Table, t: int) -> dict:
    """Head (count > t) vs tail: how many entries, and their share of matches before and after."""
    before = table.column("count_before").to_numpy()
    after = table.column("count_after").to_numpy()
    head = before > t
    total_before, total_after = int(before.sum()), int(after.sum())
    share = lambda counts, total: round(float(counts[head].sum()) / total, 6) if total else 0.0
    return {"t": t, "entries_matched": len(before), "head_entries": int(head.sum()),
            "pairs_before": total_before, "pairs_after": total_after,
            "head_share_before": share(before, total_before),
            "head_share_after": share(after, total_after),
            "max_count_before": int(before.max()) if len(before) else 0,
            "max_count_after": int(after.max()) if len(after) else 0}
