"""Merge the sources into one deterministic, capped query list.

Order and ids: entries are ranked by (best source in PRIORITY, that source's score descending,
text by code point) and numbered in that order, so the same inputs always give the same file.
The `max_entries` cap keeps the top of that ranking: all of WordNet first (CLIP's list starts
from it), then Wikipedia unigrams by count, then bigrams by PMI, then titles by views.
"""

from __future__ import annotations

import itertools
from typing import Callable

from wit_builder.settings import QueriesConfig
from wit_builder.queries import bigrams, listfile, titles, wikipedia, wordnet

PRIORITY = ("wordnet", "unigram", "bigram", "title")


def collect(cfg: QueriesConfig, log: Callable[[str], None] = print) -> dict[str, tuple[dict, dict]]:
    """{source: ({text: score}, description)} for the sources the config turns on."""
    found = {}
    if cfg.wordnet:
        found["wordnet"] = wordnet.load(cfg.wordnet_lemmas)
    found["unigram"] = wikipedia.load(cfg.wiki_unigrams, cfg.unigram_min_count)
    if cfg.bigram_corpus:
        found["bigram"] = bigrams.load(cfg.bigram_corpus, cfg.bigram_min_count, cfg.bigram_min_pmi)
    if cfg.titles:
        found["title"] = titles.load(cfg.titles, cfg.title_min_views)
    for name, (scores, _) in found.items():
        log(f"queries: {name}: {len(scores):,} entries")
    return found


def merge(found: dict[str, tuple[dict, dict]], max_entries: int) -> tuple[list[dict], dict]:
    """(entries [{"id", "text", "sources"}], summary per source and overlaps)."""
    sources_of: dict[str, list[str]] = {}
    rank: dict[str, tuple] = {}
    for name in PRIORITY:
        if name not in found:
            continue
        for text, score in found[name][0].items():
            sources_of.setdefault(text, []).append(name)
            rank.setdefault(text, (PRIORITY.index(name), -score, text))
    ordered = sorted(rank, key=rank.__getitem__)
    kept = ordered[:max_entries]
    entries = [{"id": i, "text": t, "sources": sources_of[t]} for i, t in enumerate(kept)]

    names = [n for n in PRIORITY if n in found]
    in_list = {n: sum(n in e["sources"] for e in entries) for n in names}
    summary = {
        "entries": len(entries),
        "candidates": len(ordered),
        "dropped_by_cap": len(ordered) - len(kept),
        "per_source": {n: {"candidates": len(found[n][0]), "in_list": in_list[n],
                           "only_this_source": sum(e["sources"] == [n] for e in entries),
                           "first_source": sum(e["sources"][0] == n for e in entries)}
                       for n in names},
        "overlaps": {f"{a}&{b}": len(found[a][0].keys() & found[b][0].keys())
                     for a, b in itertools.combinations(names, 2)},
    }
    return entries, summary


def build(cfg: QueriesConfig, log: Callable[[str], None] = print) -> dict:
    """The whole list document (listfile's format)."""
    found = collect(cfg, log)
    entries, summary = merge(found, cfg.max_entries)
    return {"format": listfile.FORMAT, "params": dict(vars(cfg)),
            "sources": {name: info for name, (_, info) in found.items()},
            "summary": summary, "entries": entries}


def build_to(cfg: QueriesConfig, out: str, fmt: str = "json",
             log: Callable[[str], None] = print) -> dict:
    """Build and write the list (`fmt` "json": ours; "metaclip": a JSON list of strings)."""
    doc = build(cfg, log)
    listfile.write(out, doc if fmt == "json" else [e["text"] for e in doc["entries"]])
    s = doc["summary"]
    log(f"queries: {s['entries']:,} entries ({s['dropped_by_cap']:,} over the cap) -> {out}")
    for name, figures in s["per_source"].items():
        log(f"  {name:8s} {figures['candidates']:>9,} candidates, {figures['in_list']:>9,} in list, "
            f"{figures['only_this_source']:>9,} only there")
    for pair, n in s["overlaps"].items():
        log(f"  overlap {pair}: {n:,}")
    return doc
