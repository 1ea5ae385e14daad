"""Spark's hash partitioning of a string column, in Python: which file `repartition(n, col)` puts
a row in, so that the driver can write the same input files as Spark (prepare_local.py).

`repartition(n, "uid")` sends a row to partition `pmod(hash(uid), n)`, where `hash` is Spark's
Murmur3Hash with seed 42. For a string Spark hashes its UTF-8 bytes with
`Murmur3_x86_32.hashUnsafeBytes`: the standard 4-byte rounds (little-endian words), then each
remaining byte (sign-extended) as a whole round of its own, unlike the reference MurmurHash3
tail. Tested against Spark's own `hash()`.
"""

from __future__ import annotations

SEED = 42
_MASK = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _mix(h1: int, k1: int) -> int:
    k1 = _rotl((k1 * 0xCC9E2D51) & _MASK, 15) * 0x1B873593 & _MASK
    h1 = _rotl(h1 ^ k1, 13)
    return (h1 * 5 + 0xE6546B64) & _MASK


def string_hash(value: str, seed: int = SEED) -> int:
    """Spark's `hash(value)` of a non-null string, as a signed 32-bit int."""
    data = value.encode("utf-8")
    h1 = seed & _MASK
    aligned = len(data) - len(data) % 4
    for i in range(0, aligned, 4):
        h1 = _mix(h1, int.from_bytes(data[i:i + 4], "little"))
    for byte in data[aligned:]:
        h1 = _mix(h1, (byte - 256 if byte > 127 else byte) & _MASK)
    h1 ^= len(data)
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _MASK
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def partition_of(value: str, partitions: int) -> int:
    """The partition `repartition(partitions, column)` gives a row whose column holds `value`."""
    return string_hash(value) % partitions  # Python's % is Spark's pmod for a positive divisor
