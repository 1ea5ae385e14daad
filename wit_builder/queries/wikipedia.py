"""Wikipedia unigrams: every word seen at least `min_count` times (CLIP: 100).

Input: a `word<TAB>count[<TAB>...]` file (an optional header line is skipped), or, with no path,
the PyPI package `wikiwords` (2012 English Wikipedia counts; its smallest count is 109).
"""

from __future__ import annotations

from importlib import metadata

from wit_builder.errors import UserError
from wit_builder.queries import clean, open_text, sha256


def load(path: str, min_count: int) -> tuple[dict[str, int], dict]:
    """({word: count} for count >= min_count, a description of the input)."""
    if path:
        counts = {}
        for line in open_text(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[1].strip().isdigit():
                continue  # header or malformed line
            counts[clean(parts[0])] = counts.get(clean(parts[0]), 0) + int(parts[1])
        info = {"path": path, "sha256": sha256(path)}
    else:
        try:
            from wikiwords import occdb
        except ImportError:
            raise UserError("no unigram source: give --wiki-unigrams FILE (word<TAB>count) or "
                            "`pip install wikiwords==0.5`") from None
        counts = {clean(w): int(c) for w, c in occdb.db.items()}
        info = {"package": f"wikiwords=={metadata.version('wikiwords')}"}
    kept = {w: c for w, c in counts.items() if w and c >= min_count}
    info.update(read=len(counts), kept=len(kept), min_count=min_count)
    return kept, info
