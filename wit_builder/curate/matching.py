"""`match`: keep the texts that contain a query-list entry, with the ids of all entries they contain.

The rule is MetaCLIP's substring matching: the text is wrapped in spaces, `, . ; : ? ! `` get a
space on each side, tab/newline/carriage return become spaces, and entry e matches when
" e " occurs in the result (case-sensitive; overlapping occurrences all count). Optional modes
normalise texts and entries alike first: "casefold" lower-cases (Unicode, utf8proc's mapping),
"nfkc" applies NFKC, "nfkc_casefold" both.

How it is fast: the spacing is done by Arrow kernels on a whole batch, then ONE native
Aho-Corasick search runs over the batch's concatenated UTF-8 bytes; match offsets are mapped back
to rows with the Arrow offsets (a match crossing a row boundary is thrown away), and the unique
sorted (row, entry) pairs become a list<int32> column, all in numpy. Byte-level matching equals
character-level matching here because UTF-8 is self-synchronising and patterns start and end with
an ASCII space. The automaton is built once per executor process and kept in a module cache.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import stages, storage
from wit_builder.errors import UserError
from wit_builder.queries.listfile import fingerprint, load_queries

WRAPPED = (",", ".", ";", ":", "?", "!", "`")
SPACED = ("\t", "\n", "\r")
ENTRY_IDS = "entry_ids"
NO_MATCH = "no_match"


def normalize(texts: pa.Array, mode: str) -> pa.Array:
    if mode in ("nfkc", "nfkc_casefold"):
        texts = pc.utf8_normalize(texts, form="NFKC")
    if mode in ("casefold", "nfkc_casefold"):
        texts = pc.utf8_lower(texts)
    return texts


def space(texts: pa.Array) -> pa.Array:
    """MetaCLIP's `spacing()` on a whole string array."""
    blank = pa.scalar(" ", texts.type)
    texts = pc.binary_join_element_wise(blank, texts.fill_null(""), blank, pa.scalar("", texts.type))
    for char in WRAPPED:
        texts = pc.replace_substring(texts, char, f" {char} ")
    for char in SPACED:
        texts = pc.replace_substring(texts, char, " ")
    return texts


class Matcher:
    """An Aho-Corasick automaton over the patterns " entry " of one query list."""

    def __init__(self, entries: list[str], mode: str = "metaclip"):
        import ahocorasick_rs

        normalized = normalize(pa.array(entries, pa.string()), mode).to_pylist()
        ids_of: dict[bytes, list[int]] = {}  # entries equal after normalising share one pattern
        for entry_id, entry in enumerate(normalized):
            ids_of.setdefault(f" {entry} ".encode(), []).append(entry_id)
        patterns = list(ids_of)
        self.automaton = ahocorasick_rs.BytesAhoCorasick(
            patterns, matchkind=ahocorasick_rs.MatchKind.Standard)
        self.n_entries = len(entries)
        self.mode = mode
        # pattern -> entry ids as CSR (almost always one id per pattern)
        lengths = np.fromiter((len(v) for v in ids_of.values()), np.int64, len(patterns))
        self.id_offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.fromiter(itertools.chain.from_iterable(ids_of.values()), np.int64,
                               int(self.id_offsets[-1]))
        self.one_id_each = bool((lengths == 1).all())

    def match(self, texts: pa.Array) -> pa.ListArray:
        """entry_ids (sorted, unique) for each text; empty list when none matches."""
        spaced = space(normalize(texts, self.mode))
        if isinstance(spaced, pa.ChunkedArray):
            spaced = spaced.combine_chunks()
        n = len(spaced)
        kind = np.int64 if pa.types.is_large_string(spaced.type) else np.int32
        _, offsets_buf, data_buf = spaced.buffers()
        offsets = np.frombuffer(offsets_buf, kind)[spaced.offset:spaced.offset + n + 1].astype(np.int64)
        start, stop = int(offsets[0]), int(offsets[-1])
        found = self.automaton.find_matches_as_indexes(
            memoryview(data_buf).cast("B")[start:stop], overlapping=True) if stop > start else []
        flat = np.fromiter(itertools.chain.from_iterable(found), np.int64, 3 * len(found))
        pattern, begin, end = flat.reshape(-1, 3).T
        begin = begin + start
        rows = np.searchsorted(offsets, begin, side="right") - 1
        inside = end + start <= offsets[rows + 1]  # a match may not run into the next text
        pattern, rows = pattern[inside], rows[inside]
        if self.one_id_each:
            ids = self.ids[pattern]
        else:
            counts = self.id_offsets[pattern + 1] - self.id_offsets[pattern]
            rows = np.repeat(rows, counts)
            first = np.repeat(self.id_offsets[pattern] - np.cumsum(counts) + counts, counts)
            ids = self.ids[first + np.arange(len(first))]
        pairs = np.unique(rows * self.n_entries + ids)
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


# --- the stage ----------------------------------------------------------------------------------

def queries_path(cfg) -> str:
    path = cfg.match.queries
    if not path:
        raise UserError("no query list: set [match] queries or give --queries FILE (build one with "
                        "`wit-builder queries build`, or use query_lists/wit-queries-en.json.gz)")
    if not storage.exists(path):
        raise UserError(f"query list not found: {path} (give an existing file to --queries)")
    return path


def extra_inputs(cfg) -> list[str]:
    return [queries_path(cfg)]


def read_inputs(spark, inputs: list[str]):
    """Rows of finished stage outputs and/or plain Parquet files, folders or globs."""
    paths = []
    for path in inputs:
        if storage.exists(storage.join(path, stages.MANIFEST)):
            stages.require_complete(path)
            paths.append(storage.join(path, "*.parquet"))
        else:
            paths += storage.list_files(path, suffixes=(".parquet",))
    if not paths:
        raise UserError(f"no Parquet rows in {', '.join(inputs)} (give a stage output or Parquet files)")
    return spark.read.parquet(*[storage.spark_path(p) for p in paths])


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

    path = queries_path(cfg)
    entries = load_queries(path)
    key = (fingerprint(entries), cfg.match.normalize)
    df = read_inputs(spark, inputs)
    if "text" not in df.columns:
        raise UserError(f"{', '.join(inputs)} has no `text` column (give the output of extract)")
    df = df.drop(ENTRY_IDS, "drop_reason")
    shipped = spark.sparkContext.broadcast(entries)  # sent once; read only where not cached
    schema = StructType(df.schema.fields + [StructField(ENTRY_IDS, ArrayType(IntegerType())),
                                            StructField("drop_reason", StringType())])

    def match_batches(batches):
        matcher = get_matcher(key, lambda: shipped.value)
        for batch in batches:
            yield annotate(batch, matcher)

    result = stages.write_with_drops(df.mapInArrow(match_batches, schema), out_dir)
    shipped.destroy()
    result.extra = {"queries": {"path": path, "entries": len(entries), "fingerprint": key[0]},
                    "normalize": cfg.match.normalize}
    return result
