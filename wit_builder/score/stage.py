"""The score stage: a CLIP score for every sample of a shard set, and DataComp's CLIP-score filter.

    wit-builder score --input OUT/finalize --model runs/x/LATEST.pt --out OUT [--min-score 0.2 | --top-fraction 0.3]

Two passes, each one Spark task per input shard:

1. score: the model (our checkpoint or a Hugging Face CLIP folder, built once per executor
   process, on a GPU when there is one) scores the shard's pairs in batches; the scores go to
   `scores/NNNNN.parquet` (key, pos, uid, clip_score, source_shard). This is the slow pass and it
   resumes by shard, like download: a rerun scores only shards without a scores file.
   `scores/_scoring.json` records the model and the input shards; when either changes, the old
   scores are dropped.
2. write: the threshold is `min_score`, raised to the score of the `top_fraction` quantile of
   the whole shard set when that is set (DataComp's "top 30%" baseline); each shard is copied to
   `NNNNN.tar` keeping the samples that reach it, `clip_score` added to each sample's json, with
   `NNNNN.parquet` (the input shard's Parquet rows of the kept samples, or finalize's columns
   from their json, plus `clip_score`), `NNNNN_stats.json`, and `drops/NNNNN.parquet` for the
   dropped samples.

Samples are matched between the passes by their position in the input shard, and the output
keys are ours (`NNNNN` and the position, as download names samples): a foreign shard's member
paths (`../x`, absolute, repeated) never reach an output shard.

Counts: rows_in = samples in the input shards; drops = `low_clip_score`, `undecodable_image`
for images the model could not read, and the tar reader's `oversized_member` and
`corrupt_shard` (shard/tars.py). The manifest holds the threshold, score quantiles and a
histogram, and the lowest and highest scored pairs (for the report).
"""

from __future__ import annotations

import io
import json
from collections import Counter

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.shard.samples import (STATS_SUFFIX, image_of, meta_row, parquet_schema,
                                       sample_meta, write_sizes)
from wit_builder.shard.tars import read_samples
from wit_builder.errors import UserError
from wit_builder.score import model as score_model

IN_PLACE = True  # resumes its own partial output (scored shards are kept)
SCORES, DROPS, SCORING = "scores", "drops", "_scoring.json"
HISTOGRAM_BINS = 20
SCORES_LAYOUT = 2  # scores/ files by position, with our keys: older ones are scored again


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The input shards (Plan.detail), and the model checkpoint (the output depends on it)."""
    model = cfg.score.model
    return stages.Plan(inputs, extra=[model] if model and not score_model.is_hf_folder(model) else [],
                       detail=stage_inputs.input_tars(
                           inputs, "give OUT/finalize or a folder of WebDataset shards"))


def check_config(cfg) -> None:
    section = cfg.score
    score_model.check_model(section.model)
    if not 0 < section.top_fraction <= 1:
        raise UserError(f"score.top_fraction {section.top_fraction}: give a fraction in (0, 1]")
    if section.device not in ("auto", "cpu") and not section.device.startswith("cuda"):
        raise UserError(f"score.device {section.device!r}: use auto, cpu, cuda or cuda:N")


def _caption(files: dict, meta: dict) -> str:
    text = meta.get("caption") or meta.get("text")
    if isinstance(text, str) and text:
        return text
    return files.get("txt", b"").decode("utf-8", "replace")


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _uid(meta: dict) -> str | None:
    return str(meta["uid"]) if meta.get("uid") is not None else None


def _keys(index: int, n: int) -> list[str]:
    """The output keys of a shard's n samples, by position: ours (shard name and position, as
    download names them), never a member's path, which a foreign shard may make anything
    (`../../x`, absolute, repeated)."""
    digits = max(4, len(str(n - 1)))
    return [f"{storage.shard_name(index)}{pos:0{digits}d}" for pos in range(n)]


def _score_shard(index: int, tar: str, scores_dir: str, section: dict) -> dict:
    """Pass 1 for one shard: every sample's score to scores/NNNNN.parquet, by position. A sample
    the tar reader reports a problem with (tars.py) gets no score. A model that does not load
    is {"error": message}."""
    import pyarrow as pa

    try:
        scorer = score_model.scorer(section["model"], section["device"], section["batch_size"],
                                    section["threads"])
    except UserError as e:  # back to the driver as a result: Spark would wrap it in a traceback
        return {"index": index, "error": str(e)}
    uids, images, texts, scores = [], [], [], []

    def flush():
        scores.extend(scorer.score(images, texts))
        images.clear()
        texts.clear()

    for sample in read_samples(tar):
        meta = sample_meta(sample.files)
        uids.append(_uid(meta))
        images.append(None if sample.problem else image_of(sample.files)[1])
        texts.append(_caption(sample.files, meta))
        if len(images) >= 4 * section["batch_size"]:
            flush()
    flush()
    table = pa.table({"key": pa.array(_keys(index, len(uids)), pa.string()),
                      "pos": pa.array(range(len(uids)), pa.int32()),
                      "uid": pa.array(uids, pa.string()),
                      "clip_score": pa.array(scores, pa.float32()),
                      "source_shard": pa.array([tar] * len(uids), pa.string())})
    storage.write_bytes_atomic(storage.join(scores_dir, storage.shard_name(index) + ".parquet"),
                               _parquet_bytes(table))
    return {"index": index, "samples": len(uids)}


def _write_shard(index: int, tar: str, out_dir: str, threshold: float) -> dict:
    """Pass 2 for one shard: the kept samples with their score, their Parquet rows, the drops.
    Samples are matched to their scores by position (the reader yields the same sequence)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from webdataset import TarWriter

    name = storage.shard_name(index)
    with storage.open_file(storage.join(out_dir, SCORES, name + ".parquet")) as f:
        scored = pq.read_table(f, columns=["key", "clip_score"]).to_pylist()
    base = storage.join(out_dir, name)
    kept, rows, drops = [], [], []
    with storage.open_file(base + ".tar", "wb") as raw:
        writer = TarWriter(raw)
        for pos, sample in enumerate(read_samples(tar)):
            if pos >= len(scored):
                raise RuntimeError(f"score: {tar} holds more samples than when it was scored")
            key, score = scored[pos]["key"], scored[pos]["clip_score"]
            meta = sample_meta(sample.files)
            if sample.problem or score is None or score < threshold:
                reason = sample.problem or ("undecodable_image" if score is None else "low_clip_score")
                drops.append({"key": key, "uid": _uid(meta), "reason": reason, "clip_score": score,
                              "text": _caption(sample.files, meta), "source_shard": tar})
                continue
            meta.update(key=key, clip_score=round(float(score), 6))
            # members named like webdataset's own fields ("x.__key__") are not copied
            writer.write({"__key__": key, **{ext: data for ext, data in sample.files.items()
                                             if ext != "json" and not ext.startswith("_")},
                          "json": json.dumps(meta, indent=4).encode()})
            kept.append((sample.key, score))
            rows.append(meta_row(meta, sample.files, tar))
        writer.close()
    storage.write_bytes_atomic(base + ".parquet", _parquet_bytes(_kept_rows(tar, kept, rows)))
    storage.write_bytes_atomic(storage.join(out_dir, DROPS, name + ".parquet"), _parquet_bytes(
        pa.Table.from_pylist(drops, schema=pa.schema([
            ("key", pa.string()), ("uid", pa.string()), ("reason", pa.string()),
            ("clip_score", pa.float32()), ("text", pa.string()), ("source_shard", pa.string())]))))
    dropped = dict(Counter(d["reason"] for d in drops))
    storage.write_json_atomic(base + STATS_SUFFIX, {
        "shard": name + ".tar", "count": len(kept), "source": tar, "threshold": threshold,
        "dropped": dropped})
    return {"name": name + ".tar", "count": len(kept), "dropped": dropped}


def _kept_rows(tar: str, kept: list[tuple[str, float]], rows: list[dict]):
    """The kept samples' shard Parquet rows, with our keys and clip_score: the input shard's own
    Parquet rows when it names each kept sample (by member key) once, else `rows` (finalize's
    shard columns, from each sample's json). `kept` holds (member key, score) per kept sample."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = tar[:-len(".tar")] + ".parquet"
    keys = pa.array([r["key"] for r in rows], pa.string())
    scores = pa.array([score for _, score in kept], pa.float32())
    members = [member for member, _ in kept]
    table = None
    if storage.exists(source) and len(set(members)) == len(members):
        with storage.open_file(source) as f:
            given = pq.read_table(f)
        if "key" in given.column_names:
            given = given.filter(pc.is_in(given["key"], value_set=pa.array(members, pa.string())))
            order = {k: i for i, k in enumerate(given["key"].to_pylist())}
            if len(order) == given.num_rows == len(members):
                given = given.take(pa.array([order[k] for k in members], pa.int64()))
                table = given.drop_columns([c for c in ("key", "clip_score") if c in given.column_names]) \
                    .add_column(0, "key", keys)
    if table is None:
        table = pa.Table.from_pylist(rows, schema=parquet_schema())
    return table.append_column("clip_score", scores)


def _identity(section, tars: list[str]) -> dict:
    return {"layout": SCORES_LAYOUT, "model": section.model,
            "model_fingerprint": score_model.model_fingerprint(section.model),
            "tars": [[t, storage.file_fingerprint(t)] for t in tars]}


def threshold_of(scores, min_score: float, top_fraction: float) -> float:
    """min_score, raised to the lowest score among the top `top_fraction` of the scored samples."""
    import numpy as np

    threshold = float(min_score)
    if top_fraction < 1 and len(scores):
        keep = max(1, int(np.ceil(top_fraction * len(scores))))
        threshold = max(threshold, float(np.sort(scores)[::-1][keep - 1]))
    return threshold


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    import numpy as np
    import pyarrow.parquet as pq

    spark, cfg, out_dir, tars = ctx.spark, ctx.cfg, ctx.out, plan.detail
    section = cfg.score
    scores_dir = storage.join(out_dir, SCORES)
    identity = _identity(section, tars)
    marker = storage.join(scores_dir, SCORING)
    if not storage.exists(marker) or storage.read_json(marker) != identity:
        storage.remove(scores_dir)  # another model or other shards: these scores do not apply
        storage.write_json_atomic(marker, identity)
    done = {storage.shard_name(i) for i in range(len(tars))
            if storage.exists(storage.join(scores_dir, storage.shard_name(i) + ".parquet"))}
    todo = [(i, t) for i, t in enumerate(tars) if storage.shard_name(i) not in done]
    options = {"model": section.model, "device": section.device, "batch_size": section.batch_size,
               "threads": section.threads}
    sc = spark.sparkContext
    if todo:
        scored = sc.parallelize(todo, len(todo)).map(
            lambda it: _score_shard(it[0], it[1], scores_dir, options)).collect()
        errors = [r["error"] for r in scored if "error" in r]
        if errors:
            raise UserError(errors[0])

    scores = []
    for i in range(len(tars)):
        with storage.open_file(storage.join(scores_dir, storage.shard_name(i) + ".parquet")) as f:
            scores.append(pq.read_table(f, columns=["clip_score"])["clip_score"].to_numpy(zero_copy_only=False))
    all_scores = np.concatenate(scores) if scores else np.array([], dtype=np.float32)
    rows_in = len(all_scores)
    valid = all_scores[~np.isnan(all_scores)]
    threshold = threshold_of(valid, section.min_score, section.top_fraction)

    written = sc.parallelize(list(enumerate(tars)), len(tars)).map(
        lambda it: _write_shard(it[0], it[1], out_dir, threshold)).collect()
    written.sort(key=lambda r: r["name"])
    write_sizes(out_dir, {r["name"]: r["count"] for r in written})
    drops = dict(sum((Counter(r["dropped"]) for r in written), Counter()))
    return stages.StageResult(rows_in=rows_in, rows_out=sum(r["count"] for r in written), drops=drops,
                              extra={"clip_score": summary(valid, threshold, out_dir),
                                     "scored_shards": len(todo), "resumed_shards": len(done)})


def summary(valid, threshold: float, out_dir: str, examples: int = 8) -> dict:
    """Threshold, quantiles, histogram, and the lowest and highest scored pairs."""
    import numpy as np
    import pyarrow.parquet as pq

    if not len(valid):
        return {"threshold": threshold, "scored": 0}
    counts, edges = np.histogram(valid, bins=HISTOGRAM_BINS)
    qs = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    pairs = []
    for f in storage.list_files(storage.join(out_dir, SCORES), suffixes=(".parquet",)):
        with storage.open_file(f) as h:
            t = pq.read_table(h, columns=["key", "pos", "clip_score", "source_shard"]).to_pylist()
        t = [r for r in t if r["clip_score"] is not None]
        t.sort(key=lambda r: r["clip_score"])
        pairs += t[:examples] + t[-examples:]
    pairs.sort(key=lambda r: r["clip_score"])
    rnd = lambda rows: [{**r, "clip_score": round(float(r["clip_score"]), 4)} for r in rows]  # noqa: E731
    return {"threshold": threshold, "scored": int(len(valid)),
            "mean": round(float(valid.mean()), 6),
            "quantiles": {str(q): round(float(np.quantile(valid, q)), 6) for q in qs},
            "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()},
            "lowest": rnd(pairs[:examples]), "highest": rnd(pairs[::-1][:examples])}
