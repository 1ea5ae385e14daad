"""One sample of a WebDataset shard: its image, its json metadata, its shard Parquet row, and
the files beside the tars (`NNNNN_stats.json`, `sizes.json`).

Shared by every stage that reads or writes shards (finalize, score, stats, train), so none of
them imports another for these.
"""

from __future__ import annotations

import json

from wit_builder import storage

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SIZES = "sizes.json"  # {shard name: samples}, open_clip's convention
STATS_SUFFIX = "_stats.json"  # NNNNN_stats.json beside NNNNN.tar, written when the shard is done
META_COLUMNS = [  # (name, arrow type name) of each shard Parquet column
    ("key", "string"), ("uid", "string"), ("url", "string"), ("text", "string"),
    ("page_url", "string"), ("entry_ids", "list<int32>"), ("lang", "string"),
    ("width", "int32"), ("height", "int32"), ("original_width", "int32"),
    ("original_height", "int32"), ("sha256", "string"), ("phash", "string"),
    ("source_shard", "string"),
]


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
    for name, kind in META_COLUMNS:
        value = meta.get(name)
        try:
            if value is None:
                row[name] = None
            elif kind == "int32":
                row[name] = _int32(value)
            elif kind == "list<int32>":
                row[name] = [_int32(v) for v in value]
            else:
                row[name] = str(value)
        except (TypeError, ValueError, OverflowError):
            row[name] = None
    row["source_shard"] = source
    return row


def _int32(value) -> int:
    number = int(value)
    if not -2**31 <= number < 2**31:
        raise ValueError(f"{number} does not fit an int32 column")
    return number


def parquet_schema():
    import pyarrow as pa

    return pa.schema([(n, pa.list_(pa.int32()) if t == "list<int32>" else pa.type_for_alias(t))
                      for n, t in META_COLUMNS])


def write_sizes(out_dir: str, counts: dict[str, int]) -> None:
    """sizes.json: samples per shard name."""
    storage.write_json_atomic(storage.join(out_dir, SIZES), counts)
