"""Wikipedia article titles (CLIP: "names of Wikipedia articles above a search volume").

Formats (optionally gzipped): `.json` (a list of titles, or an object title -> view count, or
title -> anything else such as a topic, meaning no counts), or text lines `title[<TAB>views]`.
With view counts, titles below `min_views` are left out; without them every title is kept.

Lower-case title lists (e.g. compromise-wikipedia's ~38k popular titles are all lower-cased):
matching is case-sensitive, so "paris" would only match lower-case text. A lower-case title that
equals, ignoring case, a title from an earlier file in original case is dropped in favour of
that one; the others are kept as they are (they still match lower-case captions).
"""

from __future__ import annotations

import json

from wit_builder.queries import clean, open_text, sha256


def _read(path: str) -> list[tuple[str, int | None]]:
    reader = open_text(path)
    if path.lower().removesuffix(".gz").endswith(".json"):
        doc = json.load(reader)
        if isinstance(doc, dict):
            return [(t, v if isinstance(v, int) and not isinstance(v, bool) else None)
                    for t, v in doc.items()]
        return [(t, None) for t in doc]
    rows = []
    for line in reader:
        title, _, views = line.rstrip("\n").partition("\t")
        rows.append((title, int(views) if views.strip().isdigit() else None))
    return rows


def load(paths: list[str], min_views: int) -> tuple[dict[str, int], dict]:
    """({title: views or 0}, a description of the inputs)."""
    kept: dict[str, int] = {}
    by_fold: dict[str, str] = {}
    files = []
    for path in paths:
        read = below = case_dupes = 0
        for raw, views in _read(path):
            title = clean(raw)
            if not title:
                continue
            read += 1
            if views is not None and views < min_views:
                below += 1
                continue
            earlier = by_fold.get(title.casefold())
            if title.islower() and earlier is not None and earlier != title:
                case_dupes += 1
                continue
            by_fold.setdefault(title.casefold(), title)
            kept[title] = max(kept.get(title, 0), views or 0)
        files.append({"path": path, "sha256": sha256(path), "read": read,
                      "below_min_views": below, "lower_case_duplicates": case_dupes})
    return kept, {"files": files, "min_views": min_views, "kept": len(kept)}
