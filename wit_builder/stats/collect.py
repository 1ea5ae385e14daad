"""The numbers behind `wit-builder stats`, for a stage output, a shard folder or an output root.

No Spark: manifests, per-shard `_stats.json` and `sizes.json` are small, and from Parquet only
the needed columns are read, one record batch at a time, into fixed-size histograms, so memory
stays bounded whatever the row count. Works on local paths and s3:// alike (fsspec).
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder import stages, storage
from wit_builder.shard.samples import SIZES, STATS_SUFFIX
from wit_builder.shard.tars import read_samples
from wit_builder.stats.entries import add_entry_names, entry_count_stats, numpy_of
from wit_builder.stats.samples import add_samples
from wit_builder.errors import UserError
from wit_builder.registry import NAMES

MAX_CHARS = 1000  # caption lengths are counted exactly up to here; longer ones land in the last bin
SIZE_STEP, MAX_SIZE = 16, 4096  # image sides in 16-pixel bins up to 4096 px


def collect(path: str, top: int = 20, samples: int = 0, drop_samples: int = 3, seed: int = 0) -> dict:
    """Statistics of `path`: {"path", "pipeline": [per-stage counts], "stages": {name: stats}}.

    With `samples` > 0, the last stage with shards (finalize, else download, else the shard
    folder given) gets `samples`: that many random samples (seeded) with 128-px JPEG
    thumbnails, and finalize gets `drop_samples`: up to `drop_samples` per image drop reason."""
    path = path.rstrip("/") if storage.is_remote(path) else path
    if not storage.exists(path):
        raise UserError(f"not found: {path} (give a stage output, a shard folder or an output root)")
    listing = _listing(path)
    if stages.MANIFEST in listing or any(n.endswith((".tar", ".parquet")) for n in listing):
        found = {_stage_name(path): path}
    else:
        found = {name: storage.join(path, name) for name in _stage_dirs(path)}
        if not found:
            raise UserError(f"{path} holds no stage output, shards or Parquet (give OUT, OUT/<stage> "
                            "or a folder of .tar shards)")
    per_stage = {name: stage_stats(p, top) for name, p in found.items()}
    pipeline = [_pipeline_row(name, s["manifest"]) for name, s in per_stage.items() if s["manifest"]]
    if samples > 0:
        add_samples(per_stage, samples, drop_samples, seed)
    add_entry_names(path, found, per_stage)
    return {"path": path, "pipeline": pipeline, "stages": per_stage}


def _pipeline_row(name: str, manifest: dict) -> dict:
    row = {"stage": name, **{k: manifest[k] for k in ("rows_in", "rows_out", "drops", "seconds",
                                                      "spark_jobs") if k in manifest}}
    if row.get("seconds") and row.get("rows_in") is not None:
        row["rows_per_second"] = round(row["rows_in"] / row["seconds"], 1)
    return row


def _listing(folder: str) -> dict[str, int]:
    """{file name: size} of the files directly in `folder` (one listing call)."""
    fs, p = storage.filesystem(folder)
    try:
        entries = fs.ls(p, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {posixpath.basename(e["name"].rstrip("/")): e.get("size") or 0
            for e in entries if e.get("type") == "file"}


def _stage_dirs(root: str) -> list[str]:
    """Sub-folders of an output root that hold a stage output or shards, in pipeline order."""
    fs, p = storage.filesystem(root)
    found = []
    for entry in fs.ls(p, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry.get("type") != "directory" or name.startswith((".", "_")):  # skip temporaries
            continue
        files = _listing(storage.join(root, name))
        if stages.MANIFEST in files or any(n.endswith(".tar") for n in files):
            found.append(name)
    rank = {s: i for i, s in enumerate(NAMES)}
    return sorted(found, key=lambda n: (rank.get(n, len(rank)), n))


def _stage_name(path: str) -> str:
    manifest = storage.join(path, stages.MANIFEST)
    if storage.exists(manifest):
        return storage.read_json(manifest).get("stage", posixpath.basename(path))
    return posixpath.basename(path.rstrip("/")) or "shards"


def stage_stats(path: str, top: int = 20) -> dict:
    listing = _listing(path)
    manifest = storage.read_json(storage.join(path, stages.MANIFEST)) if stages.MANIFEST in listing else {}
    out = {"path": path, "complete": stages.SUCCESS in listing,
           "manifest": {k: v for k, v in manifest.items() if k not in ("config", "inputs", "versions")}}
    if manifest.get("config"):
        out["config"] = manifest["config"]
    if manifest.get("versions"):
        out["versions"] = manifest["versions"]
    if isinstance(manifest.get("clip_score"), dict):  # the score stage's distribution and extremes
        out["clip_score"] = manifest["clip_score"]
    if isinstance(manifest.get("screen"), dict):  # hash lists, NSFW histogram, faces
        out["screen"] = manifest["screen"]
    shard_stats, unfinished = _read_shard_stats(path, listing)
    parquet = sorted(n for n in listing if n.endswith(".parquet") and _shard(n) not in unfinished)
    if parquet:
        out.update(_parquet_stats([storage.join(path, n) for n in parquet], top))
    tars = sorted(n for n in listing if n.endswith(".tar"))
    if tars:
        out["shards"] = _shard_stats(path, listing, tars, shard_stats, unfinished)
    counts_dir = storage.join(path, "entry_counts")
    if storage.exists(counts_dir):
        out["entry_counts"] = entry_count_stats(counts_dir, manifest.get("config", {}).get("t"), top)
    return out


# --- Parquet columns ----------------------------------------------------------------------

class _Hist:
    """Exact counts of small non-negative integers (clipped at `cap`), summarised at the end."""

    def __init__(self, cap: int, step: int = 1):
        self.step, self.counts = step, np.zeros(cap // step + 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        bins = np.clip(values.astype(np.int64) // self.step, 0, len(self.counts) - 1)
        self.counts += np.bincount(bins, minlength=len(self.counts))

    def summary(self) -> dict | None:
        n = int(self.counts.sum())
        if n == 0:
            return None
        centres = np.arange(len(self.counts)) * self.step
        cum = np.cumsum(self.counts)
        q = lambda f: int(centres[np.searchsorted(cum, f * n)])
        last = int(np.nonzero(self.counts)[0][-1])
        return {"count": n, "mean": round(float((centres * self.counts).sum() / n), 2),
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max_bin": last * self.step,
                "step": self.step, "hist": self.counts[:last + 1].tolist()}


def _parquet_stats(files: list[str], top: int) -> dict:
    """Row count, languages, caption lengths, image sizes and download status of Parquet files.

    Files with a `status` column are img2dataset's per-shard metadata: every URL has a row, so
    status and errors count all rows and the other figures only the successes (what is in the
    tars)."""
    rows, status, errors, langs = 0, Counter(), Counter(), Counter()
    chars = _Hist(MAX_CHARS)
    width, height, orig_width, orig_height = (_Hist(MAX_SIZE, SIZE_STEP) for _ in range(4))
    for f in files:
        with storage.open_file(f, "rb") as handle:
            pf = pq.ParquetFile(handle)
            names = set(pf.schema_arrow.names)
            text_col = "text" if "text" in names else "caption" if "caption" in names else None
            wanted = [c for c in (text_col, "lang", "width", "height", "original_width", "original_height",
                                  "status", "error_message") if c in names]
            rows += pf.metadata.num_rows
            if not wanted:
                continue
            for batch in pf.iter_batches(columns=wanted, batch_size=65_536):
                if "status" in names:
                    status.update(_value_counts(batch.column("status")))
                    if "error_message" in names:
                        failed = pc.not_equal(batch.column("status"), "success")
                        errors.update(_value_counts(pc.filter(batch.column("error_message"), failed)))
                    batch = batch.filter(pc.equal(batch.column("status"), "success"))
                if text_col:
                    chars.add(numpy_of(pc.utf8_length(batch.column(text_col))))
                if "lang" in names:
                    langs.update(_value_counts(batch.column("lang")))
                if "width" in names and "height" in names:
                    width.add(numpy_of(batch.column("width")))
                    height.add(numpy_of(batch.column("height")))
                if "original_width" in names and "original_height" in names:
                    orig_width.add(numpy_of(batch.column("original_width")))
                    orig_height.add(numpy_of(batch.column("original_height")))
    out = {"rows": rows}
    if langs:
        out["languages"] = dict(langs.most_common(top))
        out["language_count"] = len(langs)
    if chars.summary():
        out["caption_chars"] = chars.summary()
    if width.summary():
        out["image_sizes"] = {"width": width.summary(), "height": height.summary()}
    if orig_width.summary():  # before img2dataset's resize
        out["original_sizes"] = {"width": orig_width.summary(), "height": orig_height.summary()}
    if status:
        out["download"] = {"status": dict(status.most_common()), "errors": dict(errors.most_common(top))}
    return out


def _value_counts(column) -> Counter:
    column = column.drop_null()
    if len(column) == 0:
        return Counter()
    return Counter({str(v["values"]): int(v["counts"]) for v in pc.value_counts(column).to_pylist()})


# --- shards -------------------------------------------------------------------------------

def _shard(name: str) -> str:
    """The shard a file belongs to: 00001.parquet, 00001_stats.json -> 00001.tar."""
    return name.split(".")[0].removesuffix("_stats") + ".tar"


def _read_shard_stats(path: str, listing: dict) -> tuple[dict[str, dict], list[str]]:
    """({shard: its parsed _stats.json}, [shards whose _stats.json does not parse]).

    img2dataset writes `_stats.json` last but in place, so a cut one is a shard killed while
    being finished: unfinished, as download's resume treats it (it redoes the shard)."""
    parsed, unfinished = {}, []
    for name in sorted(n for n in listing if n.endswith(STATS_SUFFIX)):
        try:
            s = storage.read_json(storage.join(path, name))
        except ValueError:
            s = None
        if isinstance(s, dict):
            parsed[_shard(name)] = s
        else:
            unfinished.append(_shard(name))
    return parsed, unfinished


def _shard_stats(path: str, listing: dict, tars: list[str], shard_stats: dict[str, dict],
                 unfinished: list[str]) -> dict:
    """Samples and bytes per finished shard, from sizes.json and/or the per-shard _stats.json
    files; the unfinished ones are only listed.

    `_stats.json` counts attempted URLs (`count`) and the written samples (`successes`);
    download's (or img2dataset's) attempts are the download totals, not a re-sharded stage's
    (its `sources`). When a folder has neither file, the tars' headers are counted."""
    tars = [t for t in tars if t not in unfinished]
    per_stats, download = {}, Counter()
    for shard, s in shard_stats.items():
        per_stats[shard] = s.get("successes", s.get("count", 0))
        if "successes" in s and "sources" not in s:
            download.update({k: s.get(k, 0) for k in ("count", "successes", "failed_to_download",
                                                      "failed_to_resize")})
    sizes = storage.read_json(storage.join(path, SIZES)) if SIZES in listing else None
    samples = sizes or per_stats or {t: count_tar_samples(storage.join(path, t)) for t in tars}
    out = {"count": len(tars), "samples": int(sum(samples.get(t, 0) for t in tars)),
           "per_shard": {t: {"samples": int(samples.get(t, 0)), "bytes": listing[t]} for t in tars},
           "bytes": int(sum(listing[t] for t in tars)),
           "counted_from": "sizes.json" if sizes else "_stats.json" if per_stats else "tar headers"}
    if sizes and per_stats:
        out["consistent"] = all(sizes.get(t) == per_stats.get(t) for t in tars)
    if unfinished:
        out["unfinished"] = unfinished
    if download:
        out["download_totals"] = dict(download)
    return out


def count_tar_samples(path: str) -> int:
    """Whole samples in a WebDataset tar, from its headers alone (the shared reader,
    shard/tars.py, skipping every member's bytes); a damaged tar counts up to the damage."""
    return sum(problem != "corrupt_shard"
               for _, _, problem in read_samples(path, wanted=lambda *_: False))


def _strip_thumbs(obj):
    if isinstance(obj, dict):
        return {k: _strip_thumbs(v) for k, v in obj.items() if k != "thumb"}
    if isinstance(obj, list):
        return [_strip_thumbs(v) for v in obj]
    return obj


def to_json(stats: dict, thumbs: bool = False) -> str:
    """JSON of `stats`; thumbnails (base64 JPEGs) are left out unless `thumbs`."""
    return json.dumps(stats if thumbs else _strip_thumbs(stats), indent=2, default=str)
