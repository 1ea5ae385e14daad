"""The balancing coin: a uniform in [0, 1) per (pair, query entry) under a seed, the keep rule
built on it, and the entry counts it needs. Shared by balance and finalize's exact balance, so
neither imports the other.

count[e] = pairs matching entry e; p[e] = min(1, t / count[e]); a pair is kept when any of its
entries' coins is below p[e]. The coins depend on nothing but (uid, entry id, seed), so the
result does not depend on partitioning, executors or reruns.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import runner, storage

ENTRY_IDS = "entry_ids"  # the matched entries' column: match writes it, balance and finalize read it
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective 64-bit mix with good avalanche (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uid_hash(uids: pa.Array) -> np.ndarray:
    """uint64 per uid: the 16-hex-digit uids extract writes are read as numbers, vectorised;
    anything else is hashed with blake2b (8 bytes) one by one."""
    uids = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    uids = uids.cast(pa.large_string())
    if uids.null_count == 0 and pc.all(pc.match_substring_regex(uids, "^[0-9a-f]{16}$")).as_py():
        first = int(np.frombuffer(uids.buffers()[1], np.int64)[uids.offset]) if len(uids) else 0
        digits = np.frombuffer(uids.buffers()[2], np.uint8, 16 * len(uids), first).reshape(-1, 16) \
            if len(uids) else np.zeros((0, 16), np.uint8)
        nibbles = np.where(digits >= ord("a"), digits - ord("a") + 10, digits - ord("0")).astype(np.uint64)
        shifts = np.arange(60, -1, -4, dtype=np.uint64)
        return np.bitwise_or.reduce(nibbles << shifts, axis=1)
    return np.array([int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "big")
                     for u in uids.to_pylist()], np.uint64)


def coins(uid_hashes: np.ndarray, entry_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform in [0, 1) for each (uid hash, entry id) pair under `seed`."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + entry_ids.astype(np.uint64))
        h = _mix(uid_hashes.astype(np.uint64) ^ key)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def keep_mask(uids: pa.Array, entry_ids: pa.Array, counts: np.ndarray, t: int, seed: int) -> np.ndarray:
    """True for the rows to keep; `counts[e]` = pairs matching entry e over the WHOLE data set."""
    uids = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    entry_ids = entry_ids.combine_chunks() if isinstance(entry_ids, pa.ChunkedArray) else entry_ids
    n = len(uids)
    lengths = pc.list_value_length(entry_ids).fill_null(0).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n), lengths)
    ids = pc.list_flatten(entry_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    p = np.minimum(1.0, t / np.maximum(counts[ids], 1))
    hit = coins(uid_hash(uids)[rows], ids, seed) < p
    return np.bincount(rows[hit], minlength=n) > 0


_COUNTS = pa.schema([("entry_id", pa.int32()), ("n", pa.int64())])


def entry_counts(rows: runner.Rows) -> pa.Table:
    """(entry_id, n) on the driver, sorted: the rows matching each entry (rows with a drop
    reason, where they have that column, do not count)."""
    return runner.sum_by(runner.map_batches(rows, _batch_counts, _COUNTS), ["entry_id"], "n")


def _batch_counts(batch: pa.RecordBatch, _shared=None) -> pa.RecordBatch:
    if runner.REASON in batch.schema.names:
        batch = batch.filter(pc.is_null(batch.column(runner.REASON)))
    counts = pc.value_counts(pc.list_flatten(batch.column(ENTRY_IDS)))
    return pa.RecordBatch.from_arrays([counts.field("values").cast(pa.int32()),
                                       counts.field("counts").cast(pa.int64())], schema=_COUNTS)


def counts_array(counts: pa.Table) -> np.ndarray:
    """`entry_counts`' table as the array keep_mask takes: counts[entry id] = n."""
    ids = counts.column("entry_id").to_numpy()
    array = np.zeros(int(ids.max()) + 1 if len(ids) else 0, np.int64)
    array[ids] = counts.column("n").to_numpy()
    return array


def before_and_after(before: pa.Table, after: pa.Table) -> pa.Table:
    """(entry_id, count_before, count_after) of two `entry_counts` tables, by entry id."""
    joined = before.join(after.rename_columns(["entry_id", "after"]), "entry_id").sort_by("entry_id")
    return pa.table({"entry_id": joined.column("entry_id").cast(pa.int32()),
                     "count_before": joined.column("n").cast(pa.int64()),
                     "count_after": joined.column("after").fill_null(0).cast(pa.int64())})


def write_entry_counts(table: pa.Table, out_dir: str) -> None:
    """OUT_DIR/entry_counts/part-00000.parquet (small, on the driver: through fsspec, no s3a)."""
    import pyarrow.parquet as pq

    folder = storage.join(out_dir, "entry_counts")
    fs, path = storage.filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f:
        pq.write_table(table, f)
