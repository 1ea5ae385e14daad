"""One sample of a WebDataset shard: its image, its json metadata, its shard Parquet row, and
the files beside the tars (`NNNNN_stats.json`, `sizes.json`, the dataset card `README.md`).

One schema per file kind, whichever stage writes the shards (download, finalize, screen):
- a sample's json and its Parquet row hold the same record, `SHARD_COLUMNS` (download's Parquet
  also has a row for each failed URL, with `status` and `error_message`);
- `NNNNN_stats.json` has img2dataset's keys (`STATS_KEYS`), then what the stage adds (download:
  `host_backoffs`; finalize: `tar_bytes`, `image_bytes`, `sources`);
- `README.md` declares the json's column types, so that Hugging Face `datasets` does not type a
  column that is null in every sample it looks at as `null`.
Shared by every stage that reads or writes shards (download, finalize, score, stats, train), so
none of them imports another for these.
"""

from __future__ import annotations

import json

from wit_builder import storage

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SIZES = "sizes.json"  # {shard name: samples}, open_clip's convention
STATS_SUFFIX = "_stats.json"  # NNNNN_stats.json beside NNNNN.tar, written when the shard is done
SHARD_COLUMNS = [  # (name, type) of each sample's json key and shard Parquet column, in order
    ("uid", "string"), ("entry_ids", "list<int32>"), ("entries", "list<string>"),
    ("page_url", "string"), ("source", "string"), ("lang", "string"), ("user_id", "string"),
    ("text", "string"), ("url", "string"), ("key", "string"), ("status", "string"),
    ("error_message", "string"), ("width", "int32"), ("height", "int32"),
    ("original_width", "int32"), ("original_height", "int32"), ("sha256", "string"),
    ("phash", "string"), ("pdq", "string"), ("download_phash", "string"),
    ("nsfw_score", "float32"), ("faces", "faces"), ("source_shard", "string"),
]  # pdq ... faces: the screen stage's (screen/shard.py), null in shards it has not screened
STATS_KEYS = ["count", "successes", "failed_to_download", "failed_to_resize", "duration",
              "start_time", "end_time", "status_dict"]  # img2dataset's, in its order
CARD = "README.md"


def image_of(files: dict) -> tuple[str, bytes] | tuple[None, None]:
    for ext in IMAGE_EXTS:
        if ext in files:
            return ext, files[ext]
    return None, None


def sample_meta(files: dict) -> dict:
    try:
        meta = json.loads(files.get("json", b"{}"))
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past the limit
        return {}
    return meta if isinstance(meta, dict) else {}


def meta_row(meta: dict, files: dict, source: str) -> dict:
    """The shard Parquet row of one sample, values coerced to the column types (bad ones: null)."""
    if meta.get("text") is None:
        meta = {**meta, "text": meta.get("caption") or files.get("txt", b"").decode("utf-8", "replace")}
    row = {}
    for name, kind in SHARD_COLUMNS:
        value = meta.get(name)
        try:
            if value is None:
                row[name] = None
            elif kind == "int32":
                row[name] = _int32(value)
            elif kind == "list<int32>":
                row[name] = [_int32(v) for v in value]
            elif kind == "list<string>":
                row[name] = [str(v) for v in value]
            elif kind == "float32":
                row[name] = _number(value)
            elif kind == "faces":
                row[name] = _faces(value)
            else:
                row[name] = str(value)
        except (TypeError, ValueError, OverflowError):
            row[name] = None
    row["source_shard"] = source
    return row


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _faces(value) -> dict:
    """{"count": n, "boxes": [[x, y, w, h], ...]} with int32 values; ValueError otherwise."""
    if not isinstance(value, dict) or not isinstance(value.get("boxes"), list):
        raise ValueError("not a faces record")
    boxes = [[_int32(v) for v in box] for box in value["boxes"]]
    if any(len(box) != 4 for box in boxes):
        raise ValueError("a face box is x, y, w, h")
    return {"count": _int32(value.get("count", len(boxes))), "boxes": boxes}


def _int32(value) -> int:
    number = int(value)
    if not -2**31 <= number < 2**31:
        raise ValueError(f"{number} does not fit an int32 column")
    return number


def parquet_schema():
    import pyarrow as pa

    kinds = {"list<int32>": pa.list_(pa.int32()), "list<string>": pa.list_(pa.string()),
             "faces": pa.struct([("count", pa.int32()), ("boxes", pa.list_(pa.list_(pa.int32())))])}
    return pa.schema([(n, kinds.get(t) or pa.type_for_alias(t)) for n, t in SHARD_COLUMNS])


def shard_stats(count: int, successes: int, start: float, end: float, status: dict,
                failed_to_download: int = 0, failed_to_resize: int = 0, **extra) -> dict:
    """A shard's `_stats.json`: img2dataset's keys, then the stage's own `extra`."""
    return {"count": count, "successes": successes, "failed_to_download": failed_to_download,
            "failed_to_resize": failed_to_resize, "duration": end - start, "start_time": start,
            "end_time": end, "status_dict": status, **extra}


def read_stats(path: str) -> dict:
    """A shard's `_stats.json`; ValueError when it is not one (cut, or another schema)."""
    stats = storage.read_json(path)
    missing = [k for k in STATS_KEYS if not isinstance(stats, dict) or k not in stats]
    if missing:
        raise ValueError(f"{path}: not a shard _stats.json (no {', '.join(missing)})")
    return stats


def write_card(out_dir: str, stage: str) -> None:
    """README.md, a dataset card that names the tars as the data and declares the samples'
    column types: `datasets.load_dataset(OUT_DIR)` types every json column as written, not
    `null` where the samples it looked at hold no value."""
    yaml = {"string": "      dtype: string", "int32": "      dtype: int32",
            "list<int32>": "      list: int32", "list<string>": "      list: string",
            "float32": "      dtype: float32",
            "faces": "      struct:\n      - name: count\n        dtype: int32\n"
                     "      - name: boxes\n        list:\n          list: int32"}
    struct = "\n".join(f"    - name: {n}\n{yaml[t]}" for n, t in SHARD_COLUMNS)
    storage.write_bytes_atomic(storage.join(out_dir, CARD), f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: "*.tar"
dataset_info:
  features:
  - name: jpg
    dtype: image
  - name: json
    struct:
{struct}
  - name: txt
    dtype: string
---

# WebDataset shards written by wit-builder's {stage} stage

Each sample: `KEY.jpg` (the image), `KEY.txt` (its caption) and `KEY.json` (its record, the
columns above; `NNNNN.parquet` holds the same records). `NNNNN_stats.json` counts each shard
with img2dataset's keys. Load with `datasets.load_dataset("THIS_FOLDER")` or
`webdataset.WebDataset("THIS_FOLDER/{{00000..NNNNN}}.tar")`.
""".encode())


def write_sizes(out_dir: str, counts: dict[str, int]) -> None:
    """sizes.json: samples per shard name."""
    storage.write_json_atomic(storage.join(out_dir, SIZES), counts)
