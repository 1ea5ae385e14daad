"""The download stage: candidate pairs -> img2dataset WebDataset shards in OUT/download.

OUT/download holds img2dataset's output as it writes it: NNNNN.tar (KEY.jpg, KEY.txt,
KEY.json), NNNNN.parquet (one row per attempted URL, failures included) and NNNNN_stats.json,
plus our manifest.json and _SUCCESS. Beside them, `_input/` keeps the candidates as img2dataset
reads them: Parquet files hash-partitioned and sorted by uid (which spreads each host's URLs
over the run), written once, so shard i always holds the same rows.

Resume (IN_PLACE): a shard is finished when its `_stats.json` exists (img2dataset writes it
last); a rerun deletes unfinished shard files and downloads only the missing shards. The
partial output belongs to the inputs and settings recorded in `_input/_prepared.json`; when
those change the folder is started afresh (throughput knobs like `threads` may change freely).
Note: `--force` with unchanged inputs and settings re-counts the existing shards; delete
OUT/download to fetch everything again.

`retry_failed` (`--retry-failed`): after the pass above, the URLs whose latest attempt failed
are fetched once more into new shards numbered after the existing ones. A row's outcome is its
success if any attempt succeeded, else its latest attempt's error (the highest key).

Counts: rows_in = candidate rows; drops = missing_url, duplicate_pair (same uid, i.e. the same
url and text) and one reason per failed URL, from our fetcher's "reason: detail" messages or
img2dataset's resize errors; rows_out = images in the shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

from wit_builder import stages, storage
from wit_builder.download.fetch import Policy
from wit_builder.errors import UserError

IN_PLACE = True
INPUT_DIR = "_input"
SHARDS_PER_INPUT_FILE = 20  # img2dataset's Reader loads one input file at a time in the driver
# Settings that change what a shard contains; the others (threads, timeouts...) may differ
# between an interrupted run and its resumption.
_CONTENT_KEYS = ("image_size", "resize_mode", "resize_only_if_bigger", "encode_quality",
                 "samples_per_shard", "max_bytes", "max_pixels", "max_redirects",
                 "allow_networks", "user_agent", "honor_robots_tag")
_RESIZE_ERRORS = {"image too small": "image_too_small", "image area too large": "image_too_large",
                  "aspect ratio too large": "bad_aspect_ratio",
                  "image decoding error": "decode_error", "hash mismatch": "hash_mismatch"}
_REASON = re.compile(r"([a-z][a-z0-9_]*)(?::|$)")
_ROW_SCHEMA = ("uid string, url string, text string, entry_ids array<int>, entries array<string>, "
               "page_url string, source string")
_ROW_COLUMNS = ["uid", "url", "text", "entry_ids", "entries", "page_url", "source"]


def extra_inputs(cfg) -> list[str]:
    """The query list names the entries written into every sample's json."""
    return [cfg.match.queries] if cfg.match.queries else []


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    from wit_builder.download import engine

    section = cfg.download
    Policy.from_config(section)  # a bad allow_networks entry fails here, not in every task
    _make_active(spark)
    prepared = _prepare(spark, cfg, inputs, out_dir)
    input_dir = storage.join(out_dir, INPUT_DIR)
    _remove_unfinished(out_dir)
    if prepared["rows"]:
        engine.download(input_dir, out_dir, section, done_shards=_finished(out_dir))
    missing = sorted(set(range(prepared["shards"])) - _finished(out_dir))
    if missing:
        raise UserError(f"download: {len(missing)} shard(s) did not finish (first: "
                        f"{missing[0]}, see the log above; rerun the same command to resume)")
    if section.retry_failed:
        _retry_failed(spark, out_dir, section)
    return _tally(spark, out_dir, prepared)


def _make_active(spark) -> None:
    """img2dataset's distributor takes the *active* session; make sure that is ours."""
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is None:
        spark._jvm.SparkSession.setActiveSession(spark._jsparkSession)
    if SparkSession.getActiveSession() is None:
        raise RuntimeError("no active SparkSession for img2dataset's distributor")


# --- preparing the candidates -------------------------------------------------------------

def _resume_key(cfg, inputs) -> str:
    section = cfg.section("download")
    state = {"inputs": [stages.fingerprint(p) for p in inputs + extra_inputs(cfg)],
             "download": {k: section[k] for k in _CONTENT_KEYS}}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare(spark, cfg, inputs, out_dir) -> dict:
    """Write (or find from an interrupted run) the candidates img2dataset will read."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    marker = storage.join(out_dir, INPUT_DIR, "_prepared.json")
    key = _resume_key(cfg, inputs)
    if storage.exists(marker) and storage.read_json(marker).get("key") == key:
        return storage.read_json(marker)
    storage.remove(out_dir)  # another input or setting: nothing here can be reused

    rows = None
    for path in inputs:
        df = _normalised(_read(spark, path), cfg, path)
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
        _write_input(unique, n, cfg.download.samples_per_shard, storage.join(out_dir, INPUT_DIR),
                     lambda batches: _with_entries(batches, bc, queries_key))
        bc.unpersist()
    finally:
        groups.unpersist()
    missing = counts["missing"] or 0
    prepared = {"key": key, "rows_in": rows_in, "rows": n,
                "shards": _shard_count(storage.join(out_dir, INPUT_DIR),
                                       cfg.download.samples_per_shard),
                "drops": {k: v for k, v in {"missing_url": missing,
                                            "duplicate_pair": rows_in - missing - n}.items() if v}}
    storage.write_json_atomic(marker, prepared)
    return prepared


def _write_input(df, n: int, per_shard: int, path: str, map_batches=None) -> None:
    """Parquet files for img2dataset's Reader, each sorted by uid (the order shards follow)."""
    files = max(1, math.ceil(n / (per_shard * SHARDS_PER_INPUT_FILE)))
    df = df.repartition(files, "uid").sortWithinPartitions("uid")
    if map_batches is not None:
        df = df.mapInArrow(map_batches, _ROW_SCHEMA)
    df.write.mode("overwrite").parquet(storage.spark_path(path))


def _read(spark, path: str):
    """A finished stage's output, or a plain candidate list (Parquet, CSV, TSV, JSON lines)."""
    if storage.exists(storage.join(path, stages.MANIFEST)):
        return stages.read_stage(spark, path)
    files = storage.list_files(path)
    if not files:
        raise UserError(f"no candidate files in {path} (give OUT/balance or a candidate list)")
    spark_paths = [storage.spark_path(f) for f in files]
    suffix = files[0].lower().removesuffix(".gz").rsplit(".", 1)[-1]
    if suffix == "parquet":
        storage.check_parquet(files)  # Spark reports a bad file as a page of JVM trace
        return spark.read.parquet(*spark_paths)
    if suffix in ("csv", "tsv"):
        return spark.read.csv(spark_paths, header=True, sep="\t" if suffix == "tsv" else ",",
                              multiLine=True, escape='"')
    if suffix in ("jsonl", "json"):
        return spark.read.json(spark_paths)
    raise UserError(f"{path}: unknown candidate list format .{suffix} "
                    "(give a stage folder or .parquet, .csv, .tsv or .jsonl files)")


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
        pick("source", default=F.col("_metadata.file_path")).cast("string").alias("source"))


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


def _shard_count(input_dir: str, per_shard: int) -> int:
    """How many shards img2dataset's Reader makes of these files (each file starts a shard)."""
    import pyarrow.parquet as pq

    fs, p = storage.filesystem(input_dir)
    total = 0
    for f in sorted(fs.glob(p.rstrip("/") + "/*.parquet")):
        with fs.open(f, "rb") as handle:
            total += math.ceil(pq.ParquetFile(handle).metadata.num_rows / per_shard)
    return total


# --- shards ---------------------------------------------------------------------------------

def _finished(out_dir: str) -> set[int]:
    fs, p = storage.filesystem(out_dir)
    stats = fs.glob(p.rstrip("/") + "/*_stats.json")
    return {int(f.rsplit("/", 1)[-1].split("_")[0]) for f in stats}


def _remove_unfinished(out_dir: str) -> None:
    """Delete shard files that an interrupted run left without their `_stats.json`."""
    fs, p = storage.filesystem(out_dir)
    done = _finished(out_dir)
    for f in fs.glob(p.rstrip("/") + "/*.tar") + fs.glob(p.rstrip("/") + "/*.parquet"):
        stem = f.rsplit("/", 1)[-1].split(".")[0]
        if stem.isdigit() and int(stem) not in done:
            fs.rm(f)


def _shard_parquets(out_dir: str) -> list[str]:
    from wit_builder.download.engine import shard_name

    return [storage.spark_path(storage.join(out_dir, f"{shard_name(i)}.parquet"))
            for i in sorted(_finished(out_dir))]


def _outcomes(spark, out_dir: str):
    """One row per uid: ok (any attempt succeeded) and `last`, its latest attempt's row."""
    from pyspark.sql import functions as F

    rows = spark.read.parquet(*_shard_parquets(out_dir))
    return rows.groupBy("uid").agg(
        F.max((F.col("status") == "success").cast("int")).alias("ok"),
        F.max_by(F.struct(*[c for c in rows.columns if c != "uid"]), "key").alias("last"))


def _retry_failed(spark, out_dir: str, section) -> None:
    from wit_builder.download import engine

    if not _finished(out_dir):
        return
    start = max(_finished(out_dir)) + 1
    failed = (_outcomes(spark, out_dir).where("ok = 0")
              .select("uid", *[f"last.{c}" for c in ("url", "text", "entry_ids", "entries",
                                                    "page_url", "source")]))
    retry_dir = storage.join(out_dir, INPUT_DIR, f"retry-{engine.shard_name(start)}")
    n = failed.count()
    if not n:
        return
    _write_input(failed, n, section.samples_per_shard, retry_dir)
    print(f"download: retrying {n:,} failed URLs into shards from {engine.shard_name(start)}")
    engine.download(retry_dir, out_dir, section, done_shards=set(), start_shard_id=start)


def reason(status: str | None, message: str | None) -> str:
    """The short drop reason of a failed attempt (our fetcher's prefix, or a resize error)."""
    message = (message or "").strip()
    if status == "failed_to_download":
        match = _REASON.match(message)
        return match.group(1) if match else "download_error"
    return _RESIZE_ERRORS.get(message.lower(), "resize_error")


def _tally(spark, out_dir: str, prepared: dict) -> stages.StageResult:
    from pyspark.sql import functions as F

    drops = dict(prepared["drops"])
    ok = seen = 0
    shards = len(_finished(out_dir))
    if shards:
        outcome = (_outcomes(spark, out_dir)
                   .groupBy("ok", F.col("last.status").alias("status"),
                            F.col("last.error_message").alias("error"))
                   .count().collect())
        for row in outcome:
            seen += row["count"]
            if row["ok"]:
                ok += row["count"]
            else:
                r = reason(row["status"], row["error"])
                drops[r] = drops.get(r, 0) + row["count"]
    if prepared["rows"] != seen:  # every finished-shard check passed, so this is a bug
        raise RuntimeError(f"download: {prepared['rows']} candidates but {seen} in the shards")
    return stages.StageResult(rows_in=prepared["rows_in"], rows_out=ok, drops=drops,
                              extra={"candidates": prepared["rows"], "shards": shards})
