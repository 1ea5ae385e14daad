"""WordNet synsets through NLTK's reader (NLTK_DATA must hold corpora/wordnet[.zip]).

`lemmas="all"` (default) takes every lemma name of every synset, `"first"` only each synset's
first (head) lemma name. Underscores become spaces ("hot_dog" -> "hot dog"); the case is
WordNet's (proper nouns capitalised).
"""

from __future__ import annotations

from wit_builder.errors import UserError
from wit_builder.queries import clean, sha256


def load(lemmas: str = "all") -> tuple[dict[str, int], dict]:
    """({lemma name: number of synsets it names}, a description of the input)."""
    import nltk
    from nltk.corpus import wordnet as wn

    try:
        synsets = list(wn.all_synsets())
    except LookupError:
        raise UserError("WordNet not found by NLTK (set NLTK_DATA to a folder holding "
                        "corpora/wordnet.zip, e.g. from `python -m nltk.downloader wordnet`)") from None
    names: dict[str, int] = {}
    for synset in synsets:
        chosen = synset.lemma_names()
        for name in chosen[:1] if lemmas == "first" else chosen:
            text = clean(name.replace("_", " "))
            names[text] = names.get(text, 0) + 1
    info = {"nltk": nltk.__version__, "wordnet_version": wn.get_version(), "synsets": len(synsets),
            "lemmas": lemmas, "kept": len(names)}
    try:  # the zip's checksum when NLTK reads one (not its path: that differs between machines)
        info["sha256"] = sha256(nltk.data.find("corpora/wordnet.zip").zipfile.filename)
    except (LookupError, AttributeError):
        pass
    return names, info
