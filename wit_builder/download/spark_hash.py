"""Spark's hash partitioning of a string column, in numpy: which file `repartition(n, col)` puts
a row in, so that the driver can write the same input files as Spark (prepare_local.py; why
that driver path stays, with its figures, is in its docstring).

`repartition(n, "uid")` sends a row to partition `pmod(hash(uid), n)`, where `hash` is Spark's
Murmur3Hash with seed 42. For a string Spark hashes its UTF-8 bytes with
`Murmur3_x86_32.hashUnsafeBytes`: the standard 4-byte rounds (little-endian words), then each
remaining byte (sign-extended) as a whole round of its own, unlike the reference MurmurHash3
tail. Strings of one length are hashed together, a round per column of their bytes (uids all
have 16). Tested against Spark's own `hash()`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SEED = 42


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix(h1: np.ndarray, k1: np.ndarray) -> np.ndarray:
    k1 = _rotl(k1 * np.uint32(0xCC9E2D51), 15) * np.uint32(0x1B873593)
    return _rotl(h1 ^ k1, 13) * np.uint32(5) + np.uint32(0xE6546B64)


def _fmix(h1: np.ndarray, length: int) -> np.ndarray:
    h1 = h1 ^ np.uint32(length)
    h1 ^= h1 >> np.uint32(16)
    h1 *= np.uint32(0x85EBCA6B)
    h1 ^= h1 >> np.uint32(13)
    h1 *= np.uint32(0xC2B2AE35)
    return h1 ^ (h1 >> np.uint32(16))


def string_hashes(values: pa.Array) -> np.ndarray:
    """Spark's `hash(value)` of each string of an array without nulls, as int32."""
    n = len(values)
    binary = values.cast(pa.large_binary())
    _, offsets_buf, data_buf = binary.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, np.int64)[binary.offset:binary.offset + n + 1] \
        if n else np.zeros(1, np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    out = np.empty(n, np.uint32)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        block = data[offsets[rows, None] + np.arange(length)]  # (rows, length) bytes
        h1 = np.full(len(rows), SEED, np.uint32)
        aligned = length - length % 4
        words = np.ascontiguousarray(block[:, :aligned]).view("<u4")
        for j in range(aligned // 4):
            h1 = _mix(h1, words[:, j])
        for j in range(aligned, length):
            h1 = _mix(h1, block[:, j].view(np.int8).astype(np.int32).view(np.uint32))
        out[rows] = _fmix(h1, length)
    return out.view(np.int32)


def partitions_of(values: pa.Array, partitions: int) -> np.ndarray:
    """The partition `repartition(partitions, column)` gives each row, by its column's value."""
    return string_hashes(values).astype(np.int64) % partitions  # numpy's % is Spark's pmod here
