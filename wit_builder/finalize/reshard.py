"""Copy the kept samples into fixed-size shards `{00000..N}.tar` with sizes.json and per-shard stats.

Kept samples keep their input order (source shard, then position) and sample i of that order
goes to output shard i // samples_per_shard, so an output shard reads a contiguous run of
source shards, each once. A Spark task writes whole output shards: `NNNNN.tar` (plain ustar,
shard/tars.py), `NNNNN.parquet` (the samples' metadata, one row each) and `NNNNN_stats.json`.
The driver then writes `sizes.json` (open_clip's convention).
"""

from __future__ import annotations

import json
import time
from functools import partial

import numpy as np
import pyarrow as pa

from wit_builder import runner, storage
from wit_builder.phash import phash_hex
from wit_builder.shard.samples import (STATS_SUFFIX, image_of, meta_row, parquet_schema,
                                       sample_meta, shard_stats, write_card, write_sizes)
from wit_builder.shard.tars import TarWriter, read_samples

KEPT = pa.schema([("shard", pa.int32()), ("pos", pa.int32()), ("sha256", pa.string()),
                  ("phash", pa.int64())])
PLACED = pa.schema([*KEPT, pa.field("out_shard", pa.int64()), pa.field("out_pos", pa.int64())])
WRITTEN = pa.schema([("out_shard", pa.int64()), ("name", pa.string()), ("count", pa.int64()),
                     ("tar_bytes", pa.int64()), ("image_bytes", pa.int64())])


def write(ctx, kept: runner.Rows, tars: list[str], out_dir: str, samples_per_shard: int) -> list[dict]:
    """Write the output shards of the `KEPT` rows and sizes.json; return one dict per shard
    (name, count, bytes). Only one row per source shard (its kept count) comes to the driver
    to place them; the shards are written by Spark tasks, whole output shards each."""
    counts = np.zeros(len(tars), np.int64)
    for shard, n in runner.count_by(kept, "shard").items():
        counts[shard] = n
    offsets = np.cumsum(counts) - counts  # the kept samples of the source shards before
    n_shards = -(-int(counts.sum()) // samples_per_shard)
    if n_shards == 0:
        return _finish([], out_dir)
    placed = runner.by_key(kept, "shard", partial(_place, offsets, samples_per_shard), PLACED)
    written = runner.by_key(placed, "out_shard", partial(
        _write_shards, tars, out_dir, *_layout(n_shards, samples_per_shard)), WRITTEN, spread=ctx)
    return _finish(runner.table(written).to_pylist(), out_dir)


def _place(offsets: np.ndarray, samples_per_shard: int, table: pa.Table) -> pa.Table:
    """Whole source shards: sample i of the kept order (source shard, then position) goes to
    output shard i // samples_per_shard, at i % samples_per_shard."""
    table = table.sort_by([("shard", "ascending"), ("pos", "ascending")])
    shard = table.column("shard").to_numpy()
    starts, lengths = runner.runs(shard)
    index = offsets[shard] + np.arange(len(shard)) - np.repeat(starts, lengths)
    return table.append_column("out_shard", pa.array(index // samples_per_shard)) \
        .append_column("out_pos", pa.array(index % samples_per_shard))


def _write_shards(tars: list[str], out_dir: str, digits: int, pos_digits: int,
                  table: pa.Table) -> pa.Table:
    """Whole output shards: write each one's tar, Parquet and stats; their `WRITTEN` rows."""
    table = table.sort_by([("out_shard", "ascending"), ("shard", "ascending"), ("pos", "ascending")])
    columns = [table.column(c).to_pylist() for c in ("shard", "pos", "out_pos", "sha256", "phash")]
    written = []
    for start, length in zip(*runner.runs(table.column("out_shard").to_numpy())):
        rows = zip(*[c[start:start + length] for c in columns])
        written.append(_write_rows(table.column("out_shard")[start].as_py(), rows, tars, out_dir,
                                   digits, pos_digits))
    return pa.Table.from_pylist(written, schema=WRITTEN)


def _write_rows(out_shard: int, planned_rows, tars: list[str], out_dir: str, digits: int,
                pos_digits: int) -> dict:
    """Write one output shard from its planned rows (shard, pos, out_pos, sha256, phash), in
    (shard, pos) order; return its `WRITTEN_SCHEMA` row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = storage.shard_name(out_shard, digits)
    base = storage.join(out_dir, name)
    wanted = {}
    for shard, pos, out_pos, sha256, phash in planned_rows:
        wanted.setdefault(int(shard), {})[int(pos)] = (int(out_pos), sha256, int(phash))
    rows, image_bytes, start = [], 0, time.time()
    with storage.open_file(base + ".tar", "wb") as raw:
        writer = TarWriter(raw)
        try:  # closed before `raw` whatever happens (else tarfile writes to a closed file)
            for shard, planned in wanted.items():
                left = len(planned)
                # only the planned samples are read: the others' bytes are skipped
                for pos, (_, files, _) in enumerate(read_samples(tars[shard],
                                                                 lambda p, _: p in planned)):
                    row = planned.get(pos)
                    if row is None:
                        continue
                    out_pos, sha256, phash = row
                    key = name + f"{out_pos:0{pos_digits}d}"
                    ext, data = image_of(files)
                    row = meta_row({**sample_meta(files), "key": key, "sha256": sha256,
                                    "phash": phash_hex(phash)}, files, tars[shard])
                    sample = {"__key__": key, ext: data, "txt": files.get("txt", b""),
                              "json": json.dumps(row, indent=4)}
                    writer.write(sample)
                    rows.append(row)
                    image_bytes += len(data)
                    left -= 1
                    if left == 0:
                        break
        finally:
            writer.close()
    with storage.open_file(base + ".parquet", "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), f)
    fs, path = storage.filesystem(base + ".tar")
    written = {"out_shard": out_shard, "name": name + ".tar", "count": len(rows),
               "tar_bytes": int(fs.size(path)), "image_bytes": image_bytes}
    storage.write_json_atomic(base + STATS_SUFFIX, shard_stats(
        len(rows), len(rows), start, time.time(), {"success": len(rows)},
        tar_bytes=written["tar_bytes"], image_bytes=image_bytes,
        sources=sorted({tars[s] for s in wanted})))
    return written


def _finish(written: list[dict], out_dir: str) -> list[dict]:
    """Sort the shards' rows and write sizes.json (open_clip's convention)."""
    written.sort(key=lambda r: r["out_shard"])
    write_sizes(out_dir, {r["name"]: r["count"] for r in written})
    write_card(out_dir, "finalize")
    return written


def _layout(n_shards: int, samples_per_shard: int) -> tuple[int, int]:
    return max(5, len(str(max(n_shards - 1, 0)))), len(str(samples_per_shard - 1))
