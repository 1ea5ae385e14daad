"""Build download-stage shards (and stage outputs) for the finalize and stats tests.

Shards follow img2dataset's exact layout:

`NNNNN.tar` (KEY.jpg, KEY.txt, KEY.json via webdataset's TarWriter, as img2dataset writes them),
`NNNNN.parquet` (one row per URL, failures included) and `NNNNN_stats.json`, from real photos of
../shared/data/images plus variants made here (resized and re-compressed copies, a truncated
file, a tiny image, a thin strip, byte-identical copies).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from webdataset import TarWriter

META_KEYS = ["url", "caption", "key", "status", "error_message", "width", "height", "original_width",
             "original_height", "exif", "sha256", "uid", "text", "entry_ids", "entries", "page_url",
             "source"]


def uid_of(url: str, text: str) -> str:
    return hashlib.blake2b(f"{url}\x00{text}".encode(), digest_size=8).hexdigest()


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variant(data: bytes, scale: float, quality: int) -> bytes:
    """A resized and re-compressed copy: a near-duplicate with other bytes."""
    img = Image.open(io.BytesIO(data))
    return jpeg(img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))),
                           Image.LANCZOS), quality)


def captions(folder: Path) -> dict[str, str]:
    with open(folder / "captions.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    first = {}
    for row in rows:
        first.setdefault(Path(row["path"]).name, row["caption"])
    return first


def sample(name: str, data: bytes | None, text: str, entry_ids: list[int], error: str | None = None) -> dict:
    url = f"http://images.test/{name}"
    return {"url": url, "text": text, "data": data, "entry_ids": entry_ids, "error": error,
            "uid": uid_of(url, text)}


def write_shards(folder: Path, samples: list[dict], per_shard: int) -> list[Path]:
    """Write `samples` as img2dataset would: failures only in the Parquet and stats."""
    folder.mkdir(parents=True, exist_ok=True)
    tars = []
    for shard_id, start in enumerate(range(0, len(samples), per_shard)):
        name = f"{shard_id:05d}"
        rows, status = [], {}
        with open(folder / f"{name}.tar", "wb") as raw:
            writer = TarWriter(raw)
            for i, s in enumerate(samples[start:start + per_shard]):
                key = f"{shard_id:05d}{i:04d}"
                ok = s["data"] is not None
                size = _size(s["data"]) if ok else (None, None)
                meta = {"url": s["url"], "caption": s["text"], "key": key,
                        "status": "success" if ok else "failed_to_download",
                        "error_message": None if ok else s["error"], "width": size[0], "height": size[1],
                        "original_width": size[0], "original_height": size[1], "exif": None,
                        "sha256": hashlib.sha256(s["data"]).hexdigest() if ok else None,
                        "uid": s["uid"], "text": s["text"], "entry_ids": s["entry_ids"],
                        "entries": [f"entry{e}" for e in s["entry_ids"]], "page_url": None,
                        "source": "test"}
                status[meta["status"] if ok else s["error"]] = status.get(meta["status"] if ok else s["error"], 0) + 1
                rows.append(meta)
                if ok:
                    writer.write({"__key__": key, "jpg": s["data"], "txt": s["text"],
                                  "json": json.dumps(meta, indent=4)})
            writer.close()
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        ok_count = sum(r["status"] == "success" for r in rows)
        (folder / f"{name}_stats.json").write_text(json.dumps({
            "count": len(rows), "successes": ok_count, "failed_to_download": len(rows) - ok_count,
            "failed_to_resize": 0, "duration": 1.0, "status_dict": status}, indent=4))
        tars.append(folder / f"{name}.tar")
    return tars


def _size(data: bytes) -> tuple[int | None, int | None]:
    try:
        return Image.open(io.BytesIO(data)).size
    except Exception:
        return None, None


def make_download(images: Path, out: Path, per_shard: int = 9, n_train: int = 24) -> dict:
    """A download folder exercising every finalize rule; returns what the tests expect of it.

    Expected: the 6 coco_mini photos also in flickr8k_dev/train and 3 resized+recompressed
    variants collapse (near_duplicate); one byte-identical copy is a duplicate_image; the coco_mini
    copy of the val photo 1003163366_44323f5815 is eval_contamination when flickr8k_dev/val is
    given; one truncated JPEG, one tiny and one thin image are dropped by the image filters.
    """
    train, coco = images / "flickr8k_dev" / "train", images / "coco_mini"
    train_caps, coco_caps = captions(train), captions(coco)
    overlap = sorted(n for n in coco_caps if (train / n).exists())
    names = overlap + sorted(n for n in train_caps if n not in overlap)[: n_train - len(overlap)]
    samples = [sample(f"train/{n}", (train / n).read_bytes(), train_caps[n], [i % 3]) for i, n in enumerate(names)]
    samples += [sample(f"coco/{n}", (coco / n).read_bytes(), coco_caps[n], [1]) for n in sorted(coco_caps)]
    base = names[len(overlap):len(overlap) + 3]
    samples += [sample(f"variant/{n}", variant((train / n).read_bytes(), 0.7, 40), train_caps[n] + " (copy)", [2])
                for n in base]
    big = Image.open(train / names[-1])
    samples += [
        sample("dup/same-bytes.jpg", (train / names[-2]).read_bytes(), "the same photo again", [0]),
        sample("bad/truncated.jpg", (train / names[-3]).read_bytes()[:1500], "a truncated photo", [0]),
        sample("bad/tiny.jpg", jpeg(big.resize((40, 30))), "a tiny photo", [0]),
        sample("bad/strip.jpg", jpeg(big.resize((600, 400)).crop((0, 0, 600, 120))), "a thin strip", [0]),
        sample("gone/404.jpg", None, "never fetched", [0], error="HTTP Error 404: Not Found"),
        sample("gone/timeout.jpg", None, "never fetched either", [1], error="timed out"),
    ]
    write_shards(out, samples, per_shard)
    return {"samples": samples, "fetched": sum(s["data"] is not None for s in samples),
            "overlap": overlap, "variants_of": base, "val_photo": "1003163366_44323f5815.jpg"}


VERSIONS = {"python": "3.11.0", "pyspark": "3.5.1", "pyarrow": "16.1.0", "numpy": "1.26.4"}
QUERY_NAMES = ["dog", "cat", "beach", "child", "bicycle", "mountain", "river", "street", "horse", "ball"]


def write_stage(folder: Path, stage: str, rows: int, drops: dict, columns: dict,
                entry_counts: dict | None = None, t: int | None = None, extra: dict | None = None) -> None:
    """A finished stage output as stages.py writes one: Parquet + manifest.json + _SUCCESS,
    and for balance the entry_counts/ side table."""
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")
    manifest = {"stage": stage, "config": {"t": t} if t else {}, "rows_in": rows + sum(drops.values()),
                "rows_out": rows, "drops": drops, "seconds": 1.5, "spark_jobs": 3,
                "versions": VERSIONS, **(extra or {})}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "_SUCCESS").write_text("")
    if entry_counts is not None:
        (folder / "entry_counts").mkdir()
        pq.write_table(pa.table(entry_counts), folder / "entry_counts" / "part-00000.parquet")


def make_out_root(images: Path, root: Path) -> dict:
    """OUT with filter and balance stage outputs (a Zipf-like entry table, t = 50) and download shards."""
    made = make_download(images, root / "download")
    texts = ["a dog runs on the grass", "un chien", "two cats", "x" * 1500]
    write_stage(root / "filter", "filter", 4, {"language": 3, "too_few_words": 1},
                {"text": texts, "lang": ["en", "fr", "en", "en"]})
    counts = {"entry_id": list(range(100)), "count_before": [1000 // (i + 1) for i in range(100)]}
    counts["count_after"] = [min(c, 50) for c in counts["count_before"]]
    write_stage(root / "balance", "balance", 4, {"balanced_out": 0}, {"text": texts},
                entry_counts=counts, t=50)
    return made


def _download_index(download: Path) -> dict[str, tuple[Path, str, dict, bytes]]:
    """{uid: (tar, key, json meta, image bytes)} of the download shards."""
    found = {}
    for tar_path in sorted(download.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    key = m.name[: -len(".json")]
                    meta = json.loads(tar.extractfile(m).read())
                    found[meta["uid"]] = (tar_path, key, meta, tar.extractfile(key + ".jpg").read())
    return found


def make_finalize(root: Path, made: dict, per_shard: int = 6, side: int = 256) -> dict:
    """OUT/finalize as finalize writes it, decided here without Spark from the URLs of
    make_download's samples: resized shards (original sizes in the json), shard Parquet,
    sizes.json, drops/ (uid, reason, source_shard, key), entry_counts/ and the manifest."""
    index = _download_index(root / "download")
    rules = [("bad/truncated", "undecodable_image"), ("bad/tiny", "too_small"), ("bad/strip", "bad_aspect"),
             ("dup/", "duplicate_image"), ("variant/", "near_duplicate"),
             (f"coco/{made['val_photo']}", "eval_contamination"),
             *((f"coco/{n}", "near_duplicate") for n in made["overlap"])]
    kept, drops = [], []
    for s in made["samples"]:
        if s["data"] is None:
            continue
        tar_path, key, meta, data = index[s["uid"]]
        reason = next((r for prefix, r in rules if s["url"].startswith(f"http://images.test/{prefix}")), None)
        if reason:
            drops.append({"uid": s["uid"], "reason": reason, "source_shard": str(tar_path), "key": key})
        else:
            kept.append((meta, data))
    out = root / "finalize"
    out.mkdir(parents=True)
    sizes, rows_all = {}, []
    for shard_id, start in enumerate(range(0, len(kept), per_shard)):
        name = f"{shard_id:05d}"
        rows = []
        with open(out / f"{name}.tar", "wb") as raw:
            writer = TarWriter(raw)
            for i, (meta, data) in enumerate(kept[start:start + per_shard]):
                img = Image.open(io.BytesIO(data))
                small = img.copy()
                small.thumbnail((side, side))
                meta = {**meta, "key": f"{name}{i}", "lang": "en", "width": small.width, "height": small.height,
                        "original_width": img.width, "original_height": img.height}
                writer.write({"__key__": meta["key"], "jpg": jpeg(small), "txt": meta["text"],
                              "json": json.dumps(meta, indent=4)})
                rows.append({k: meta.get(k) for k in ("key", "uid", "url", "text", "entry_ids", "lang", "width",
                                                      "height", "original_width", "original_height")})
            writer.close()
        pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
        (out / f"{name}_stats.json").write_text(json.dumps({"shard": f"{name}.tar", "count": len(rows)}))
        sizes[f"{name}.tar"] = len(rows)
        rows_all += rows
    (out / "sizes.json").write_text(json.dumps(sizes))
    (out / "drops").mkdir()
    pq.write_table(pa.Table.from_pylist(drops), out / "drops" / "part-00000.parquet")
    counts = {}
    for r in rows_all:
        for e in r["entry_ids"]:
            counts[e] = counts.get(e, 0) + 1
    ids = sorted(counts)
    (out / "entry_counts").mkdir()
    pq.write_table(pa.table({"entry_id": pa.array(ids, pa.int32()), "count_before": [counts[e] for e in ids],
                             "count_after": [min(counts[e], 6) for e in ids]}),
                   out / "entry_counts" / "part-00000.parquet")
    reasons = {}
    for d in drops:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    manifest = {"stage": "finalize", "config": {"t": 6, "min_side": 64, "samples_per_shard": per_shard,
                                                "eval_image_folders": ["flickr8k_dev/val"]},
                "rows_in": len(kept) + len(drops), "rows_out": len(kept), "drops": reasons,
                "seconds": 12.5, "spark_jobs": 17, "versions": VERSIONS, "shards": len(sizes)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").write_text("")
    return {"kept": len(kept), "drops": drops, "reasons": reasons}


def make_full_root(images: Path, root: Path) -> dict:
    """make_out_root plus OUT/match (naming a query list whose entries have names) and
    OUT/finalize (make_finalize)."""
    made = make_out_root(images, root)
    queries = root.parent / "queries.json"
    queries.write_text(json.dumps(QUERY_NAMES + [f"query {i}" for i in range(len(QUERY_NAMES), 100)]))
    write_stage(root / "match", "match", 4, {"no_match": 6}, {"text": ["a dog", "a cat", "dogs", "cats"]},
                extra={"queries": {"path": str(queries), "entries": 100, "fingerprint": "test"}})
    made["finalize"] = make_finalize(root, made)
    made["queries"] = queries
    return made


def make_score(root: Path, threshold: float = 0.1, examples: int = 3) -> dict:
    """OUT/score as the score stage writes it over OUT/finalize's shards (copied as they are),
    with made-up scores falling with each sample's position: the manifest's `clip_score` holds
    the threshold, quantiles, histogram and the lowest and highest pairs by source shard and key."""
    import numpy as np

    out = root / "score"
    out.mkdir()
    pairs = []
    for tar in sorted((root / "finalize").glob("*.tar")):
        (out / tar.name).write_bytes(tar.read_bytes())
        with tarfile.open(tar) as t:
            keys = sorted({m.name.split(".")[0] for m in t.getmembers() if m.isfile()})
        pairs += [{"key": k, "source_shard": str(tar)} for k in keys]
    scores = np.linspace(0.35, 0.02, len(pairs))
    for p, s in zip(pairs, scores):
        p["clip_score"] = round(float(s), 4)
    counts, edges = np.histogram(scores, bins=20)
    low = int((scores < threshold).sum())
    by_score = sorted(pairs, key=lambda p: p["clip_score"])
    summary = {"threshold": threshold, "scored": len(pairs), "mean": round(float(scores.mean()), 6),
               "quantiles": {str(q): round(float(np.quantile(scores, q)), 6) for q in (0.1, 0.5, 0.9)},
               "histogram": {"edges": edges.round(6).tolist(), "counts": counts.tolist()},
               "lowest": by_score[:examples], "highest": by_score[::-1][:examples]}
    manifest = {"stage": "score", "config": {"model": "clip.pt", "min_score": threshold},
                "rows_in": len(pairs), "rows_out": len(pairs) - low, "drops": {"low_clip_score": low},
                "seconds": 2.0, "versions": VERSIONS, "clip_score": summary}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").write_text("")
    return summary
