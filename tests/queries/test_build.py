"""Query list: each source, the merge (priority, cap, determinism), the file formats, the CLI."""

import gzip
import json
import math
from pathlib import Path

import pytest

from wit_builder.cli import main
from wit_builder.settings import QueriesConfig
from wit_builder.errors import UserError
from wit_builder.queries import bigrams, build, listfile, titles, wikipedia, wordnet

LISTS = Path(__file__).resolve().parents[2] / "query_lists"
COMMITTED = str(LISTS / "wit-queries-en.json.gz")


def test_unigrams_threshold_on_the_real_counts(shared_data):
    path = str(shared_data / "query_sources/wikiwords-0.5/wikiwords_counts.tsv.gz")
    everything, info = wikipedia.load(path, 100)
    assert len(everything) == 105_966 and info["read"] == 105_966  # smallest count is 109
    common, _ = wikipedia.load(path, 1000)
    assert len(common) == 51_778 and min(common.values()) >= 1000 and common["the"] == 143_524_480


def test_unigrams_from_the_installed_package_equal_the_file(shared_data):
    from_package, info = wikipedia.load("", 10_000)
    from_file, _ = wikipedia.load(str(shared_data / "query_sources/wikiwords-0.5/wikiwords_counts.tsv.gz"), 10_000)
    assert from_package == from_file and info["package"] == "wikiwords==0.5"


def test_bigram_pmi_by_hand(tmp_path):
    corpus = tmp_path / "c.txt"
    # "New York" 3 times; "York, the" spans a comma and must not count as a bigram
    corpus.write_text("New York is big. New York, the city. I like New York\nthe cat sat\n")
    uni, bi = bigrams.count(bigrams.read_corpus(str(corpus)))
    assert bi[("New", "York")] == 3 and ("York", "the") not in bi and uni["York"] == 3
    kept, info = bigrams.load(str(corpus), min_count=2, min_pmi=0.0)
    n = sum(uni.values())
    assert kept == {"New York": round(math.log(3 * n / (3 * 3)), 6)} and info["tokens"] == n


def test_bigram_corpus_formats(tmp_path):
    doc = {"A": {"extract": "red fox jumps"}, "B": {"text": "red fox sleeps"}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as f:
        f.write('{"text": "red fox jumps"}\n"red fox sleeps"\n')
    for name in ("s.json", "s.jsonl.gz"):
        assert list(bigrams.read_corpus(str(tmp_path / name))) == ["red fox jumps", "red fox sleeps"]
    kept, _ = bigrams.load(str(tmp_path / "s.json"), min_count=2, min_pmi=0.5)
    assert list(kept) == ["red fox"]


def test_titles_lower_case_duplicates_and_views(tmp_path):
    (tmp_path / "cased.json").write_text(json.dumps({"Paris": "Geography", "New York City": "x"}))
    (tmp_path / "lower.txt").write_text("paris\nnew york city\neiffel tower\n")
    (tmp_path / "views.tsv").write_text("Rome\t500\nBari\t5\n")
    kept, info = titles.load([str(tmp_path / n) for n in ("cased.json", "lower.txt", "views.tsv")], 100)
    assert set(kept) == {"Paris", "New York City", "eiffel tower", "Rome"}
    assert kept["Rome"] == 500
    assert info["files"][1]["lower_case_duplicates"] == 2 and info["files"][2]["below_min_views"] == 1


def test_wordnet_first_vs_all_lemmas(shared_data, monkeypatch):
    import nltk
    from nltk.corpus import wordnet as wn

    monkeypatch.setattr(nltk.data, "path", [str(shared_data / "query_sources/nltk_data")] + nltk.data.path)
    few = [wn.synset("dog.n.01"), wn.synset("frank.n.02"), wn.synset("einstein.n.01")]
    monkeypatch.setattr(wn, "all_synsets", lambda: iter(few))
    every, info = wordnet.load("all")
    first, _ = wordnet.load("first")
    assert {"dog", "domestic dog", "Canis familiaris", "hot dog", "wiener", "Einstein"} <= set(every)
    assert set(first) == {"dog", "frank", "Einstein"}
    assert info["wordnet_version"] == "3.0" and info["sha256"].startswith("be500190")


def _found(**sources):
    return {name: (scores, {"kept": len(scores)}) for name, scores in sources.items()}


def test_merge_priority_cap_and_sources():
    found = _found(title={"Paris": 0, "cat": 0}, unigram={"cat": 500, "dog": 900, "ant": 900},
                   wordnet={"cat": 2, "hot dog": 1})
    entries, summary = build.merge(found, max_entries=10)
    assert [e["text"] for e in entries] == ["cat", "hot dog", "ant", "dog", "Paris"]
    assert entries[0] == {"id": 0, "text": "cat", "sources": ["wordnet", "unigram", "title"]}
    assert summary["overlaps"] == {"wordnet&unigram": 1, "wordnet&title": 1, "unigram&title": 1}
    assert summary["per_source"]["unigram"]["only_this_source"] == 2
    capped, summary = build.merge(found, max_entries=3)
    assert [e["text"] for e in capped] == ["cat", "hot dog", "ant"] and summary["dropped_by_cap"] == 2


def test_merge_does_not_depend_on_input_order():
    a = _found(unigram={"b": 1, "a": 1, "c": 2})
    b = _found(unigram={"c": 2, "a": 1, "b": 1})
    assert build.merge(a, 10) == build.merge(b, 10)


def _small_config(shared_data, tmp_path) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("We flew to Buenos Aires in May. Buenos Aires is big.\n" * 3 + "the cat sat on the mat\n")
    src = shared_data / "query_sources"
    return ["--set", "queries.wordnet=false", "--unigram-min-count", "20000",
            "--bigram-corpus", str(corpus), "--bigram-min-count", "3", "--bigram-min-pmi", "1",
            "--titles", str(src / "wiki_vital_titles/titles_en-us.json")]


def test_cli_build_is_byte_reproducible_and_readable(shared_data, tmp_path):
    args = _small_config(shared_data, tmp_path)
    assert main(["queries", "build", *args, "--out", str(tmp_path / "a.json.gz")]) == 0
    assert main(["queries", "build", *args, "--out", str(tmp_path / "b.json.gz")]) == 0
    assert main(["queries", "build", *args, "--format", "metaclip", "--out", str(tmp_path / "m.json")]) == 0
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()
    doc = listfile.read_document(str(tmp_path / "a.json.gz"))
    texts = listfile.load_queries(str(tmp_path / "a.json.gz"))
    assert texts == listfile.load_queries(str(tmp_path / "m.json"))
    assert doc["params"]["unigram_min_count"] == 20000 and "wordnet" not in doc["sources"]
    assert len(texts) == len(set(texts)) == doc["summary"]["entries"]
    assert {"the", "Buenos Aires", "Albert Einstein"} <= set(texts)


def test_cli_cap_and_bad_values(shared_data, tmp_path, capsys):
    args = _small_config(shared_data, tmp_path)
    assert main(["queries", "build", *args, "--max-entries", "100", "--out", str(tmp_path / "q.json")]) == 0
    assert len(listfile.load_queries(str(tmp_path / "q.json"))) == 100
    assert main(["queries", "build", "--wordnet-lemmas", "some", "--out", str(tmp_path / "x.json")]) == 2
    assert main(["queries", "build", "--titles", str(tmp_path / "nope.json"), "--set",
                 "queries.wordnet=false", "--out", str(tmp_path / "x.json")]) == 2
    assert "query source not found" in capsys.readouterr().err


def test_load_queries_formats_and_errors(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps(["a", "b c"]))
    assert listfile.load_queries(str(tmp_path / "meta.json")) == ["a", "b c"]
    doc = {"format": listfile.FORMAT, "entries": [{"id": 0, "text": "x", "sources": []},
                                                  {"id": 1, "text": "y", "sources": []}]}
    listfile.write(str(tmp_path / "ours.json.gz"), doc)
    assert listfile.load_queries(str(tmp_path / "ours.json.gz")) == ["x", "y"]
    doc["entries"][1]["id"] = 5
    listfile.write(str(tmp_path / "bad_ids.json"), doc)
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    for name in ("missing.json", "bad_ids.json", "junk.json", "other.json"):
        with pytest.raises(UserError):
            listfile.load_queries(str(tmp_path / name))
    with pytest.raises(UserError, match="no query list"):
        listfile.load_queries("")


def test_committed_list_is_what_its_provenance_says():
    doc = listfile.read_document(COMMITTED)
    texts = listfile.load_queries(COMMITTED)
    assert doc["format"] == listfile.FORMAT and len(texts) == doc["summary"]["entries"] > 250_000
    assert len(set(texts)) == len(texts) and all(t == " ".join(t.split()) and t for t in texts)
    assert doc["sources"]["unigram"]["package"] == "wikiwords==0.5"
    assert set(doc["params"]) == set(vars(QueriesConfig()))
    provenance = (LISTS / "PROVENANCE.md").read_text()
    for name, figures in doc["summary"]["per_source"].items():
        assert f"{figures['in_list']:,}" in provenance, name
    assert listfile.dumps(doc) == gzip.decompress(open(COMMITTED, "rb").read())
