"""Near-duplicate search on 64-bit perceptual hashes with banded hashing.

Split the 64 bits into `bands` bands. Two hashes within Hamming distance d differ in at most d
bits, so when bands > d at least one band is bit-for-bit equal (pigeonhole): comparing the
hashes that share a bucket (band index, band value) finds every close pair while never
comparing all pairs. Fewer, wider bands give smaller buckets; `bands = d + 1` is the widest
choice that still finds every pair.

The stage runs it through the runner, the same functions on the driver or on Spark:
`bucket_rows` gives each hash its buckets (per batch), `pairs_in_buckets` compares the hashes
of whole buckets (per group of `bucket`); `close_pairs` does both at once for two arrays (the
evaluation sets against a batch).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from wit_builder.errors import UserError

HASH_BITS = 64


def band_layout(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: `bands` contiguous bit ranges covering all 64 bits."""
    if not 1 <= bands <= HASH_BITS:
        raise UserError(f"finalize.bands = {bands}: must be between 1 and {HASH_BITS}")
    edges = [i * HASH_BITS // bands for i in range(bands + 1)]
    return [(lo, hi - lo) for lo, hi in zip(edges, edges[1:])]


def check_bands(bands: int, max_distance: int) -> None:
    if bands <= max_distance:
        raise UserError(f"finalize.bands = {bands} cannot find every pair within Hamming distance "
                        f"{max_distance} (set bands to at least {max_distance + 1})")
    band_layout(bands)


def band_values(phash: int, bands: int) -> list[int]:
    """The band values of one hash, one at a time (for tests and baselines)."""
    unsigned = phash & (2**HASH_BITS - 1)
    return [(unsigned >> shift) & ((1 << width) - 1) for shift, width in band_layout(bands)]


def _band_column(unsigned, shift: int, width: int):
    mask = np.uint64((1 << width) - 1) if width < HASH_BITS else np.uint64(2**HASH_BITS - 1)
    return (unsigned >> np.uint64(shift)) & mask


def _bucket_pairs(values, tags, max_distance: int, hashes, cross: bool):
    """(i, j) index pairs of `hashes` sharing a bucket value within `max_distance` bits.

    Sorts by bucket value and compares each element with the ones after it in its bucket:
    step k pairs i with i + k, for the elements whose bucket has more than k left. Memory is
    O(n) per step plus the pairs kept. `cross`: only pairs with tags[i] != tags[j]."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    n = len(v)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    ends = np.r_[starts[1:], n]
    end_of = np.repeat(ends, ends - starts)  # one past the last element of each one's bucket
    h = hashes[order]
    t = tags[order] if cross else None
    active = np.flatnonzero(end_of - np.arange(n) > 1)
    found = []
    k = 1
    while len(active):
        j = active + k
        close = np.bitwise_count(h[active] ^ h[j]) <= max_distance
        if cross:
            close &= t[active] != t[j]
        if close.any():
            found.append(np.stack([order[active[close]], order[j[close]]], axis=1))
        k += 1
        active = active[end_of[active] - active > k]
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def close_pairs(left, right=None, max_distance: int = 4, bands: int = 5):
    """int64 array (k, 2) of the distinct hash-value pairs (a, b)
    within `max_distance` bits, a from `left` and b from `right`; without `right`, pairs within
    `left`, each unordered pair once with a < b. Inputs: int64 arrays (signed pHash values)."""
    check_bands(bands, max_distance)
    a = np.unique(np.asarray(left, np.int64))
    cross = right is not None
    b = np.unique(np.asarray(right, np.int64)) if cross else np.zeros(0, np.int64)
    hashes = np.concatenate([a, b]).view(np.uint64)
    tags = np.r_[np.zeros(len(a), np.int8), np.ones(len(b), np.int8)]
    found = [_bucket_pairs(_band_column(hashes, shift, width), tags, max_distance, hashes, cross)
             for shift, width in band_layout(bands)]
    pairs = np.concatenate(found)
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    signed = hashes.view(np.int64)
    if cross:  # orient (left, right)
        pairs = np.where((tags[pairs[:, 0]] == 0)[:, None], pairs, pairs[:, ::-1])
    else:  # a < b as signed values
        pairs = np.sort(pairs, axis=1)  # indices into the sorted unique a: index order = value order
    pairs = np.unique(pairs, axis=0)
    return signed[pairs]


BUCKETS = pa.schema([("bucket", pa.int64()), ("phash", pa.int64())])
PAIRS = pa.schema([("a", pa.int64()), ("b", pa.int64())])


def bucket_rows(hashes: np.ndarray, bands: int) -> pa.RecordBatch:
    """`BUCKETS` rows: each distinct hash once per band, `bucket` naming (band, band value)
    exactly (value << 6 | band; one band of 64 bits is the hash itself)."""
    hashes = np.unique(np.asarray(hashes, np.int64))
    unsigned = hashes.view(np.uint64)
    buckets = [unsigned if width == HASH_BITS else
               (_band_column(unsigned, shift, width) << np.uint64(6)) | np.uint64(band)
               for band, (shift, width) in enumerate(band_layout(bands))]
    return pa.RecordBatch.from_arrays([pa.array(np.concatenate(buckets).view(np.int64)),
                                       pa.array(np.tile(hashes, len(buckets)))], schema=BUCKETS)


def pairs_in_buckets(table: pa.Table, max_distance: int) -> pa.Table:
    """`PAIRS` rows (a < b): the hashes within `max_distance` bits that share a bucket of
    `table` (`BUCKETS` rows holding whole buckets; a pair found in several buckets is repeated)."""
    table = table.group_by(["bucket", "phash"]).aggregate([])  # a hash from several batches
    buckets = table.column("bucket").to_numpy()
    hashes = table.column("phash").to_numpy().view(np.uint64)
    found = _bucket_pairs(buckets, np.zeros(len(buckets), np.int8), max_distance, hashes, False)
    a, b = hashes.view(np.int64)[found[:, 0]], hashes.view(np.int64)[found[:, 1]]
    return pa.table({"a": np.minimum(a, b), "b": np.maximum(a, b)}, schema=PAIRS)
