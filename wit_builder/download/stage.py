"""The download stage: candidate pairs -> img2dataset WebDataset shards in OUT/download.

OUT/download holds img2dataset's output as it writes it: NNNNN.tar (KEY.jpg, KEY.txt,
KEY.json), NNNNN.parquet (one row per attempted URL, failures included) and NNNNN_stats.json,
plus our manifest.json and _SUCCESS. Beside them, `_input/` keeps the prepared candidates
(prepare.py). This module owns the shards: resume, retry and the tally.

Resume (IN_PLACE): a shard is finished when its `_stats.json` parses (img2dataset writes it
last); a rerun deletes unfinished shard files and downloads only the missing shards. The
partial output belongs to the inputs and settings recorded in `_input/_prepared.json`; when
those change the folder is started afresh (throughput knobs like `threads` may change freely).
Note: `--force` with unchanged inputs and settings re-counts the existing shards; delete
OUT/download to fetch everything again.

`retry_failed` (`--retry-failed`): after the pass above, the URLs whose latest attempt failed
are fetched once more into new shards numbered after the existing ones. A row's outcome is its
success if any attempt succeeded, else its latest attempt's error (the highest key).

Counts: rows_in = candidate rows; drops = missing_url, duplicate_pair (same uid, i.e. the same
url and text) and one reason per failed URL, from our fetcher's "reason: detail" messages or
img2dataset's resize errors; rows_out = images in the shards.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import inputs as stage_inputs
from wit_builder import runner, stages, storage
from wit_builder.download import shards
from wit_builder.download.fetch import Policy
from wit_builder.download.prepare import INPUT_DIR, prepare, write_input
from wit_builder.download.rows import CARRIED, query_list
from wit_builder.download.progress import Progress
from wit_builder.errors import UserError

__all__ = ["IN_PLACE", "check", "check_config", "run", "reason"]

IN_PLACE = True
_RESIZE_ERRORS = {"image too small": "image_too_small", "image area too large": "image_too_large",
                  "aspect ratio too large": "bad_aspect_ratio",
                  "image decoding error": "decode_error", "hash mismatch": "hash_mismatch"}
_REASON = re.compile(r"([a-z][a-z0-9_]*)(?::|$)")


def check_config(cfg) -> None:
    """A bad allow_networks entry fails here, before Spark starts, not in every task."""
    Policy.from_config(cfg.download)


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The inputs, and the query list (it names the entries in every sample's json)."""
    stage_inputs.check(inputs, "give OUT/balance (any stage output) or candidate lists")
    queries = query_list(cfg, inputs)
    return stages.Plan(inputs, extra=[queries] if queries else [])


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    spark, cfg, out_dir = ctx.spark, ctx.cfg, ctx.out
    section = cfg.download
    prepared = prepare(spark, cfg, plan.inputs, out_dir, queries=next(iter(plan.extra), ""))
    input_dir = storage.join(out_dir, INPUT_DIR)
    _remove_unfinished(out_dir)
    if prepared["rows"]:
        with shards.local_workers(spark) as pool, Progress(
                out_dir, prepared["shards"], prepared["rows"], cfg.spark.progress_seconds):
            shards.download(spark, input_dir, out_dir, section, done_shards=_finished(out_dir),
                            pool=pool)
    missing = sorted(set(range(prepared["shards"])) - _finished(out_dir))
    if missing:
        raise UserError(f"download: {len(missing)} shard(s) did not finish (first: "
                        f"{missing[0]}, see the log above; rerun the same command to resume)")
    if section.retry_failed:
        _retry_failed(spark, out_dir, section, ctx.log)
    return _tally(ctx, prepared)


def _finished(out_dir: str) -> set[int]:
    """Shards whose `_stats.json` parses: img2dataset writes it last but in place, so a cut one
    is a shard killed while being finished."""
    fs, p = storage.filesystem(out_dir)
    done = set()
    for f in fs.glob(p.rstrip("/") + "/*_stats.json"):
        try:
            json.loads(fs.cat_file(f))
        except ValueError:
            continue
        done.add(int(f.rsplit("/", 1)[-1].split("_")[0]))
    return done


def _remove_unfinished(out_dir: str) -> None:
    """Delete shard files that an interrupted run left without a whole `_stats.json`."""
    fs, p = storage.filesystem(out_dir)
    done = _finished(out_dir)
    for f in fs.glob(p.rstrip("/") + "/*.tar") + fs.glob(p.rstrip("/") + "/*.parquet") + \
            fs.glob(p.rstrip("/") + "/*_stats.json"):
        stem = f.rsplit("/", 1)[-1].split(".")[0].removesuffix("_stats")
        if stem.isdigit() and int(stem) not in done:
            fs.rm(f)


def _shard_parquets(out_dir: str) -> list[str]:
    return [storage.spark_path(storage.join(out_dir, f"{storage.shard_name(i)}.parquet"))
            for i in sorted(_finished(out_dir))]


def _outcomes(spark, out_dir: str):
    """One row per uid: ok (any attempt succeeded) and `last`, its latest attempt's row."""
    from pyspark.sql import functions as F

    rows = spark.read.parquet(*_shard_parquets(out_dir))
    return rows.groupBy("uid").agg(
        F.max((F.col("status") == "success").cast("int")).alias("ok"),
        F.max_by(F.struct(*[c for c in rows.columns if c != "uid"]), "key").alias("last"))


def _retry_failed(spark, out_dir: str, section, log) -> None:
    if not _finished(out_dir):
        return
    start = max(_finished(out_dir)) + 1
    failed = (_outcomes(spark, out_dir).where("ok = 0")
              .select("uid", *[f"last.{c}" for c in ("url", "text", *CARRIED)]))
    retry_dir = storage.join(out_dir, INPUT_DIR, f"retry-{storage.shard_name(start)}")
    n = failed.count()
    if not n:
        return
    write_input(failed, n, section.samples_per_shard, retry_dir)
    log(f"download: retrying {n:,} failed URLs into shards from {storage.shard_name(start)}")
    with shards.local_workers(spark) as pool:
        shards.download(spark, retry_dir, out_dir, section, done_shards=set(),
                        start_shard_id=start, pool=pool)


def reason(status: str | None, message: str | None) -> str:
    """The short drop reason of a failed attempt (our fetcher's prefix, or a resize error)."""
    message = (message or "").strip()
    if status == "failed_to_download":
        match = _REASON.match(message)
        return match.group(1) if match else "download_error"
    return _RESIZE_ERRORS.get(message.lower(), "resize_error")


_ATTEMPT_COLUMNS = ["uid", "key", "status", "error_message"]
_OUTCOMES = pa.schema([("ok", pa.int32()), ("status", pa.string()), ("error", pa.string()),
                       ("n", pa.int64())])


def _outcome_counts(ctx: stages.Context) -> list[tuple]:
    """(ok, status, error, count) of the uids' outcomes: ok when any attempt succeeded, the
    status and error of its latest attempt."""
    rows = runner.read_parquet(ctx, _shard_parquets(ctx.out), _ATTEMPT_COLUMNS)
    counts = runner.sum_by(runner.by_key(rows, "uid", _last_attempts, _OUTCOMES),
                           ["ok", "status", "error"], "n")
    return [(r["ok"], r["status"], r["error"], r["n"]) for r in counts.to_pylist()]


def _last_attempts(attempts: pa.Table) -> pa.Table:
    """One row per uid of `attempts` (every attempt of each): whether any succeeded, and its
    latest attempt's (greatest key's) status and error."""
    succeeded = pc.unique(attempts.filter(pc.equal(attempts.column("status"), "success"))
                          .column("uid"))
    rows = attempts.take(pc.sort_indices(attempts, [("uid", "ascending"), ("key", "descending")]))
    uids = rows.column("uid").combine_chunks()
    first = pa.concat_arrays([pa.array([True] if len(uids) else [], pa.bool_()),
                              pc.not_equal(uids.slice(1), uids.slice(0, max(len(uids) - 1, 0)))])
    last = rows.filter(first)
    return pa.table([pc.is_in(last.column("uid"), value_set=succeeded).cast(pa.int32()),
                     last.column("status"), last.column("error_message"),
                     pa.array(np.ones(last.num_rows, np.int64))], schema=_OUTCOMES)


def _tally(ctx: stages.Context, prepared: dict) -> stages.StageResult:
    drops = dict(prepared["drops"])
    ok = seen = 0
    shards = len(_finished(ctx.out))
    if shards:
        for was_ok, status, error, count in _outcome_counts(ctx):
            seen += count
            if was_ok:
                ok += count
            else:
                r = reason(status, error)
                drops[r] = drops.get(r, 0) + count
    if prepared["rows"] != seen:  # every finished-shard check passed, so this is a bug
        raise RuntimeError(f"download: {prepared['rows']} candidates but {seen} in the shards")
    return stages.StageResult(rows_in=prepared["rows_in"], rows_out=ok, drops=drops,
                              extra={"candidates": prepared["rows"], "shards": shards})
