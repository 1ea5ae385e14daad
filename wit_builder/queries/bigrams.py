"""High-PMI bigrams from a text corpus (CLIP: "bi-grams with high pointwise mutual information").

PMI(a b) = ln( count(a b) * N / (count(a) * count(b)) ), N = number of tokens; a bigram is kept
when count(a b) >= min_count and PMI >= min_pmi. Counting is case-sensitive (matching is), and
bigrams never span punctuation: the text is cut into phrases at sentence and clause marks, and
tokens are runs of letters/digits, optionally joined by an apostrophe or hyphen ("rock'n", "x-ray").

Corpus formats (optionally gzipped): `.json` (a list or an object whose values are strings or
objects with an "extract"/"text" field, e.g. Wikipedia summaries), `.jsonl` (one such value per
line), anything else plain text.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

from wit_builder.errors import UserError
from wit_builder.queries import open_text, sha256

PHRASE_BREAK = re.compile(r"[.,;:!?()\[\]{}\"“”„«»/|…–—]+|\s['’\-]+|['’\-]+\s")
TOKEN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def _texts_of(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("extract", "text"):
            if isinstance(value.get(key), str):
                yield value[key]
                return
    elif isinstance(value, list):
        for item in value:
            yield from _texts_of(item)


def read_corpus(path: str):
    """Yield the corpus's documents as strings."""
    name = path.lower().removesuffix(".gz")
    reader = open_text(path)
    if name.endswith(".jsonl"):
        for line in reader:
            if line.strip():
                yield from _texts_of(json.loads(line))
    elif name.endswith(".json"):
        try:
            doc = json.load(reader)
        except json.JSONDecodeError as exc:
            raise UserError(f"bigram corpus {path} is not valid JSON: {exc}") from None
        yield from _texts_of(list(doc.values()) if isinstance(doc, dict) else doc)
    else:
        yield from reader


def count(texts) -> tuple[Counter, Counter]:
    unigrams, bigrams = Counter(), Counter()
    for text in texts:
        for phrase in PHRASE_BREAK.split(text):
            tokens = TOKEN.findall(phrase)
            unigrams.update(tokens)
            bigrams.update(zip(tokens, tokens[1:]))
    return unigrams, bigrams


def load(path: str, min_count: int, min_pmi: float) -> tuple[dict[str, float], dict]:
    """({"a b": pmi} for the kept bigrams, a description of the input)."""
    unigrams, bigrams = count(read_corpus(path))
    n = sum(unigrams.values())
    kept = {}
    for (a, b), c in bigrams.items():
        if c < min_count:
            continue
        pmi = math.log(c * n / (unigrams[a] * unigrams[b]))
        if pmi >= min_pmi:
            kept[f"{a} {b}"] = round(pmi, 6)  # rounded: the same file on every platform
    info = {"path": path, "sha256": sha256(path), "tokens": n, "distinct_bigrams": len(bigrams),
            "min_count": min_count, "min_pmi": min_pmi, "kept": len(kept)}
    return kept, info
