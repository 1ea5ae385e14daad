"""The rows download prepares, whichever way it prepares them (Spark, or the driver for small
inputs): which input column becomes which of ours, uids, and entry strings."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import per_process
from wit_builder.errors import UserError

# Candidate columns that travel into every sample's json and the shard Parquet, for finalize
# and the report (besides uid, url and the caption). `user_id`: a plain list's own `uid` column
# (as a string), kept so the user can join samples back to their list; null for stage outputs.
CARRIED = ["entry_ids", "entries", "page_url", "source", "lang", "user_id"]
ROW_DDL = ("uid string, url string, text string, entry_ids array<int>, entries array<string>, "
           "page_url string, source string, lang string, user_id string")
ROW_COLUMNS = ["uid", "url", "text", *CARRIED]


def column_plan(columns: list[str], cfg, path: str, ours: bool) -> dict[str, str | None]:
    """Our column -> the input column it comes from (names matched in any case), or None.

    A stage output's uid is ours (`ours`). A plain list's `uid` column is the user's: nothing
    makes it name one (url, text) pair, and equal uids would merge different pairs into one
    sample, so `with_uids` computes ours there, and the user's goes into `user_id` (a list
    without `uid` may name it `user_id`). One row per pair is kept, so of several rows of one
    pair only the kept row's user id survives.
    """
    by_lower = {c.lower(): c for c in columns}

    def pick(*names):
        return next((by_lower[n.lower()] for n in names if n and n.lower() in by_lower), None)

    url = pick(cfg.extract.url_column, "url")
    if url is None:
        raise UserError(f"{path}: no URL column {cfg.extract.url_column!r} (columns: "
                        f"{', '.join(columns)}; set --set extract.url_column=NAME)")
    return {"uid": pick("uid") if ours else None, "url": url,
            "user_id": pick("user_id") if ours else pick("uid", "user_id"),
            "text": pick(cfg.extract.text_column, "text", "caption"),
            "entry_ids": pick("entry_ids"), "page_url": pick(cfg.extract.page_url_column, "page_url"),
            "source": pick("source"), "lang": pick("lang")}


def query_list(cfg, inputs: list[str]) -> str:
    """The query list that names the entries in every sample's json: `[match] queries`, else
    the list the match stage of these inputs used (its manifest names it), else none ("")."""
    from wit_builder.queries.listfile import used_by_match

    return cfg.match.queries or next(filter(None, map(used_by_match, inputs)), None) or ""


def queries_for(path: str, max_id):
    """The query list at `path` (entry id = index) and a key naming it, or (None, None)."""
    if not path:
        return None, None
    from wit_builder.queries.listfile import fingerprint, load_queries

    queries = load_queries(path)
    if max_id is not None and max_id >= len(queries):
        raise UserError(f"entry id {max_id} is beyond the query list {path} "
                        f"({len(queries)} entries): give the list that match used "
                        "(--set match.queries=FILE)")
    return queries, fingerprint(queries)


def with_uids(batches):
    """Plain lists: uid = blake2b of url and cleaned text, as extract computes it; no URL: null."""
    from wit_builder.urls import clean_text, uid

    for batch in batches:
        if not batch.column("uid").null_count:  # a stage output: uids are there
            yield batch
            continue
        uids, texts = [], []
        for u, url, text in zip(*(batch.column(c).to_pylist() for c in ("uid", "url", "text"))):
            if u is None:
                text = clean_text(text)
                u = uid(url, text) if url and url.strip() else None
            uids.append(u)
            texts.append(text)
        cols = dict(zip(batch.schema.names, batch.columns))
        cols["uid"], cols["text"] = pa.array(uids, pa.string()), pa.array(texts, pa.string())
        yield pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))


def with_entries(batches, queries, queries_key):
    """The entry strings of each row's entry ids (empty lists without a query list);
    `queries()` gives the list, called once per process and list."""
    strings = None if queries_key is None else per_process.get(
        "query strings", queries_key, lambda: pa.array(queries(), pa.string()), keep=1)
    for batch in batches:
        ids = batch.column("entry_ids")  # never null (see column_plan's users)
        if strings is None:
            entries = pa.array([[]] * len(ids), pa.list_(pa.string()))
        else:  # `offsets` index into `values` (not `flatten()`), also for a sliced array
            entries = pa.ListArray.from_arrays(ids.offsets, pc.take(strings, ids.values))
        cols = dict(zip(batch.schema.names, batch.columns), entries=entries)
        yield pa.RecordBatch.from_arrays([cols[c] for c in ROW_COLUMNS], names=ROW_COLUMNS)
