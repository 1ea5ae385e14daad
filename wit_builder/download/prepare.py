"""Preparing download's input: candidate rows -> the Parquet files img2dataset's Reader reads.

Input: finished stage folders or plain candidate lists (inputs.py). Plain lists get uids computed
from url and text as extract computes them; one row per uid is kept (same uid = same url and
text: one sample), rows without a URL are counted, and entry ids become entry strings from the
query list. The files land in OUT/download/_input, hash-partitioned and sorted by uid (which
spreads each host's URLs over the run), written once, so shard i always holds the same rows.
`_input/_prepared.json` records what they were made from: the resume key.
"""

from __future__ import annotations

import hashlib
import json
import math

from wit_builder import inputs as stage_inputs
from wit_builder import stages, storage
from wit_builder.errors import UserError

INPUT_DIR = "_input"
_HINT = "give OUT/balance or a candidate list"
SHARDS_PER_INPUT_FILE = 20  # img2dataset's Reader loads one input file at a time in the driver
# Settings that change what a shard contains; the others (threads, timeouts...) may differ
# between an interrupted run and its resumption.
_CONTENT_KEYS = ("image_size", "resize_mode", "resize_only_if_bigger", "encode_quality",
                 "samples_per_shard", "max_bytes", "max_pixels", "max_redirects",
                 "allow_networks", "user_agent", "honor_robots_tag", "honor_robots_txt")
# Candidate columns that travel into every sample's json and the shard Parquet, for finalize
# and the report (besides uid, url and the caption).
CARRIED = ["entry_ids", "entries", "page_url", "source", "lang"]
_ROW_SCHEMA = ("uid string, url string, text string, entry_ids array<int>, entries array<string>, "
               "page_url string, source string, lang string")
_ROW_COLUMNS = ["uid", "url", "text", *CARRIED]


def extra_inputs(cfg) -> list[str]:
    """The query list names the entries written into every sample's json."""
    return [cfg.match.queries] if cfg.match.queries else []


def _resume_key(cfg, inputs) -> str:
    section = cfg.section("download")
    state = {"inputs": [stages.fingerprint(p) for p in inputs + extra_inputs(cfg)],
             "download": {k: section[k] for k in _CONTENT_KEYS}}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare(spark, cfg, inputs, out_dir) -> dict:
    """Write (or find from an interrupted run) the candidates img2dataset will read."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    marker = storage.join(out_dir, INPUT_DIR, "_prepared.json")
    key = _resume_key(cfg, inputs)
    if storage.exists(marker) and storage.read_json(marker).get("key") == key:
        return storage.read_json(marker)
    storage.remove(out_dir)  # another input or setting: nothing here can be reused

    rows = None
    for path in inputs:  # one at a time: each list may name its columns its own way
        df = _normalised(stage_inputs.read_rows(spark, [path], _HINT), cfg, path)
        rows = df if rows is None else rows.unionByName(df)
    # One row per uid (same uid = same url and text: one sample), with a deterministic
    # representative; rows without a URL gather under uid null.
    rows = rows.mapInArrow(_with_uids, rows.schema)
    # Partition by uid ourselves: a cached aggregate keeps its shuffle's partition count (AQE
    # does not coalesce cached plans), which would be spark.sql.shuffle.partitions (200).
    rows = rows.repartition(rows.rdd.getNumPartitions(), "uid")
    others = [c for c in rows.columns if c != "uid"]
    groups = (rows.groupBy("uid").agg(F.count(F.lit(1)).alias("n"),
                                      F.min(F.struct(*others)).alias("r"))
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        has_url = F.col("uid").isNotNull()
        counts = groups.agg(F.sum("n").alias("rows"),
                            F.sum(F.when(~has_url, F.col("n"))).alias("missing"),
                            F.count(F.when(has_url, 1)).alias("unique"),
                            F.max(F.array_max("r.entry_ids")).alias("max_id")).first()
        rows_in, n = counts["rows"] or 0, counts["unique"]
        queries, queries_key = _queries(cfg, counts["max_id"])
        bc = spark.sparkContext.broadcast(queries)
        unique = groups.where(has_url).select("uid", *[F.col(f"r.{c}").alias(c) for c in others])
        write_input(unique, n, cfg.download.samples_per_shard, storage.join(out_dir, INPUT_DIR),
                     lambda batches: _with_entries(batches, bc, queries_key))
        bc.unpersist()
    finally:
        groups.unpersist()
    missing = counts["missing"] or 0
    prepared = {"key": key, "rows_in": rows_in, "rows": n,
                "shards": shard_count(storage.join(out_dir, INPUT_DIR),
                                       cfg.download.samples_per_shard),
                "drops": {k: v for k, v in {"missing_url": missing,
                                            "duplicate_pair": rows_in - missing - n}.items() if v}}
    storage.write_json_atomic(marker, prepared)
    return prepared


def write_input(df, n: int, per_shard: int, path: str, map_batches=None) -> None:
    """Parquet files for img2dataset's Reader, each sorted by uid (the order shards follow)."""
    files = max(1, math.ceil(n / (per_shard * SHARDS_PER_INPUT_FILE)))
    df = df.repartition(files, "uid").sortWithinPartitions("uid")
    if map_batches is not None:
        df = df.mapInArrow(map_batches, _ROW_SCHEMA)
    df.write.mode("overwrite").parquet(storage.spark_path(path))


def _normalised(df, cfg, path):
    """Our row columns from a stage output or a list with url/text columns (any case)."""
    from pyspark.sql import functions as F

    by_lower = {c.lower(): c for c in df.columns}

    def pick(*names, default=None):
        for name in names:
            if name and name.lower() in by_lower:
                return F.col(f"`{by_lower[name.lower()]}`")
        return default

    url = pick(cfg.extract.url_column, "url")
    if url is None:
        raise UserError(f"{path}: no URL column {cfg.extract.url_column!r} (columns: "
                        f"{', '.join(df.columns)}; set --set extract.url_column=NAME)")
    none = F.lit(None).cast("string")
    no_ids = F.array().cast("array<int>")
    # A stage output's uid is ours. A plain list's `uid` column is the user's: nothing makes
    # it name one (url, text) pair, and equal uids would merge different pairs into one
    # sample, so _with_uids computes ours there.
    ours = storage.exists(storage.join(path, stages.MANIFEST))
    return df.select(
        (pick("uid", default=none) if ours else none).cast("string").alias("uid"),
        url.cast("string").alias("url"),
        F.coalesce(pick(cfg.extract.text_column, "text", "caption", default=none).cast("string"),
                   F.lit("")).alias("text"),
        F.coalesce(pick("entry_ids", default=no_ids).cast("array<int>"), no_ids).alias("entry_ids"),
        pick(cfg.extract.page_url_column, "page_url", default=none).cast("string")
        .alias("page_url"),
        pick("source", default=F.col("_metadata.file_path")).cast("string").alias("source"),
        pick("lang", default=none).cast("string").alias("lang"))


def _queries(cfg, max_id):
    """The query list (entry id = index) and a key naming it, or (None, None) without one."""
    if not cfg.match.queries:
        return None, None
    from wit_builder.queries.listfile import fingerprint, load_queries

    queries = load_queries(cfg.match.queries)
    if max_id is not None and max_id >= len(queries):
        raise UserError(f"entry id {max_id} is beyond the query list {cfg.match.queries} "
                        f"({len(queries)} entries): give the list that match used "
                        "(--set match.queries=FILE)")
    return queries, fingerprint(queries)


def _with_uids(batches):
    """Plain lists: uid = blake2b of url and cleaned text, as extract computes it; no URL: null."""
    import pyarrow as pa

    from wit_builder.extract.urls import clean_text, uid

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


_QUERY_ARRAYS: dict = {}  # per executor process: query list key -> Arrow array of its strings


def _with_entries(batches, bc, queries_key):
    """The entry strings of each row's entry ids (empty lists without a query list)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if queries_key is not None and queries_key not in _QUERY_ARRAYS:
        _QUERY_ARRAYS[queries_key] = pa.array(bc.value, pa.string())
    strings = _QUERY_ARRAYS.get(queries_key)
    for batch in batches:
        ids = batch.column("entry_ids")  # never null (see _normalised)
        if strings is None:
            entries = pa.array([[]] * len(ids), pa.list_(pa.string()))
        else:  # `offsets` index into `values` (not `flatten()`), also for a sliced array
            entries = pa.ListArray.from_arrays(ids.offsets, pc.take(strings, ids.values))
        cols = dict(zip(batch.schema.names, batch.columns), entries=entries)
        yield pa.RecordBatch.from_arrays([cols[c] for c in _ROW_COLUMNS], names=_ROW_COLUMNS)


def shard_count(input_dir: str, per_shard: int) -> int:
    """How many shards img2dataset's Reader makes of these files (each file starts a shard)."""
    import pyarrow.parquet as pq

    fs, p = storage.filesystem(input_dir)
    total = 0
    for f in sorted(fs.glob(p.rstrip("/") + "/*.parquet")):
        with fs.open(f, "rb") as handle:
            total += math.ceil(pq.ParquetFile(handle).metadata.num_rows / per_shard)
    return total
