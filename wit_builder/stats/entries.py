"""Entry statistics for the report: balance's counts per query entry (before and after, the
head that hit the cap t, a rank-frequency curve) and the entries' names from the query list
that the match stage used."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder import storage
from wit_builder.errors import UserError
from wit_builder.queries.listfile import load_queries, used_by_match

RANK_POINTS = 200  # rank-frequency curves are kept at this many log-spaced ranks


def entry_count_stats(folder: str, t: int | None, top: int) -> dict | None:
    """Head/tail shares and rank-frequency curves from (entry_id, count_before, count_after)."""
    parts = []
    for f in storage.list_files(folder, suffixes=(".parquet",)):
        with storage.open_file(f, "rb") as handle:
            parts.append(pq.read_table(handle, columns=["entry_id", "count_before", "count_after"]))
    if not parts:
        return None
    table = pa.concat_tables(parts)
    ids = numpy_of(table.column("entry_id"))
    before = numpy_of(table.column("count_before")).astype(np.int64)
    after = numpy_of(table.column("count_after")).astype(np.int64)
    t = int(t) if t else int(after.max()) if len(after) else 0
    head = before > t
    total_before, total_after = int(before.sum()), int(after.sum())
    order = np.argsort(-before, kind="stable")[:top]
    return {
        "t": t, "entries": int(len(ids)),
        "entries_with_pairs_after": int((after > 0).sum()),
        "pairs_before": total_before, "pairs_after": total_after,
        "head_entries": int(head.sum()),
        # cut, not only above t: a balance that kept every pair capped nothing
        "capped_entries": int((after < before).sum()),
        "capped_share": round(float((after < before).sum() / len(ids)), 4) if len(ids) else 0.0,
        "head_share_before": round(float(before[head].sum() / total_before), 4) if total_before else 0.0,
        "head_share_after": round(float(after[head].sum() / total_after), 4) if total_after else 0.0,
        "top": [[int(ids[i]), int(before[i]), int(after[i])] for i in order],
        "rank_before": _rank_curve(before), "rank_after": _rank_curve(after),
    }


def _rank_curve(counts: np.ndarray) -> list[list[int]]:
    """[[rank, count], ...] of the descending counts at log-spaced ranks (zeros left out)."""
    ordered = np.sort(counts[counts > 0])[::-1]
    if len(ordered) == 0:
        return []
    ranks = np.unique(np.geomspace(1, len(ordered), num=min(RANK_POINTS, len(ordered))).astype(np.int64))
    return [[int(r), int(ordered[r - 1])] for r in ranks]


# --- entry names (the match stage's query list) -------------------------------------------

def _query_list(path: str, found: dict[str, str], per_stage: dict) -> str | None:
    """The query list named by the match manifest: of this output, else of a sibling OUT/match."""
    for s in per_stage.values():
        q = s["manifest"].get("queries")
        if isinstance(q, dict) and q.get("path"):
            return q["path"]
    if len(found) == 1:  # a stage folder given alone: look next to it
        return used_by_match(path)
    return None


def add_entry_names(path: str, found: dict[str, str], per_stage: dict) -> None:
    """`entry_names` {id: name} for the ids the report shows (top entries, every shown sample's);
    only those names are kept, whatever the length of the query list."""
    wanted = set()
    for s in per_stage.values():
        wanted.update(row[0] for row in (s.get("entry_counts") or {}).get("top", []))
        for item in _shown(s):
            wanted.update(item.get("entry_ids") or [])
    query_path = _query_list(path, found, per_stage) if wanted else None
    if not query_path or not storage.exists(query_path):
        return
    try:
        entries = load_queries(query_path)
    except UserError:
        return
    names = {i: entries[i] for i in sorted(wanted) if 0 <= i < len(entries)}
    del entries
    for s in per_stage.values():
        if e := s.get("entry_counts"):
            e["names"] = {i: names[i] for i in (row[0] for row in e["top"]) if i in names}
            e["queries"] = query_path
        for item in _shown(s):
            if item.get("entry_ids") and not item.get("entries"):
                item["entries"] = [names.get(i, f"#{i}") for i in item["entry_ids"]]


def _shown(s: dict) -> list[dict]:
    """The samples a stage's report section shows: random, dropped, lowest and highest scored."""
    return [*s.get("samples", []),
            *(i for group in (s.get("drop_samples") or {}).values() for i in group),
            *(i for group in (s.get("score_samples") or {}).values() for i in group)]


def numpy_of(column) -> np.ndarray:
    """A column's non-null values as numpy."""
    return column.drop_null().to_numpy(zero_copy_only=False)
