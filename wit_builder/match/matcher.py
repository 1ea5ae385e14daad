"""The matcher: keep the texts that contain a query-list entry, with the ids of all entries they contain.

The rule is MetaCLIP's substring matching: the text is wrapped in spaces, `, . ; : ? ! `` get a
space on each side, tab/newline/carriage return become spaces, and entry e matches when
" e " occurs in the result (case-sensitive; overlapping occurrences all count). Optional modes
normalise texts and entries alike first: "casefold" lower-cases (Unicode, utf8proc's mapping),
"nfkc" applies NFKC, "nfkc_casefold" both.

How it is fast: the spacing is done by Arrow kernels on a whole batch; " e " occurs in the
spaced text exactly when e is the text between two of its spaces, so the matcher hashes those
spans over the batch's concatenated UTF-8 bytes (numpy, polynomial prefix hashes), looks them up
in one hash table of the entries, and checks each hit byte by byte (exact, no false positives).
Spans are grown one space at a time only while they are a proper prefix of some entry: a trie
walk done level by level for the whole batch. A byte-level Aho-Corasick over a 500k-entry
automaton is memory-bound (a cache miss per byte); this does ~20 hash lookups per text instead.
Spans never cross a row boundary, and unique sorted (row, entry) pairs become a list<int32>
column. The matcher is built once per executor process and kept in a module cache.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


WRAPPED = (",", ".", ";", ":", "?", "!", "`")
SPACED = ("\t", "\n", "\r")
_WRAPPED_RE = "([" + re.escape("".join(WRAPPED)) + "])"
_SPACED_RE = "[" + "".join(SPACED) + "]"
ENTRY_IDS = "entry_ids"
NO_MATCH = "no_match"


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


_P = 0x100000001B3  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**k and P**-k modulo 2**64 for k < n (numpy's uint64 arithmetic wraps)."""
    powers, inverse = np.full(n, _P, np.uint64), np.full(n, _P_INV, np.uint64)
    powers[:1], inverse[:1] = 1, 1
    return np.cumprod(powers), np.cumprod(inverse)


def _prefix_hashes(data: np.ndarray, powers, inverse) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial prefix hashes of a byte array, so that any slice's hash is one subtraction and
    one multiplication away (`_span_hash`); `powers`/`inverse` from `_powers(>= len(data) + 1)`."""
    prefix = np.zeros(len(data) + 1, np.uint64)
    np.cumsum(data.astype(np.uint64) * powers[:len(data)], out=prefix[1:])
    return prefix, inverse


def _span_hash(hashes, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    prefix, inverse = hashes
    return (prefix[end] - prefix[begin]) * inverse[begin]


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo, hi): (index of the range, each position in it), flattened."""
    counts = hi - lo
    owner = np.repeat(np.arange(len(lo)), counts)
    return owner, lo[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)


class Matcher:
    """Finds every entry e with " e " in the spaced text (see the module docstring for how)."""

    def __init__(self, entries: list[str], mode: str = "metaclip"):
        normalized = normalize(pa.array(entries, pa.string()), mode).to_pylist()
        ids_of: dict[bytes, list[int]] = {}  # entries equal after normalising share one pattern
        for entry_id, entry in enumerate(normalized):
            ids_of.setdefault(entry.encode(), []).append(entry_id)
        patterns = list(ids_of)
        self.n_entries, self.mode = len(entries), mode
        # pattern -> entry ids as CSR (almost always one id per pattern)
        lengths = np.fromiter((len(v) for v in ids_of.values()), np.int64, len(patterns))
        self.id_offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.fromiter(itertools.chain.from_iterable(ids_of.values()), np.int64,
                               int(self.id_offsets[-1]))

        self.data = np.frombuffer(b"".join(patterns), np.uint8)
        sizes = np.fromiter(map(len, patterns), np.int64, len(patterns))
        self.starts, self.sizes = np.cumsum(sizes) - sizes, sizes
        hashes = _prefix_hashes(self.data, *_powers(len(self.data) + 1))
        self.powers = _powers(1)  # grown by match() to the largest batch seen
        full = _span_hash(hashes, self.starts, self.starts + sizes)
        self.by_hash = np.argsort(full, kind="stable")  # pattern indices ordered by hash
        inner = np.flatnonzero(self.data == 32)  # a proper prefix ends at each inner space
        owner = np.searchsorted(self.starts, inner, side="right") - 1
        prefixes = _span_hash(hashes, self.starts[owner], inner)
        # one hash table: span hash -> (patterns with that hash: by_hash[lo:hi], begins a longer one?)
        keys, first, counts = np.unique(full[self.by_hash], return_index=True, return_counts=True)
        keys = np.concatenate([keys, np.setdiff1d(prefixes, keys)])
        self.table = pd.Index(keys)
        self.table.get_indexer(keys[:1])  # builds the hash table now, not in the first batch
        self.lo = np.concatenate([first, np.zeros(len(keys) - len(first), np.int64)])
        self.hi = self.lo + np.concatenate([counts, np.zeros(len(keys) - len(first), np.int64)])
        self.is_prefix = np.isin(keys, prefixes)
        words = np.bincount(owner, minlength=len(patterns)) + 1 if len(patterns) else np.zeros(0)
        self.max_words = int(words.max()) if len(patterns) else 0

    def _lookup(self, data, hashes, space_pos, space_row):
        """(row, pattern) for every span between spaces that equals a pattern."""
        found_rows, found_patterns = [], []
        first = np.arange(len(space_pos) - 1)
        for words in range(1, self.max_words + 1):
            last = first + words
            ok = last < len(space_pos)
            first, last = first[ok], last[ok]
            same_row = space_row[first] == space_row[last]
            first, last = first[same_row], last[same_row]
            if not len(first):
                break
            begin, end = space_pos[first] + 1, space_pos[last]
            h = _span_hash(hashes, begin, end)
            key = self.table.get_indexer(h)
            known = key >= 0
            first, begin, end, key = first[known], begin[known], end[known], key[known]
            span, slot = _expand(self.lo[key], self.hi[key])
            pattern = self.by_hash[slot]
            same = self.sizes[pattern] == end[span] - begin[span]
            span, pattern = span[same], pattern[same]
            n = self.sizes[pattern]
            pos, at = _expand(np.zeros(len(n), np.int64), n)
            equal = data[begin[span][pos] + at] == self.data[self.starts[pattern][pos] + at]
            wrong = np.bincount(pos[~equal], minlength=len(span)) > 0
            found_rows.append(space_row[first[span[~wrong]]])
            found_patterns.append(pattern[~wrong])
            first = first[self.is_prefix[key]]  # extend only spans that begin a longer entry
        return np.concatenate(found_rows or [[]]).astype(np.int64), \
            np.concatenate(found_patterns or [[]]).astype(np.int64)

    def match(self, texts: pa.Array) -> pa.ListArray:
        """entry_ids (sorted, unique) for each text; empty list when none matches."""
        spaced = space(normalize(texts, self.mode))
        if isinstance(spaced, pa.ChunkedArray):
            spaced = spaced.combine_chunks()
        n = len(spaced)
        kind = np.int64 if pa.types.is_large_string(spaced.type) else np.int32
        _, offsets_buf, data_buf = spaced.buffers()
        offsets = np.frombuffer(offsets_buf, kind)[spaced.offset:spaced.offset + n + 1].astype(np.int64)
        start = int(offsets[0])
        data = np.frombuffer(data_buf, np.uint8, int(offsets[-1]) - start, start) if n else np.zeros(0, np.uint8)
        offsets -= start
        space_pos = np.flatnonzero(data == 32)
        space_row = np.searchsorted(offsets, space_pos, side="right") - 1
        if len(self.powers[0]) <= len(data):  # kept across batches: computed once per size
            self.powers = _powers(2 * len(data) + 1)
        rows, pattern = self._lookup(data, _prefix_hashes(data, *self.powers), space_pos, space_row)
        owner, slot = _expand(self.id_offsets[pattern], self.id_offsets[pattern + 1])
        rows, ids = rows[owner], self.ids[slot]
        pairs = np.sort(rows * self.n_entries + ids)
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs
        rows, ids = np.divmod(pairs, self.n_entries)
        list_offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=list_offsets[1:])
        return pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(ids.astype(np.int32)))


_MATCHERS: dict[tuple[str, str], Matcher] = {}


def get_matcher(key: tuple[str, str], entries) -> Matcher:
    """This process's matcher for list `key` = (fingerprint, mode); `entries()` loads the list."""
    if key not in _MATCHERS:
        _MATCHERS.clear()  # one list at a time: an automaton is hundreds of MB
        _MATCHERS[key] = Matcher(entries(), key[1])
    return _MATCHERS[key]


def annotate(batch: pa.RecordBatch, matcher: Matcher) -> pa.RecordBatch:
    """Append entry_ids and drop_reason ("no_match" where the list is empty)."""
    ids = matcher.match(batch.column("text"))
    reason = pc.if_else(pc.equal(pc.list_value_length(ids), 0), NO_MATCH, pa.scalar(None, pa.string()))
    return pa.RecordBatch.from_arrays(
        batch.columns + [ids, reason], names=batch.schema.names + [ENTRY_IDS, "drop_reason"])
