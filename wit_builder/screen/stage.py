"""The screen stage: known-bad hash lists, an NSFW score and face blurring, between download and
finalize.

    wit-builder screen --input OUT/download --out OUT [--hash-lists a.txt,b.txt] [--no-blur]

One Spark task per input shard (shard.py) writes `OUT/screen/NNNNN.tar`, `.parquet`,
`_stats.json` and `drops/NNNNN.parquet`, like download's shards; the models (NudeNet's ONNX
detector, the hash lists) are loaded once per executor process. It resumes by shard, as
download does: a shard whose `_stats.json` parses is done, and a rerun screens only the others.
`_screen.json` records the settings and input shards the partial output belongs to; when
either changes, the folder starts afresh.

Counts: rows_in = samples in the input shards = rows_out + drops (shard.py names the reasons).
The manifest holds, per hash list, how many samples it removed (its file name and a count, never
a hash), the nsfw_score histogram and the count above `nsfw_threshold`, and the faces found and
blurred. Offline: every model ships inside an installed package (`doctor` reports them).
"""

from __future__ import annotations

from collections import Counter

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.errors import UserError
from wit_builder.screen import hashes, nsfw
from wit_builder.screen.shard import DROPS, HISTOGRAM_EDGES, screen_shard, task_options
from wit_builder.shard.samples import STATS_SUFFIX, read_stats, write_card, write_sizes

IN_PLACE = True  # resumes its own partial output (screened shards are kept)
MARKER = "_screen.json"
LAYOUT = 1  # the output's layout: a change screens everything again


def check_config(cfg) -> None:
    """Bad settings, unreadable hash lists and a missing model fail here, before Spark starts."""
    section = cfg.screen
    for name in ("nsfw_threshold", "drop_nsfw_above", "face_min_score"):
        if not 0 <= getattr(section, name) <= 1:
            raise UserError(f"screen.{name} {getattr(section, name)}: give a score in [0, 1]")
    if not 1 <= section.encode_quality <= 100:
        raise UserError(f"screen.encode_quality {section.encode_quality}: give 1 to 100")
    hashes.load_lists(list(section.hash_lists))
    try:
        path = nsfw.model_path()
    except ImportError as e:
        raise UserError(f"screen: {e}") from None
    if not storage.exists(path):
        raise UserError(f"screen: NudeNet's model is missing from its package: {path}")


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The input shards (Plan.detail); the hash lists are inputs too (the output depends on them)."""
    return stages.Plan(inputs, extra=list(cfg.screen.hash_lists), detail=stage_inputs.input_tars(
        inputs, "give OUT/download or a folder of WebDataset shards"))


def finished(out_dir: str) -> dict[int, dict]:
    """{shard index: its stats} of the shards whose `_stats.json` is whole (written last)."""
    fs, path = storage.filesystem(out_dir)
    done = {}
    for f in fs.glob(path.rstrip("/") + "/*" + STATS_SUFFIX):
        stem = f.rsplit("/", 1)[-1][:-len(STATS_SUFFIX)]
        try:
            stats = read_stats(storage.join(out_dir, stem + STATS_SUFFIX))
        except ValueError:
            continue
        if stem.isdigit():
            done[int(stem)] = stats
    return done


def _start(out_dir: str, identity: dict) -> None:
    """Keep the partial output only when it belongs to these settings and input shards."""
    marker = storage.join(out_dir, MARKER)
    if storage.exists(marker) and storage.read_json(marker) == identity:
        return
    fs, path = storage.filesystem(out_dir)
    for f in fs.glob(path.rstrip("/") + "/*"):
        if not f.rsplit("/", 1)[-1].startswith(("manifest", "_SUCCESS")):
            fs.rm(f, recursive=True)
    storage.write_json_atomic(marker, identity)


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    tars, out_dir, section = plan.detail, ctx.out, ctx.cfg.screen
    options = task_options(section)
    _start(out_dir, {"layout": LAYOUT, "options": options,
                     "lists": [storage.file_fingerprint(p) for p in section.hash_lists],
                     "tars": [[t, storage.file_fingerprint(t)] for t in tars]})
    fs, path = storage.filesystem(storage.join(out_dir, DROPS))
    fs.makedirs(path, exist_ok=True)
    done = finished(out_dir)
    todo = [(i, t) for i, t in enumerate(tars) if i not in done]
    if todo:
        sc = ctx.spark.sparkContext
        sc.parallelize(todo, len(todo)).map(
            lambda it: screen_shard(it[0], it[1], out_dir, options)).collect()
    every = finished(out_dir)
    missing = [i for i in range(len(tars)) if i not in every]
    if missing:
        raise UserError(f"screen: shard {missing[0]} did not finish (rerun to resume)")
    shards = [every[i] for i in range(len(tars))]
    write_sizes(out_dir, {storage.shard_name(i) + ".tar": s["successes"] for i, s in enumerate(shards)})
    write_card(out_dir, "screen")
    drops = sum((Counter(s["dropped"]) for s in shards), Counter())
    listed = sum((Counter(s["blocklisted"]) for s in shards), Counter())
    for name, count in sorted(listed.items()):
        ctx.log(f"screen: hash list {name}: {count:,} samples removed")
    return stages.StageResult(
        rows_in=sum(s["count"] for s in shards), rows_out=sum(s["successes"] for s in shards),
        drops=dict(drops), extra={"screen": summary(shards, section),
                                  "screened_shards": len(todo), "resumed_shards": len(done)})


def summary(shards: list[dict], section) -> dict:
    """The manifest's figures: per list its count, the NSFW histogram, faces."""
    histogram = [sum(counts) for counts in zip(*(s["nsfw_histogram"] for s in shards))] \
        if shards else []
    return {"blocklisted": dict(sum((Counter(s["blocklisted"]) for s in shards), Counter())),
            "nsfw": {"model": "NudeNet 320n", "threshold": section.nsfw_threshold,
                     "drop_above": section.drop_nsfw_above,
                     "scored": sum(s["scored"] for s in shards),
                     "above_threshold": sum(s["nsfw_above"] for s in shards),
                     "histogram": {"edges": [round(float(e), 4) for e in HISTOGRAM_EDGES],
                                   "counts": histogram}},
            "faces": {"found": sum(s["faces"] for s in shards),
                      "samples_with_faces": sum(s["with_faces"] for s in shards),
                      "blurred_samples": sum(s["blurred"] for s in shards),
                      "blur": section.blur_faces}}
