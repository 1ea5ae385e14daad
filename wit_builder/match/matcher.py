"""The matcher: keep the texts that contain a query-list entry, with the ids of all entries they contain.

The rule is MetaCLIP's substring matching: the text is wrapped in spaces, `, . ; : ? ! `` get a
space on each side, tab/newline/carriage return become spaces, and entry e matches when
" e " occurs in the result (case-sensitive; overlapping occurrences all count). Optional modes
normalise texts and entries alike first: "casefold" lower-cases (Unicode, utf8proc's mapping),
"nfkc" applies NFKC, "nfkc_casefold" both.

How it is fast: the spacing is done in numpy on the batch's concatenated UTF-8 bytes (rows
separated by a 0xFF byte, which UTF-8 never holds, so no span crosses two rows); " e " occurs in
the spaced text exactly when e is the text between two of its spaces, so the matcher hashes those
spans (polynomial prefix hashes), looks them up in a numpy open-addressing table of the entries'
hashes (32 bits of each, 8 bytes a slot; built by one sort), and checks each hit 8 bytes at a
time (exact, no false positives). Spans are grown one space at a time only while their hash is
that of a proper prefix of some entry: a trie walk done level by level for the whole batch. A
byte-level Aho-Corasick over a 500k-entry automaton is memory-bound (a cache miss per byte); this
does ~20 hash lookups per text instead. Unique sorted (row, entry) pairs become a list<int32>
column; a batch with many repeated texts matches each distinct text once. The matcher is built
once per executor process and kept in a module cache; `space` (Arrow kernels) is the same
spacing on a string array.
The spacing and span hashes are spacing.py's; the table and the level-by-level walk are here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import per_process
from wit_builder.coins import ENTRY_IDS
from wit_builder.match import spacing

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: table slot = high bits of key * _MIX
_HALF = np.uint64(32)  # a table key: the high half of hash * _MIX; a row: key << 32 | value
_LOW = np.uint64(2**32 - 1)
_MAX_DISTINCT_SHARE = 0.8  # match() dedups a batch with fewer distinct texts than this share
_SAMPLE = 1000  # (and as many in its first rows)
NO_MATCH = "no_match"


class Matcher:
    """Finds every entry e with " e " in the spaced text (see the module docstring for how)."""

    def __init__(self, entries: list[str], mode: str = "metaclip"):
        self.n_entries, self.mode = len(entries), mode
        if mode != "metaclip":
            entries = spacing.normalize(pa.array(entries, pa.string()), mode).to_pylist()
        n = len(entries)
        data = "\n".join(entries).encode()  # one encode: the newlines give the offsets
        newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        if len(newlines) == max(n - 1, 0):
            ends = np.append(newlines, len(data)) if n else newlines
            starts = np.concatenate([[0], newlines + 1])[:n]
        else:  # an entry holds a newline: encode one by one
            encoded = [entry.encode() for entry in entries]
            ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, n))
            data = b"".join(encoded)
            starts = ends - np.fromiter(map(len, encoded), np.int64, n)
        self._encoded = lambda i: data[starts[i]:ends[i]]
        self.data = np.zeros(len(data) + 8, np.uint8)  # padded for _windows
        self.data[:len(data)] = np.frombuffer(data, np.uint8)
        self.starts, self.sizes = starts, ends - starts
        full, prefixes, words = self._entry_hashes(self.data[:len(data)], starts, ends)
        self.max_words = int(words)
        self.powers, self.inverse = spacing.powers(1 << 16)  # grown by match() to the largest batch seen
        windows = spacing.windows(self.data)
        self.head = windows[self.starts]  # the first 8 bytes of each entry

        # Patterns are entries; entries equal to an earlier one (after normalising) are its
        # aliases: its pattern reports all their ids (CSR: ids[id_offsets[p]:id_offsets[p + 1]]).
        # Different patterns with equal table keys (the table keeps 32 bits of each hash: a few
        # dozen in 500k entries) chain through `next`.
        for hashes in (full, prefixes):  # to table keys, in place (see _build_table)
            hashes *= _MIX
            hashes >>= _HALF
        self.next = np.full(n, -1, np.int32)
        sorted_full = np.sort(full)
        heads = np.ones(n, bool)
        rep = np.arange(n)
        self.one_id = True  # no aliases: a pattern's id is the pattern
        shared = sorted_full[1:][sorted_full[1:] == sorted_full[:-1]]
        if len(shared):
            groups: dict[int, list[int]] = {}
            for i in np.flatnonzero(np.isin(full, shared)):
                groups.setdefault(int(full[i]), []).append(int(i))
            for group in groups.values():  # entry indices in order, all with one table key
                chain: list[int] = []
                for entry in group:
                    equal = next((r for r in chain if self._encoded(r) == self._encoded(entry)), None)
                    if equal is None:
                        if chain:
                            self.next[chain[-1]] = entry
                        chain.append(entry)
                    else:
                        rep[entry], self.one_id = equal, False
                heads[chain[1:]] = False
                heads[group] &= rep[group] == np.asarray(group)
        self.ids = self.id_offsets = None
        if not self.one_id:
            self.ids = np.argsort(rep, kind="stable")
            self.id_offsets = np.zeros(n + 1, np.int64)
            np.cumsum(np.bincount(rep, minlength=n), out=self.id_offsets[1:])

        heads = np.flatnonzero(heads)
        # value of a key: 2 * (pattern + 1) where it is a pattern's key, | 1 where it is the key
        # of a proper prefix of some pattern (the span must grow); < 2**31 since n < 2**30
        self._build_table(np.concatenate([full[heads], prefixes]),
                          np.concatenate([2 * (heads + 1), np.ones(len(prefixes), np.int64)]))
        del self._encoded

    @staticmethod
    def _entry_hashes(data, starts, ends, chunk=1 << 15):
        """Hashes of every entry and of its proper prefixes (up to each of its spaces), and the
        most words in an entry; by chunks of entries, so that the arrays stay in cache (and
        small enough for malloc to reuse: larger ones are fresh pages each time)."""
        full, prefixes, words = np.zeros(len(starts), np.uint64), [], 1
        first, powers, inverse = 0, None, None
        while first < len(starts):
            last = int(np.searchsorted(ends, ends[first] + chunk, side="right"))
            last = max(last, first + 1)
            lo, hi = int(starts[first]), int(ends[last - 1])
            if powers is None or len(powers) <= hi - lo:
                powers, inverse = spacing.powers(max(hi - lo + 1, chunk + 1))
            part = data[lo:hi]
            prefix = spacing.prefix_hashes(part, powers)
            begin, end = starts[first:last] - lo, ends[first:last] - lo
            full[first:last] = (prefix[end] - prefix[begin]) * inverse[begin]
            inner = np.flatnonzero(part == 32)
            if len(inner):
                owner = np.cumsum(np.bincount(begin[1:], minlength=hi - lo))[inner]
                words = max(words, int(np.bincount(owner).max()) + 1)
                begin = begin[owner]
                prefixes.append((prefix[inner] - prefix[begin]) * inverse[begin])
            first = last
        prefixes = np.concatenate(prefixes) if prefixes else np.zeros(0, np.uint64)
        return full, prefixes, words if len(starts) else 0

    def _build_table(self, keys: np.ndarray, values: np.ndarray):
        """The open-addressing table (linear probing, load factor < 1/3) of keys (the high 32 bits
        of hash * _MIX, which hold the home slot), values of equal keys OR-ed together. A row is
        key << 32 | value in one uint64, 0 when empty (values are > 0): a probe reads 8 bytes. A
        span with an entry's key but another hash is harmless: the bytes of a hit are checked,
        and a wrong "grow" only costs a lookup. Keys go in in order (so in the order of their
        home slot), each at max(home, previous key's slot + 1): a running maximum, no probing
        rounds; and the table is sorted, so a probe stops at the first larger key, not only at an
        empty row (half the rounds). Probes never wrap around: the table runs past 2**bits until
        after its last key. Works in place where it can (`keys` too): a 500k-entry build is bound
        by first touches of memory."""
        rows = keys
        rows <<= _HALF
        rows |= values.view(np.uint64)
        rows.sort()  # by key, so by home slot
        keys = rows >> _HALF
        first = np.flatnonzero(np.append(True, keys[1:] != keys[:-1])[:len(keys)])
        rows &= _LOW
        values, keys = np.bitwise_or.reduceat(rows, first) if len(first) else rows, keys[first]
        bits = min(max((3 * len(keys)).bit_length(), 4), 32)
        self.shift = np.uint64(32 - bits)
        slot = (keys >> self.shift).view(np.int64)
        rank = np.arange(len(keys))
        slot -= rank
        np.maximum.accumulate(slot, out=slot)
        slot += rank
        self.table = np.zeros(max(1 << bits, int(slot[-1]) + 1 if len(slot) else 0) + 1, np.uint64)
        keys <<= _HALF
        keys |= values
        self.table[slot] = keys

    def _find(self, hashes: np.ndarray) -> np.ndarray:
        """The table's value for each hash, 0 where its key is not in the table."""
        keys = hashes * _MIX
        keys >>= _HALF
        slot = (keys >> self.shift).view(np.int64)
        row = self.table[slot]
        todo = np.flatnonzero(((row >> _HALF) < keys) & (row != 0))
        while len(todo):
            slot[todo] += 1
            probed = self.table[slot[todo]]
            row[todo] = probed
            todo = todo[((probed >> _HALF) < keys[todo]) & (probed != 0)]
        row[(row >> _HALF) != keys] = 0  # stopped at a larger key (or an empty row)
        row &= _LOW
        return row.view(np.int64)

    def _verify(self, windows, begin, pattern, size) -> np.ndarray:
        """Whether the text bytes at `begin` equal each pattern (of equal size), 8 bytes at a time."""
        ok = ((windows[begin] ^ self.head[pattern]) & spacing.TAIL[np.minimum(size, 8)]) == 0
        longer = np.flatnonzero(ok & (size > 8))
        done = 8
        pattern_windows = spacing.windows(self.data)
        while len(longer):
            b, p, rest = begin[longer] + done, self.starts[pattern[longer]] + done, size[longer] - done
            same = ((windows[b] ^ pattern_windows[p]) & spacing.TAIL[np.minimum(rest, 8)]) == 0
            ok[longer[~same]] = False
            longer = longer[same & (rest > 8)]
            done += 8
        return ok

    def _lookup(self, spaced: np.ndarray, n: int):
        """(token, pattern) for every span between spaces that equals a pattern: the span's first
        token (the text between two spaces) and the pattern."""
        text = spaced[:n]
        space_pos = np.flatnonzero(text == 32)
        if len(self.powers) <= n:  # kept across batches: computed once per size
            self.powers, self.inverse = spacing.powers(2 * n + 1)
        prefix = spacing.prefix_hashes(text, self.powers)
        windows = spacing.windows(spaced)
        begin = space_pos[:-1] + 1
        # the hash of the span from token t to the space at `end`: (prefix[end] - base[t]) * scale[t]
        base, scale = prefix[begin], self.inverse[begin]
        first = None  # the first tokens of the spans still growing (None: every token)
        found_tokens, found_patterns = [], []
        for words in range(1, self.max_words + 1):
            if first is None:
                end = space_pos[1:]
                key = prefix[end]
                key -= base
                key *= scale
            else:
                first = first[first + words < len(space_pos)]
                if not len(first):
                    break
                end = space_pos[first + words]
                key = prefix[end]
                key -= base[first]
                key *= scale[first]
            value = self._find(key)
            hit = np.flatnonzero(value > 1)
            tokens, pattern = hit if first is None else first[hit], (value[hit] >> 1) - 1
            while len(hit):
                start = begin[tokens]
                size = end[hit] - start
                ok = self.sizes[pattern] == size
                ok[ok] = self._verify(windows, start[ok], pattern[ok], size[ok])
                found_tokens.append(tokens[ok])
                found_patterns.append(pattern[ok])
                chained = np.flatnonzero(~ok)  # another pattern with the same hash?
                chained = chained[self.next[pattern[chained]] >= 0]
                hit, tokens, pattern = hit[chained], tokens[chained], self.next[pattern[chained]]
            grow = np.flatnonzero((value & 1) != 0)  # only spans that begin a longer pattern grow
            first = grow if first is None else first[grow]
        return (np.concatenate(found_tokens) if found_tokens else np.zeros(0, np.int64),
                np.concatenate(found_patterns) if found_patterns else np.zeros(0, np.int64), space_pos)

    def match(self, texts: pa.Array) -> pa.ListArray:
        """entry_ids (sorted, unique) for each text; empty list when none matches (null too)."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if texts.null_count:
            texts = texts.fill_null("")
        # Alt texts repeat ("logo", "image", one caption on every page of a site): a batch with
        # many repeats matches its distinct texts once each, and every row gets its text's list.
        # Hashing all texts costs ~5% of matching them, so their first rows are looked at first.
        sample = texts.slice(0, _SAMPLE)
        if pc.count_distinct(sample).as_py() < _MAX_DISTINCT_SHARE * len(sample):
            coded = texts.dictionary_encode()
            if len(coded.dictionary) < _MAX_DISTINCT_SHARE * len(texts):
                return self._match_rows(coded.dictionary).take(coded.indices)
        return self._match_rows(texts)

    def _match_rows(self, texts: pa.Array) -> pa.ListArray:
        """`match` of a string array without nulls, text by text."""
        texts = spacing.normalize(texts, self.mode)
        n = len(texts)
        offsets, data = spacing.arrow_bytes(texts)
        spaced, row_starts = spacing.spaced_bytes(data, offsets)
        tokens, pattern, space_pos = self._lookup(spaced, len(spaced) - 8)
        # the row of a token: rows before its opening space
        rows = np.searchsorted(row_starts, space_pos[tokens], side="right") - 1
        if self.one_id:
            ids = pattern
        else:
            owner, slot = spacing.expand(self.id_offsets[pattern], self.id_offsets[pattern + 1])
            rows, ids = rows[owner], self.ids[slot]
        pairs = np.sort(rows * max(self.n_entries, 1) + ids)
        if len(pairs):
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
        rows, ids = np.divmod(pairs, max(self.n_entries, 1))
        list_offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=list_offsets[1:])
        return pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(ids.astype(np.int32)))


def get_matcher(key: tuple[str, str], entries) -> Matcher:
    """This process's matcher for list `key` = (fingerprint, mode); `entries()` loads the list."""
    # one list at a time: an automaton is hundreds of MB
    return per_process.get("matcher", key, lambda: Matcher(entries(), key[1]), keep=1)


def annotate(batch: pa.RecordBatch, matcher: Matcher) -> pa.RecordBatch:
    """Append entry_ids and drop_reason ("no_match" where the list is empty)."""
    ids = matcher.match(batch.column("text"))
    reason = pc.if_else(pc.equal(pc.list_value_length(ids), 0), NO_MATCH, pa.scalar(None, pa.string()))
    return pa.RecordBatch.from_arrays(
        batch.columns + [ids, reason], names=batch.schema.names + [ENTRY_IDS, "drop_reason"])
