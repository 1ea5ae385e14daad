"""Finalize: turn downloaded shards into training shards.

Every sample of the download tars is hashed (hashing.py), then judged in this order, each step
looking only at the samples still kept:

1. image filters: undecodable_image, too_small (shorter side), bad_aspect;
2. eval_contamination: pHash within `hamming_distance` of an image of an evaluation folder;
3. duplicate_image: same sha256 as a sample with a smaller uid;
4. near_duplicate: pHash chained within `hamming_distance` to a sample with a smaller uid
   (connected clusters over banded candidate pairs, neardup.py and graph.py). Byte-identical
   images share a cluster, so 3 and 4 are decided in one pass with the same result as one
   after the other;
5. balanced_out: exact balance to `t` per query entry on what was really fetched, with the
   balance stage's own coin (wit_builder.coins).

The kept samples are resharded (reshard.py); every dropped sample's uid, reason, source shard
and key go to `drops/part-00000.parquet` (the report shows some of them). Decisions run on
small metadata rows; image bytes are read twice (hash, copy) and never shuffled. One Spark job
hashes every tar into Parquet rows (OUT/finalize/_samples while the stage runs); the runner
reads them on the driver up to `[spark] driver_rows` rows, as a Spark DataFrame above, and each
step below is written once, as functions over Arrow batches and tables that run on either side.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder import coins, graph, runner, storage
from wit_builder import inputs as stage_inputs
from wit_builder.finalize import hashing, neardup, reshard
from wit_builder.stages import Context, Plan, StageResult

REASON = runner.REASON


def check_config(cfg) -> None:
    neardup.check_bands(cfg.finalize.bands, cfg.finalize.hamming_distance)


def check(cfg, inputs: list[str]) -> Plan:
    """The input shards (Plan.detail)."""
    return Plan(inputs, detail=stage_inputs.input_tars(
        inputs, "give OUT/download or a folder of WebDataset shards"))


def eval_images(folders: list[str]) -> list[str]:
    return [f for folder in folders for f in storage.list_files(folder, suffixes=hashing.EVAL_IMAGE_SUFFIXES)]


def run(ctx: Context, plan: Plan) -> StageResult:
    spark, out_dir, tars = ctx.spark, ctx.out, plan.detail
    c = ctx.cfg.finalize
    evals = eval_images(c.eval_image_folders)

    hashed = storage.join(out_dir, "_samples")  # the per-sample rows; removed before publishing
    hashing.hash_shards_to(spark, tars, c.min_side, c.max_aspect_ratio, hashed)
    samples = runner.read_parquet(ctx, hashing.hashed_files(hashed, tars),
                                  hashing.sample_schema().names)
    eval_hashes = None
    if evals:
        got = hashing.hash_files(spark, evals).where("phash is not null").toArrow()
        eval_hashes = got.column("phash").to_numpy(zero_copy_only=False).astype(np.int64)
    judged, entry_counts = decide(samples, eval_hashes, c.hamming_distance, c.bands, c.t, c.seed)
    if entry_counts is not None:
        coins.write_entry_counts(entry_counts, out_dir)
    _write_drops(judged, tars, out_dir)
    drops = runner.count_by(judged, REASON)
    written = reshard.write(ctx, runner.map_batches(judged, _kept, reshard.KEPT), tars, out_dir,
                            c.samples_per_shard)
    storage.remove(hashed)
    return _result(drops, written, tars, evals)


def decide(samples: runner.Rows, eval_hashes: np.ndarray | None, hamming_distance: int,
           bands: int, t: int, seed: int) -> tuple[runner.Rows, pa.Table | None]:
    """Steps 2-5: the samples (`hashing.sample_schema()` rows) with every drop reason set, and
    the entry counts table (or None when no sample carries entry ids)."""
    schema = hashing.sample_schema()
    if eval_hashes is not None and len(eval_hashes):
        samples = runner.materialize(runner.map_batches(
            samples, partial(_contaminated, hamming_distance, bands), schema, shared=eval_hashes))
    samples = runner.materialize(_duplicates(samples, hamming_distance, bands))
    return _balance(samples, t, seed)


def _alive(batch) -> np.ndarray:
    return batch.column(REASON).is_null().to_numpy(zero_copy_only=False)


def _hashes(batch, rows: np.ndarray) -> np.ndarray:
    """The pHashes of `rows` of the batch, exactly (a null elsewhere would make them floats)."""
    return batch.column("phash").take(pa.array(rows, pa.int64())).to_numpy()


def _mark(batch, rows: np.ndarray, reason: str):
    """`batch` (or table) with `reason` as the drop reason of `rows` (indices)."""
    hit = np.zeros(len(batch), bool)
    hit[rows] = True
    marked = pc.if_else(hit, pa.scalar(reason, pa.string()), batch.column(REASON))
    return batch.set_column(batch.schema.get_field_index(REASON), REASON, marked)


def _contaminated(hamming_distance: int, bands: int, batch: pa.RecordBatch,
                  eval_hashes: np.ndarray) -> pa.RecordBatch:
    """Step 2 on a batch: kept samples near an evaluation image get `eval_contamination`."""
    alive = np.flatnonzero(_alive(batch))
    phash = _hashes(batch, alive)
    hits = neardup.close_pairs(phash, eval_hashes, hamming_distance, bands)
    return _mark(batch, alive[np.isin(phash, hits[:, 0])], "eval_contamination")


def _duplicates(samples: runner.Rows, hamming_distance: int, bands: int) -> runner.Rows:
    """Steps 3 and 4: cluster the kept samples' pHashes (close pairs found bucket by bucket,
    then connected components), then keep the smallest uid of each sha256 and of each cluster."""
    buckets = runner.map_batches(samples, partial(_buckets, bands), neardup.BUCKETS)
    pairs = runner.by_key(buckets, "bucket", partial(neardup.pairs_in_buckets,
                                                    max_distance=hamming_distance), neardup.PAIRS)
    labels = graph.components(pairs)
    labelled = runner.lookup(samples, "phash", labels, "node", ["label"])
    clustered = runner.map_batches(labelled, _cluster_column,
                                   runner.with_columns(samples.schema, [("label", pa.int64()),
                                                                        ("cluster", pa.int64())]))
    return runner.by_key(clustered, "cluster", _first_of_each, samples.schema)


def _buckets(bands: int, batch: pa.RecordBatch, _shared=None) -> pa.RecordBatch:
    return neardup.bucket_rows(_hashes(batch, np.flatnonzero(_alive(batch))), bands)


def _cluster_column(batch: pa.RecordBatch, _shared=None) -> pa.RecordBatch:
    """cluster = the smallest hash of the sample's chain: its label, or its own hash when it is
    close to no other (and its rid when it has none: undecodable, spread over the partitions)."""
    cluster = pc.coalesce(batch.column("label"), batch.column("phash"), batch.column("rid"))
    return batch.append_column("cluster", cluster)


def _first_of_group(keys: np.ndarray) -> np.ndarray:
    """True where keys[i] is the first occurrence of its value."""
    first = np.zeros(len(keys), bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _first_of_each(table: pa.Table) -> pa.Table:
    """Whole clusters: of the kept samples, all but the smallest (uid, rid) of each sha256 are
    `duplicate_image`, then all but the smallest of each cluster `near_duplicate`."""
    rows = np.flatnonzero(_alive(table))
    alive = table.take(pa.array(rows, pa.int64()))
    order = pc.sort_indices(alive, sort_keys=[("uid", "ascending"), ("rid", "ascending")]).to_numpy()
    ordered = rows[order]
    sha = np.array(alive.column("sha256").take(pa.array(order)).to_pylist(), dtype="S64")
    cluster = alive.column("cluster").to_numpy()[order]
    dup = ~_first_of_group(sha)
    near = ~dup & ~_first_of_group(cluster)
    table = _mark(table.drop_columns(["label", "cluster"]), ordered[dup], "duplicate_image")
    return _mark(table, ordered[near], "near_duplicate")


def _balance(samples: runner.Rows, t: int, seed: int) -> tuple[runner.Rows, pa.Table | None]:
    """Step 5: balanced_out by the balance stage's coin, counts taken on what was fetched and
    survived the steps before; also (entry_id, count_before, count_after), or None when no
    sample carries entry ids (a plain candidate list, never matched)."""
    before = coins.entry_counts(samples)
    if not before.num_rows:
        return samples, None
    if pc.max(before.column("n")).as_py() > t:
        samples = runner.materialize(runner.map_batches(
            samples, partial(_balanced, t, seed), samples.schema, shared=coins.counts_array(before)))
    return samples, coins.before_and_after(before, coins.entry_counts(samples))


def _balanced(t: int, seed: int, batch: pa.RecordBatch, counts: np.ndarray) -> pa.RecordBatch:
    rows = np.flatnonzero(_alive(batch) & batch.column(coins.ENTRY_IDS).is_valid()
                          .to_numpy(zero_copy_only=False))
    take = pa.array(rows, pa.int64())
    keep = coins.keep_mask(batch.column("uid").take(take), batch.column(coins.ENTRY_IDS).take(take),
                           counts, t, seed)
    return _mark(batch, rows[~keep], "balanced_out")


def _kept(batch: pa.RecordBatch, _shared=None) -> pa.RecordBatch:
    return batch.filter(_alive(batch)).select(reshard.KEPT.names)


DROPS_SCHEMA = pa.schema([("uid", pa.string()), ("reason", pa.string()),
                          ("source_shard", pa.string()), ("key", pa.string())])


def _dropped(tars: list[str], batch: pa.RecordBatch, _shared=None) -> pa.RecordBatch:
    batch = batch.filter(~_alive(batch))
    shards = batch.column("shard").to_pylist()
    return pa.RecordBatch.from_arrays(
        [batch.column("uid"), batch.column(REASON),
         pa.array([tars[s] for s in shards], pa.string()), batch.column("key")],
        schema=DROPS_SCHEMA)


def _write_drops(samples: runner.Rows, tars: list[str], out_dir: str) -> None:
    """OUT/finalize/drops/part-00000.parquet: (uid, reason, source_shard, key) of every dropped
    sample, so the report can show dropped images. Rows come to the driver a batch at a time
    (small metadata, bounded memory) and are written through fsspec."""
    folder = storage.join(out_dir, "drops")
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    dropped = runner.map_batches(samples, partial(_dropped, tars), DROPS_SCHEMA)
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f, \
            pq.ParquetWriter(f, DROPS_SCHEMA) as writer:
        writer.write_table(DROPS_SCHEMA.empty_table())
        for table in runner.batches(dropped):
            writer.write_table(table)


def _result(drops: dict, written: list[dict], tars: list[str], evals: list[str]) -> StageResult:
    kept = drops.pop(None, 0)
    if sum(w["count"] for w in written) != kept:
        raise RuntimeError(f"finalize: wrote {sum(w['count'] for w in written)} samples, expected "
                           f"{kept} (did the input shards change during the run?)")
    return StageResult(rows_in=kept + sum(drops.values()), rows_out=kept, drops=drops,
                       extra={"shards": len(written), "input_shards": len(tars),
                              "eval_images": len(evals),
                              "tar_bytes": sum(w["tar_bytes"] for w in written)})
