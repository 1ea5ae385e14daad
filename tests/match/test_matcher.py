"""Matching: MetaCLIP's rule, exactly, text by text, on tricky cases and on the real candidates."""

import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from matching_reference import (brute_force_match, metaclip_automaton, metaclip_match,  # noqa: E402
                                metaclip_spacing)

from wit_builder.match import matcher as matching  # noqa: E402
from wit_builder.match import spacing  # noqa: E402
from wit_builder.queries.listfile import load_queries  # noqa: E402

COMMITTED = str(Path(__file__).resolve().parents[2] / "query_lists" / "wit-queries-en.json.gz")

TRICKY_TEXTS = [
    "a b a b", "", None, "dog.", "the dog,cat", "St. Louis", "x", "y", "Ünïcode a", "tab\tdog\nnew\rline",
    "Ruby-throated  hummingbird", "why?dog!", "`quoted`", "ﬁsh and Chips", "ǅungla", "İstanbul",
    "CAT cat Cat", "New York City at night", "a CAT", "a  b", "日本 の 犬", "emoji 🐶 dog 🐶",
]
TRICKY_ENTRIES = ["a", "a b", "dog", "St. Louis", "St .  Louis", "x  y", "b", "line", "🐶", "fish",
                  "cat", "Cat", "New York", "York City", "New York City", "犬", "hummingbird", "",
                  "istanbul", "dǆungla", "?", "`"]


def test_spacing_equals_metaclip():
    texts = [t for t in TRICKY_TEXTS if t is not None]
    assert spacing.space(pa.array(texts)).to_pylist() == [metaclip_spacing(t) for t in texts]
    assert spacing.space(pa.array([None], pa.string())).to_pylist() == ["  "]


def test_tricky_cases_equal_brute_force_and_metaclip():
    got = matching.Matcher(TRICKY_ENTRIES).match(pa.array(TRICKY_TEXTS)).to_pylist()
    assert got == brute_force_match(TRICKY_TEXTS, TRICKY_ENTRIES)
    automaton = metaclip_automaton(TRICKY_ENTRIES)
    assert got == [sorted(metaclip_match(automaton, t or "")) for t in TRICKY_TEXTS]
    assert got[0] == [0, 1, 6] and got[3] == [2, 17] and got[5] == [4, 17] and got[17] == [12, 13, 14]
    assert got[6] == got[7] == []  # " x  y " must not match across the two rows "x" and "y"
    assert got[3][-1] == TRICKY_ENTRIES.index("")  # " dog .  " holds "  ", the empty entry


@pytest.mark.parametrize("mode, python", [
    ("casefold", str.lower),
    ("nfkc", lambda s: unicodedata.normalize("NFKC", s)),
    ("nfkc_casefold", lambda s: unicodedata.normalize("NFKC", s).lower()),
])
def test_normalisation_modes(mode, python):
    texts = [t for t in TRICKY_TEXTS if t != "İstanbul"]  # utf8proc and Python lower İ differently
    got = matching.Matcher(TRICKY_ENTRIES, mode).match(pa.array(texts)).to_pylist()
    assert got == brute_force_match(texts, TRICKY_ENTRIES, python)
    by_text = dict(zip(texts, got))
    assert (TRICKY_ENTRIES.index("cat") in by_text["a CAT"]) == mode.endswith("casefold")
    assert (TRICKY_ENTRIES.index("fish") in by_text["ﬁsh and Chips"]) == mode.startswith("nfkc")


def test_duplicate_entries_all_reported():
    entries = ["dog", "cat", "dog", "Dog"]
    assert matching.Matcher(entries).match(pa.array(["a dog"])).to_pylist() == [[0, 2]]
    assert matching.Matcher(entries, "casefold").match(pa.array(["a DOG", "x"])).to_pylist() == [[0, 2, 3], []]


def test_sliced_large_and_chunked_inputs():
    m = matching.Matcher(TRICKY_ENTRIES)
    full = m.match(pa.array(TRICKY_TEXTS)).to_pylist()
    assert m.match(pa.array(TRICKY_TEXTS).slice(3, 9)).to_pylist() == full[3:12]
    assert m.match(pa.array(TRICKY_TEXTS, pa.large_string())).to_pylist() == full
    chunked = pa.chunked_array([TRICKY_TEXTS[:4], TRICKY_TEXTS[4:]], pa.string())
    assert m.match(chunked).to_pylist() == full
    assert m.match(pa.array([], pa.string())).to_pylist() == []
    assert m.match(pa.array(TRICKY_TEXTS)).type == pa.list_(pa.int32())


def test_annotate_marks_no_match():
    batch = pa.RecordBatch.from_pydict({"uid": ["1", "2"], "text": ["a dog", "nothing here"]})
    out = matching.annotate(batch, matching.Matcher(["dog"]))
    assert out.column("entry_ids").to_pylist() == [[0], []]
    assert out.column("drop_reason").to_pylist() == [None, "no_match"]


def test_matcher_is_cached_per_process():
    calls = []
    load = lambda: calls.append(1) or ["dog"]  # noqa: E731
    first = matching.get_matcher(("fp-a", "metaclip"), load)
    assert matching.get_matcher(("fp-a", "metaclip"), load) is first and len(calls) == 1
    assert matching.get_matcher(("fp-b", "metaclip"), load) is not first and len(calls) == 2


def _real_texts(shared_data) -> list[str]:
    cands = shared_data / "candidates"
    texts = [json.loads(line)["text"] for line in open(cands / "alt_text_pairs.jsonl", encoding="utf-8")]
    return texts + pq.read_table(cands / "img2dataset_10k.parquet").column("TEXT").to_pylist()


@pytest.fixture(scope="module")
def committed_list():
    return load_queries(COMMITTED)


def test_real_candidates_equal_brute_force_text_by_text(shared_data, committed_list):
    texts = _real_texts(shared_data)
    assert len(texts) == 13_073
    got = matching.Matcher(committed_list).match(pa.array(texts)).to_pylist()
    expected = brute_force_match(texts, committed_list)
    mismatches = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not mismatches, [(texts[i], got[i], expected[i]) for i in mismatches[:5]]
    matched = sum(bool(ids) for ids in got)
    assert 0.5 * len(texts) < matched < len(texts)  # most alt texts contain an English word


def test_real_candidates_equal_metaclip_casefold_too(shared_data, committed_list):
    texts = _real_texts(shared_data)[:3000]
    automaton = metaclip_automaton(committed_list)
    got = matching.Matcher(committed_list).match(pa.array(texts)).to_pylist()
    assert got == [sorted(metaclip_match(automaton, t or "")) for t in texts]
    folded = matching.Matcher(committed_list, "casefold").match(pa.array(texts)).to_pylist()
    lower = lambda items: pc.utf8_lower(pa.array(items, pa.string())).to_pylist()  # noqa: E731
    assert folded == brute_force_match(lower(texts), lower(committed_list))
    assert sum(map(len, folded)) > sum(map(len, got))


def test_entries_with_newlines_and_empty_ones_equal_brute_force():
    # "\n" in an entry makes the build encode entry by entry; it can never match (texts' newlines
    # become spaces), but the entries around it must
    entries = ["a\nb", "", "dog", "", "a b", "dog", "b"]
    texts = ["a b", "a\nb", "dog  b", "", None]
    got = matching.Matcher(entries).match(pa.array(texts)).to_pylist()
    assert got == brute_force_match(texts, entries)
    assert got[1] == [4, 6]  # "a\nb" is spaced to " a b "


@pytest.mark.parametrize("mode", ["metaclip", "casefold"])
def test_repeated_texts_match_as_text_by_text(mode):
    # enough repeats (nulls and empty strings among them) that match() matches each distinct text
    # once and copies its list to the repeats
    texts = [TRICKY_TEXTS[(7 * i) % len(TRICKY_TEXTS)] for i in range(400)] + ["CAT", "", None]
    assert len(set(texts)) < matching._MAX_DISTINCT_SHARE * min(len(texts), matching._SAMPLE)
    m = matching.Matcher(TRICKY_ENTRIES, mode)
    got = m.match(pa.chunked_array([texts[:150], texts[150:]], pa.string()))
    assert got.type == pa.list_(pa.int32())
    assert got.to_pylist() == [m.match(pa.array([t], pa.string())).to_pylist()[0] for t in texts]
    if mode == "metaclip":
        assert got.to_pylist() == brute_force_match(texts, TRICKY_ENTRIES)


def test_patterns_sharing_a_table_key_are_told_apart():
    # the table keeps 32 bits of each entry's hash: among 300k entries some share one (a chain)
    letters = np.random.default_rng(0).integers(97, 123, (300_000, 10), np.uint8)
    entries = [row.tobytes().decode() for row in letters]
    m = matching.Matcher(entries)
    chained = np.flatnonzero(m.next >= 0)
    assert len(chained)
    members = sorted(set(chained) | set(m.next[chained]))
    texts = [f"a {entries[i]}." for i in members] + [" ".join(entries[i] for i in members)]
    assert m.match(pa.array(texts)).to_pylist() == [[i] for i in members] + [members]
