"""Sample images for the report: seeded random samples of the final shards, a few dropped
samples per image drop reason (finalize records its drops in OUT/finalize/drops/), and the
lowest and highest CLIP-scored pairs the score stage's manifest names.

Memory stays bounded: random samples come from at most SAMPLE_SHARDS tars, each streamed only
up to the last sample needed, and only the chosen samples' bytes are kept (as small JPEG
thumbnails).
"""

from __future__ import annotations

import base64
import io
import posixpath
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder import images, storage
from wit_builder.settings import ScreenConfig
from wit_builder.shard.samples import image_of, sample_meta
from wit_builder.shard.tars import read_samples

THUMB_SIDE = 128  # sample thumbnails: longest side in pixels, JPEG
SAMPLE_SHARDS = 4  # random samples are read from at most this many tars
DROP_SAMPLE_REASONS = ("too_small", "bad_aspect", "near_duplicate", "duplicate_image",
                       "eval_contamination")  # finalize drops whose images are worth showing


def add_samples(per_stage: dict, n: int, per_reason: int, seed: int) -> None:
    """Sample cards for the report; none shows the image of a sample scored above the screen
    stage's NSFW threshold (its manifest's, else the default)."""
    threshold = ((per_stage.get("screen") or {}).get("screen") or {}).get("nsfw", {}).get(
        "threshold", ScreenConfig().nsfw_threshold)
    scored = per_stage.get("score") or {}
    if (scored.get("clip_score") or {}).get("scored"):
        scored["score_samples"] = {side: hide_nsfw(items, threshold) for side, items in
                                   score_samples(scored["path"], scored["clip_score"]).items()}
    with_shards = [name for name, s in per_stage.items() if s.get("shards")]
    if not with_shards:
        return
    name = "finalize" if "finalize" in with_shards else with_shards[-1]
    s = per_stage[name]
    s["samples"] = hide_nsfw(random_samples(s["path"], s["shards"]["per_shard"], n, seed), threshold)
    drops = storage.join(s["path"], "drops")
    if per_reason > 0 and storage.exists(drops):
        s["drop_samples"] = {reason: hide_nsfw(items, threshold) for reason, items in drop_samples(
            drops, per_reason, seed, per_stage.get("download", {}).get("path")).items()}


def hide_nsfw(items: list[dict], threshold: float) -> list[dict]:
    """`items` with no thumbnail for those whose nsfw_score is above `threshold`."""
    for item in items:
        if item.get("nsfw_score", 0) > threshold:
            item["thumb"] = None
            item["hidden"] = f"image not shown: nsfw_score {item['nsfw_score']:.2f} > {threshold}"
    return items


def random_samples(folder: str, per_shard: dict, n: int, seed: int = 0) -> list[dict]:
    """`n` random samples (seeded) of a shard folder, read from at most SAMPLE_SHARDS tars.

    Tars are drawn with probability proportional to their sample counts, positions uniformly
    within them; each chosen tar is streamed only up to its last chosen sample."""
    rng = np.random.default_rng(seed)
    names = [t for t, v in per_shard.items() if v["samples"] > 0]
    if not names:
        return []
    counts = np.array([per_shard[t]["samples"] for t in names], dtype=np.float64)
    chosen = rng.choice(len(names), size=min(SAMPLE_SHARDS, len(names)), replace=False, p=counts / counts.sum())
    chosen = sorted(chosen.tolist())
    sizes = counts[chosen]
    total = int(sizes.sum())
    picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for i, shard in enumerate(chosen):
        lo, hi = starts[i], starts[i + 1]
        positions = {int(p - lo) for p in picks if lo <= p < hi}
        if positions:
            tar = storage.join(folder, names[shard])
            out += [_sample_item(key, files, names[shard]) for _, key, files in
                    _read_tar(tar, lambda pos, _, wanted=positions: pos in wanted, len(positions))]
    return out


def drop_samples(folder: str, per_reason: int, seed: int = 0, download: str | None = None) -> dict:
    """{reason: [sample, ...]}: up to `per_reason` dropped samples per image drop reason, drawn
    with a seeded reservoir over finalize's drops/ table, their images read from the source tars
    (or a tar of that name in `download`, if the source path is gone)."""
    rng = np.random.default_rng(seed)
    reservoirs: dict[str, list] = {}
    seen = Counter()
    for f in storage.list_files(folder, suffixes=(".parquet",)):
        with storage.open_file(f, "rb") as handle:
            pf = pq.ParquetFile(handle)
            for batch in pf.iter_batches(columns=["reason", "source_shard", "key"], batch_size=65_536):
                keep = pc.is_in(batch.column("reason"), pa.array(DROP_SAMPLE_REASONS))
                for r in batch.filter(keep).to_pylist():
                    reason = r["reason"]
                    seen[reason] += 1
                    bucket = reservoirs.setdefault(reason, [])
                    if len(bucket) < per_reason:
                        bucket.append(r)
                    else:
                        j = int(rng.integers(seen[reason]))
                        if j < per_reason:
                            bucket[j] = r
    by_shard: dict[str, dict[str, str]] = {}
    for reason, rows in reservoirs.items():
        for r in rows:
            by_shard.setdefault(r["source_shard"], {})[r["key"]] = reason
    out = {reason: [] for reason in DROP_SAMPLE_REASONS if reason in reservoirs}
    for source, keys in sorted(by_shard.items()):
        tar = source
        if not storage.exists(tar) and download:
            tar = storage.join(download, posixpath.basename(source))
        if not storage.exists(tar):
            continue
        for _, key, files in _read_tar(tar, lambda _, key, wanted=keys: key in wanted, len(keys)):
            out[keys[key]].append(_sample_item(key, files, posixpath.basename(source)))
    return {reason: items for reason, items in out.items() if items}


def score_samples(folder: str, clip_score: dict) -> dict:
    """{"lowest": [sample, ...], "highest": [...]}: the pairs the score manifest names with their
    thumbnails and scores, read from the source tars by position (older manifests: by key), or,
    when those are gone, by key from the tar of that name in the score folder, which holds the
    kept samples under the score stage's keys."""
    wanted = {side: clip_score.get(side) or [] for side in ("lowest", "highest")}
    by_shard: dict[str, list] = {}
    for rows in wanted.values():
        for r in rows:
            by_shard.setdefault(r["source_shard"], []).append(r)
    found = {}
    for source, rows in sorted(by_shard.items()):
        if storage.exists(source):
            tar, match = source, _in_source
        else:
            tar, match = storage.join(folder, posixpath.basename(source)), _by_key
        if not storage.exists(tar):
            continue
        want = lambda pos, key, rows=rows, match=match: any(match(r, pos, key) for r in rows)  # noqa: E731
        for pos, key, files in _read_tar(tar, want, len(rows)):
            item = _sample_item(key, files, posixpath.basename(source))
            found.update({id(r): item for r in rows if match(r, pos, key)})
    return {side: [{**found[id(r)], "key": r["key"], "clip_score": r["clip_score"]}
                   for r in rows if id(r) in found]
            for side, rows in wanted.items()}


def _in_source(pair: dict, pos: int, key: str) -> bool:
    return pair["pos"] == pos if pair.get("pos") is not None else pair["key"] == key


def _by_key(pair: dict, pos: int, key: str) -> bool:
    return pair["key"] == key


def _read_tar(path: str, want, count: int):
    """Yield (position, key, {ext: bytes}) of the samples of a WebDataset tar for which
    `want(position, key)` holds, streaming it (the shared reader, shard/tars.py) and stopping
    after `count` of them; other samples' bytes are skipped, never kept, and a sample the reader
    reports a problem with is left out."""
    if count == 0:
        return
    for pos, (key, files, problem) in enumerate(read_samples(path, want)):
        if problem is None and files and want(pos, key):
            yield pos, key, files
            count -= 1
            if count == 0:
                return


_TEXT_FIELDS = ("uid", "url", "lang")
_NUMBER_FIELDS = ("width", "height", "original_width", "original_height", "clip_score",
                  "nsfw_score")


def _sample_item(key: str, files: dict, shard: str) -> dict:
    """A sample card's fields. A foreign shard's json may hold anything (a list, numbers for
    texts, texts for numbers): only values of the expected kinds are shown."""
    meta = sample_meta(files)
    text = meta.get("text") or meta.get("caption") or files.get("txt", b"").decode("utf-8", "replace")
    item = {"key": key, "shard": shard, "caption": str(text)[:300],
            **{k: str(meta[k])[:300] for k in _TEXT_FIELDS if meta.get(k) is not None},
            **{k: meta[k] for k in _NUMBER_FIELDS
               if isinstance(meta.get(k), (int, float)) and not isinstance(meta[k], bool)}}
    if isinstance(meta.get("entry_ids"), list):
        item["entry_ids"] = [i for i in meta["entry_ids"][:8] if type(i) is int]
    if isinstance(meta.get("entries"), list):
        item["entries"] = [str(e)[:300] for e in meta["entries"][:8]]
    _, image = image_of(files)
    item["thumb"] = thumbnail(image) if image else None
    return item


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> str | None:
    """A base64 JPEG at most `side` px on its longest side; None if the image does not decode
    or is over images' bounds (pixels, JPEG scans), which are checked before decoding."""
    try:
        with images.decode(data, "RGB", draft=(side, side)) as img:
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except Exception:  # a truncated, odd or refused file: shown as "no image"
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")
