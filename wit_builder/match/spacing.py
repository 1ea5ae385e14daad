"""A batch's texts as bytes, for the matcher: MetaCLIP's spacing (`space` on a string array;
`spaced_bytes` on the batch's concatenated UTF-8 bytes, rows ended by 0xFF, which UTF-8 never
holds, so no span crosses two rows), the optional normalisation, and polynomial hashes of byte
spans (`powers`, `prefix_hashes`; `windows` reads 8 bytes at a time)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WRAPPED = (",", ".", ";", ":", "?", "!", "`")
SPACED = ("\t", "\n", "\r")
_WRAPPED_RE = "([" + re.escape("".join(WRAPPED)) + "])"
_SPACED_RE = "[" + "".join(SPACED) + "]"


def normalize(texts: pa.Array, mode: str) -> pa.Array:
    if mode in ("nfkc", "nfkc_casefold"):
        texts = pc.utf8_normalize(texts, form="NFKC")
    if mode in ("casefold", "nfkc_casefold"):
        texts = pc.utf8_lower(texts)
    return texts


def space(texts: pa.Array) -> pa.Array:
    """MetaCLIP's `spacing()` on a whole string array (two regex passes beat ten literal ones)."""
    blank = pa.scalar(" ", texts.type)
    texts = pc.binary_join_element_wise(blank, texts.fill_null(""), blank, pa.scalar("", texts.type))
    texts = pc.replace_substring_regex(texts, _WRAPPED_RE, r" \1 ")
    return pc.replace_substring_regex(texts, _SPACED_RE, " ")


_P = 0xC6A4A7935BD1E995  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_BLOCK = 4096
_WRAPPED_BYTES = np.array([ord(c) for c in WRAPPED], np.uint8)
_SPACED_BYTES = np.array([ord(c) for c in SPACED], np.uint8)
_ROW_END = 0xFF  # never in UTF-8: a span across two rows can never equal an entry
# TAIL[k]: the low k bytes of a uint64 (k = 8 for all of them)
TAIL = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], np.uint64)


def powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**k and P**-k modulo 2**64 for k < n (numpy's uint64 arithmetic wraps); by blocks, since
    a long cumprod is slow."""
    out = []
    for base in (_P, _P_INV):
        small = np.full(_BLOCK, base, np.uint64)
        small[0] = 1
        small = np.cumprod(small)
        step = np.full(-(-n // _BLOCK), pow(base, _BLOCK, 2**64), np.uint64)
        step[0] = 1
        out.append((np.cumprod(step)[:, None] * small[None, :]).ravel()[:n])
    return out[0], out[1]


def prefix_hashes(data: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Polynomial prefix hashes of a byte array, so that any slice's hash is one subtraction and
    one multiplication away; `powers` from `powers(>= len(data) + 1)`."""
    prefix = np.zeros(len(data) + 1, np.uint64)
    np.multiply(data, powers[:len(data)], out=prefix[1:])
    np.cumsum(prefix[1:], out=prefix[1:])
    return prefix


def windows(data: np.ndarray) -> np.ndarray:
    """The 8 bytes from each position of `data` (padded by 8 bytes) as little-endian uint64."""
    return np.ndarray((len(data) - 8,), np.dtype("<u8"), data, 0, (1,))


def spaced_bytes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MetaCLIP's spacing of every row, in numpy: row r becomes " " + spaced(row) + " " + 0xFF in
    one byte array (8 zero bytes of padding after it, for `windows`), and each row's start in it."""
    n, rows = len(data), len(offsets) - 1
    is_mark = data == _WRAPPED_BYTES[0]  # comparisons beat a table lookup 3 to 1
    for byte in _WRAPPED_BYTES[1:]:
        is_mark |= data == byte
    marks = np.flatnonzero(is_mark)  # few: place what is inserted, then copy the rest
    # row r starts after 3 bytes per row and 2 per mark before it; the mark k (byte j of row r)
    # goes to j + 2 * k + 3 * r + 2, between two inserted spaces
    starts = offsets[:-1] + 2 * np.searchsorted(marks, offsets[:-1]) + 3 * np.arange(rows)
    total = n + 2 * len(marks) + 3 * rows
    at = marks + 2 * np.arange(len(marks)) + 3 * (np.searchsorted(offsets, marks, side="right") - 1) + 2
    # inserted: each row's leading space, trailing space and 0xFF (the last two end the row), and
    # a space on each side of each mark; the row's bytes fill the other places in order
    ends = np.append(starts[1:], total) if rows else starts
    inserted = np.concatenate([starts, ends - 2, ends - 1, at - 1, at + 1])
    copied = np.ones(total, bool)
    copied[inserted] = False
    out = np.full(total + 8, 32, np.uint8)
    out[total:] = 0
    text = out[:total]
    text[copied] = data
    if (data <= max(_SPACED_BYTES)).any():  # tab, newline, carriage return (rare) become spaces
        text[np.isin(text, _SPACED_BYTES)] = 32
    out[ends - 1] = _ROW_END
    return out, starts


def arrow_bytes(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, UTF-8 bytes) of a string array without nulls, not copying the bytes."""
    n = len(strings)
    kind = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets_buf, data_buf = strings.buffers()[:3]
    if n == 0 or offsets_buf is None:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.uint8)
    offsets = np.frombuffer(offsets_buf, kind)[strings.offset:strings.offset + n + 1].astype(np.int64)
    start = int(offsets[0])
    data = np.frombuffer(data_buf, np.uint8, int(offsets[-1]) - start, start) if data_buf is not None \
        else np.zeros(0, np.uint8)
    return offsets - start, data


def expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo, hi): (index of the range, each position in it), flattened."""
    counts = hi - lo
    owner = np.repeat(np.arange(len(lo)), counts)
    return owner, lo[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
