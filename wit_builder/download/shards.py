"""The driver's side of a download: the prepared rows cut into shards, the shards dealt to tasks.

This is what img2dataset's Reader and distributor do, without importing img2dataset in the
driver. Shards as img2dataset's Reader makes them: the Parquet files of the input folder in name
order, each cut into runs of `samples_per_shard` rows; shard ids count from `start_shard_id`
over all of them, ids in `done_shards` are skipped. Each shard's rows go to
`OUT/_tmp/ID.feather` (the columns the engine reads, the caption named `caption`), removed at
the end.

The shards are dealt to one task per core, each running engine.download_shards. On a cluster
(or a session already started) the tasks are Spark's; with a local master whose session has not
started, they are local processes instead, as img2dataset's multiprocessing distributor runs
them: a JVM would only relay the same function to the same cores, after seconds of start-up
(measured: 7 s before the first image on this 2-core machine, 1 s with processes).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder import storage
from wit_builder.download.rows import CARRIED

# Columns of the prepared input that go into every sample's json (besides url and caption).
EXTRA_COLUMNS = ["uid", *CARRIED]
# What img2dataset's Reader gives its Downloader for a Parquet input with a caption column.
COLUMN_LIST = [*EXTRA_COLUMNS, "caption", "url"]
SHARDS_PER_JOB = 1000  # img2dataset's subjob_size: one Spark job runs at most this many shards
SHARD_RETRIES = 1  # a failed shard (an exception in its task) runs once more


@contextmanager
def local_workers(spark):
    """The local processes shard tasks run in (a local master whose session has not started),
    or None: Spark runs them. Forked here, before the driver starts threads of its own (the
    progress line), so that each worker inherits the engine's imports instead of importing
    them and the command line again as a spawned one does (1 to 2 s before its first image);
    spawned when threads already run."""
    if not _local_without_jvm(spark):
        yield None
        return
    from wit_builder.download import engine  # noqa: F401 - imported once, for the forks

    method = "fork" if threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(_cores(spark), mp_context=multiprocessing.get_context(method)) as pool:
        pool.submit(int).result()  # the workers start now
        yield pool


def download(spark, input_dir: str, out_dir: str, section, done_shards: set,
             start_shard_id: int = 0, pool=None) -> None:
    """Download the prepared Parquet files in `input_dir` into shards of `out_dir`, in the
    processes of `pool` (local_workers) or in Spark's tasks."""
    tmp = out_dir.rstrip("/") + "/_tmp"
    fs, tmp_path = storage.filesystem(tmp)
    fs.makedirs(tmp_path, exist_ok=True)
    run = functools.partial(_run_shards, section, out_dir)
    try:
        batch: list = []
        for shard in _shard_files(input_dir, tmp, section.samples_per_shard, done_shards,
                                  start_shard_id):
            batch.append(shard)
            if len(batch) == SHARDS_PER_JOB:
                _run_batch(spark, run, batch, pool)
                batch = []
        if batch:
            _run_batch(spark, run, batch, pool)
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path, recursive=True)


def _shard_files(input_dir: str, tmp: str, per_shard: int, done_shards: set, start_shard_id: int):
    """(shard id, feather path) of each shard to download, one input file read at a time."""
    fs, path = storage.filesystem(input_dir)
    shard_id = start_shard_id
    for name in sorted(fs.glob(path.rstrip("/") + "/*.parquet")):
        with fs.open(name, "rb") as handle:
            table = pq.read_table(handle, columns=["url", "text", *EXTRA_COLUMNS])
        table = table.rename_columns(["caption" if c == "text" else c
                                      for c in table.column_names]).select(COLUMN_LIST)
        for i in range(math.ceil(table.num_rows / per_shard)):
            if shard_id + i not in done_shards:
                yield shard_id + i, _write_shard(table.slice(i * per_shard, per_shard),
                                                 f"{tmp}/{shard_id + i}.feather")
        shard_id += math.ceil(table.num_rows / per_shard)


def _write_shard(rows: pa.Table, path: str) -> str:
    with storage.open_file(path, "wb") as handle, pa.ipc.new_file(handle, rows.schema) as writer:
        writer.write_table(rows)
    return path


def _run_batch(spark, run, shards: list, pool) -> None:
    """Run the shards, dealt to as many tasks as Spark has cores (each task downloads its
    shards one after the other, the next starting while the last answers of the one before
    come in: a shard's slowest URLs no longer idle its process); shards a failed task left
    unfinished run once more (as img2dataset's retrier)."""
    for _ in range(SHARD_RETRIES + 1):
        if not shards:
            return
        tasks = min(len(shards), _cores(spark))
        groups = [shards[i::tasks] for i in range(tasks)]
        if pool is not None:
            failed = list(pool.map(run, groups))
        else:
            failed = spark.sparkContext.parallelize(groups, tasks).map(run).collect()
        shards = [shard for group in failed for shard in group]
    # what is still missing is reported by the stage (shards without `_stats.json`)


def _local_without_jvm(spark) -> bool:
    """A local master whose session (a LazySession) has not started."""
    return not getattr(spark, "started", True) and spark.master.startswith("local")


def _cores(spark) -> int:
    if hasattr(spark, "default_parallelism"):  # a LazySession: no session started for it
        return spark.default_parallelism
    return spark.sparkContext.defaultParallelism


def _run_shards(section, out_dir: str, shards: list) -> list:
    """Download `shards` in this task; those left unfinished (the task failed), for a retry."""
    from wit_builder.download import engine  # in the executors only

    try:
        engine.download_shards(section, out_dir, COLUMN_LIST, shards)
        return []
    except Exception:  # noqa: BLE001 - reported by the stage if the retry fails too
        import traceback

        traceback.print_exc()
        return [s for s in shards if not storage.exists(
            f"{out_dir.rstrip('/')}/{storage.shard_name(s[0])}_stats.json")]
