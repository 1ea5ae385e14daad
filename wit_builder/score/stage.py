"""The score stage: a CLIP score for every sample of a shard set, and DataComp's CLIP-score filter.

    wit-builder score --input OUT/finalize --model runs/x/LATEST.pt --out OUT [--min-score 0.2 | --top-fraction 0.3]

Two passes, each one Spark task per input shard:

1. score: the model (our checkpoint or a Hugging Face CLIP folder, built once per executor
   process, on a GPU when there is one) scores the shard's pairs in batches; the scores go to
   `scores/NNNNN.parquet` (key, uid, clip_score, source_shard). This is the slow pass and it
   resumes by shard, like download: a rerun scores only shards without a scores file.
   `scores/_scoring.json` records the model and the input shards; when either changes, the old
   scores are dropped.
2. write: the threshold is `min_score`, raised to the score of the `top_fraction` quantile of
   the whole shard set when that is set (DataComp's "top 30%" baseline); each shard is copied to
   `NNNNN.tar` keeping the samples that reach it, `clip_score` added to each sample's json, with
   `NNNNN.parquet` (the input shard's Parquet rows of the kept samples, or their json, plus
   `clip_score`), `NNNNN_stats.json`, and `drops/NNNNN.parquet` for the dropped samples.

Counts: rows_in = samples in the input shards; drops = `low_clip_score`, and `undecodable_image`
for images the model could not read. The manifest holds the threshold, score quantiles and a
histogram, and the lowest and highest scored pairs (for the report).
"""

from __future__ import annotations

import io
import json

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.finalize.hashing import image_of, sample_meta
from wit_builder.finalize.tars import read_samples
from wit_builder.errors import UserError
from wit_builder.score import model as score_model

IN_PLACE = True  # resumes its own partial output (scored shards are kept)
SCORES, DROPS, SCORING = "scores", "drops", "_scoring.json"
HISTOGRAM_BINS = 20


def extra_inputs(cfg) -> list[str]:
    return [cfg.score.model] if cfg.score.model and not score_model.is_hf_folder(cfg.score.model) else []


def check_config(cfg) -> None:
    section = cfg.score
    score_model.check_model(section.model)
    if not 0 < section.top_fraction <= 1:
        raise UserError(f"score.top_fraction {section.top_fraction}: give a fraction in (0, 1]")
    if section.device not in ("auto", "cpu") and not section.device.startswith("cuda"):
        raise UserError(f"score.device {section.device!r}: use auto, cpu, cuda or cuda:N")


def input_tars(inputs: list[str]) -> list[str]:
    return stage_inputs.input_tars(inputs, "give OUT/finalize or a folder of WebDataset shards")


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


def _score_shard(index: int, tar: str, scores_dir: str, section: dict) -> dict:
    """Pass 1 for one shard: every sample's score to scores/NNNNN.parquet."""
    import pyarrow as pa

    scorer = score_model.scorer(section["model"], section["device"], section["batch_size"], section["threads"])
    keys, uids, images, texts, scores = [], [], [], [], []

    def flush():
        scores.extend(scorer.score(images, texts))
        images.clear()
        texts.clear()

    for key, files in read_samples(tar):
        meta = sample_meta(files)
        keys.append(key)
        uids.append(str(meta["uid"]) if meta.get("uid") is not None else None)
        images.append(image_of(files)[1])
        texts.append(_caption(files, meta))
        if len(images) >= 4 * section["batch_size"]:
            flush()
    flush()
    table = pa.table({"key": pa.array(keys, pa.string()), "uid": pa.array(uids, pa.string()),
                      "clip_score": pa.array(scores, pa.float32()),
                      "source_shard": pa.array([tar] * len(keys), pa.string())})
    storage.write_bytes_atomic(storage.join(scores_dir, storage.shard_name(index) + ".parquet"),
                               _parquet_bytes(table))
    return {"index": index, "samples": len(keys)}


def _write_shard(index: int, tar: str, out_dir: str, threshold: float) -> dict:
    """Pass 2 for one shard: the kept samples with their score, their Parquet rows, the drops."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from webdataset import TarWriter

    name = storage.shard_name(index)
    scored = pq.read_table(storage.open_file(storage.join(out_dir, SCORES, name + ".parquet"))).to_pylist()
    by_key = {r["key"]: r["clip_score"] for r in scored}
    base = storage.join(out_dir, name)
    kept, drops, metas = [], [], []
    with storage.open_file(base + ".tar", "wb") as raw:
        writer = TarWriter(raw)
        for key, files in read_samples(tar):
            score = by_key.get(key)
            meta = sample_meta(files)
            if score is None or score < threshold:
                drops.append({"key": key, "uid": str(meta["uid"]) if meta.get("uid") is not None else None,
                              "reason": "undecodable_image" if score is None else "low_clip_score",
                              "clip_score": score, "text": _caption(files, meta), "source_shard": tar})
                continue
            meta["clip_score"] = round(float(score), 6)
            sample = {"__key__": key, **{ext: data for ext, data in files.items() if ext != "json"},
                      "json": json.dumps(meta, indent=4).encode()}
            writer.write(sample)
            kept.append(key)
            metas.append(meta)
        writer.close()
    storage.write_bytes_atomic(base + ".parquet", _parquet_bytes(_kept_rows(tar, kept, metas, by_key)))
    storage.write_bytes_atomic(storage.join(out_dir, DROPS, name + ".parquet"), _parquet_bytes(
        pa.Table.from_pylist(drops, schema=pa.schema([
            ("key", pa.string()), ("uid", pa.string()), ("reason", pa.string()),
            ("clip_score", pa.float32()), ("text", pa.string()), ("source_shard", pa.string())]))))
    storage.write_json_atomic(base + "_stats.json", {
        "shard": name + ".tar", "count": len(kept), "source": tar, "threshold": threshold,
        "dropped": {r: sum(d["reason"] == r for d in drops) for r in ("low_clip_score", "undecodable_image")}})
    return {"name": name + ".tar", "count": len(kept), "low_clip_score": sum(d["reason"] == "low_clip_score" for d in drops),
            "undecodable_image": sum(d["reason"] == "undecodable_image" for d in drops)}


def _kept_rows(tar: str, kept: list[str], metas: list[dict], by_key: dict):
    """The input shard's Parquet rows of the kept samples (by key) plus clip_score; without an
    input Parquet, the samples' json."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = tar[:-len(".tar")] + ".parquet"
    scores = pa.array([by_key[k] for k in kept], pa.float32())
    if storage.exists(source):
        table = pq.read_table(storage.open_file(source))
        if "key" in table.column_names:
            table = table.filter(pc.is_in(table["key"], value_set=pa.array(kept, pa.string())))
            order = {k: i for i, k in enumerate(table["key"].to_pylist())}
            if len(order) == len(kept) and set(order) == set(kept):
                table = table.take(pa.array([order[k] for k in kept]))
                if "clip_score" in table.column_names:
                    table = table.drop_columns(["clip_score"])
                return table.append_column("clip_score", scores)
    rows = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in m.items()} for m in metas]
    table = pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())})
    return table.drop_columns(["clip_score"]).append_column("clip_score", scores) \
        if "clip_score" in table.column_names else table.append_column("clip_score", scores)


def _identity(section, tars: list[str]) -> dict:
    return {"model": section.model, "model_fingerprint": score_model.model_fingerprint(section.model),
            "tars": [[t, storage.file_fingerprint(t)] for t in tars]}


def threshold_of(scores, min_score: float, top_fraction: float) -> float:
    """min_score, raised to the lowest score among the top `top_fraction` of the scored samples."""
    import numpy as np

    threshold = float(min_score)
    if top_fraction < 1 and len(scores):
        keep = max(1, int(np.ceil(top_fraction * len(scores))))
        threshold = max(threshold, float(np.sort(scores)[::-1][keep - 1]))
    return threshold


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    import numpy as np
    import pyarrow.parquet as pq

    check_config(cfg)
    section = cfg.score
    tars = input_tars(inputs)
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
        sc.parallelize(todo, len(todo)).map(
            lambda it: _score_shard(it[0], it[1], scores_dir, options)).collect()

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
    storage.write_json_atomic(storage.join(out_dir, "sizes.json"), {r["name"]: r["count"] for r in written})
    drops = {reason: n for reason in ("low_clip_score", "undecodable_image")
             if (n := sum(r[reason] for r in written))}
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
            t = pq.read_table(h, columns=["key", "clip_score", "source_shard"]).to_pylist()
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
