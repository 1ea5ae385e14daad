"""Known-bad hash lists: PDQ and pHash of each image, and the lists they are looked up in.

A list is a text file of hashes in hex, one a line (blank lines and `#` comments skipped):
64 hex digits are a PDQ hash (Meta's 256-bit perceptual hash, bits in the `pdqhash` package's
order, most significant first), 16 a pHash (imagehash's 64 bits, as finalize computes and
prints them). A file may mix both. An image is listed when its PDQ hash is within
`pdq_distance` bits of a listed PDQ hash, or its pHash within `phash_distance` bits of a listed
pHash (Hamming distance).

Lookups are brute force (a XOR and a popcount per listed hash, vectorised): about a millisecond
per image per 100,000 listed hashes, so lists of up to a few million hashes cost less than the
NSFW model. The hashes themselves are never logged: only a list's name and its count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from wit_builder import storage
from wit_builder.errors import UserError
from wit_builder.phash import image_facts, phash_hex

PDQ_HEX, PHASH_HEX = 64, 16
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class HashList:
    name: str  # the file's base name: what the log and the manifest say
    pdq: np.ndarray  # (n, 4) uint64: 256 bits, most significant word first
    phash: np.ndarray  # (n, 1) uint64


def parse_list(name: str, text: str) -> HashList:
    """The hashes of one list file's text; UserError naming the line of anything else."""
    pdq, phash = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not _HEX.fullmatch(line) or len(line) not in (PDQ_HEX, PHASH_HEX):
            raise UserError(f"screen: hash list {name} line {number}: expected {PDQ_HEX} hex "
                            f"digits (PDQ) or {PHASH_HEX} (pHash), got {len(line)} characters")
        (pdq if len(line) == PDQ_HEX else phash).append(line)
    return HashList(name, words(pdq, 4), words(phash, 1))


def load_lists(paths: list[str]) -> list[HashList]:
    """Every list file of `paths` (local or remote, through storage)."""
    lists = []
    for path in paths:
        if not storage.exists(path):
            raise UserError(f"screen: hash list not found: {path}")
        text = storage.read_bytes(path).decode("ascii", "replace")
        lists.append(parse_list(path.rstrip("/").rsplit("/", 1)[-1], text))
    return lists


def words(hexes: list[str], n: int) -> np.ndarray:
    """Hex hashes of 16 * n digits as an (len, n) uint64 array, most significant word first."""
    out = np.zeros((len(hexes), n), np.uint64)
    for i, h in enumerate(hexes):
        out[i] = [int(h[16 * w:16 * (w + 1)], 16) for w in range(n)]
    return out


def pdq_of(rgb: np.ndarray) -> str:
    """The PDQ hash (64 hex digits) of an RGB uint8 image array."""
    import pdqhash

    bits, _quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def phash_of(data: bytes) -> str | None:
    """The pHash (16 hex digits) of encoded image bytes, exactly as finalize computes it."""
    facts = image_facts(data)
    return phash_hex(facts[2]) if facts else None


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(*x.shape, 64).sum(-1)


def distances(listed: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Hamming distance from `value` (n words) to every row of `listed` ((m, n) words)."""
    return _popcount(listed ^ value).sum(axis=1, dtype=np.int64)


def listed_in(lists: list[HashList], pdq: str | None, phash: str | None, pdq_distance: int,
              phash_distance: int) -> str | None:
    """The name of the first list that holds a hash within distance of the image's, or None."""
    pdq_words = words([pdq], 4)[0] if pdq else None
    phash_words = words([phash], 1)[0] if phash else None
    for hash_list in lists:
        if pdq_words is not None and len(hash_list.pdq) and \
                distances(hash_list.pdq, pdq_words).min() <= pdq_distance:
            return hash_list.name
        if phash_words is not None and len(hash_list.phash) and \
                distances(hash_list.phash, phash_words).min() <= phash_distance:
            return hash_list.name
    return None
