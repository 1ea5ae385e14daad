"""The driver's side of a download: the prepared rows cut into shards, the shards dealt to tasks.

This is what img2dataset's Reader and distributor do, without importing img2dataset in the
driver. Shards as img2dataset's Reader makes them: the Parquet files of the input folder in name
order, each cut into runs of `samples_per_shard` rows; shard ids count from `start_shard_id`
over all of them, ids in `done_shards` are skipped. Each shard's rows go to
`OUT/_tmp/ID.feather` (the columns the engine reads, the caption named `caption`), removed at
the end.

The shards' rows are dealt to one task per core in even, contiguous runs (each task running
engine.download_shards on its pieces, one after the other): with 3 shards on 2 cores each task
takes a shard and a half, instead of one task taking two shards while the other idles after
one. A shard cut between two tasks is written as parts (`OUT/_tmp/parts/K/`) and joined here
once both are done (writer.join). On a cluster
(or a session already started) the tasks are Spark's; with a local master whose session has not
started, they are local processes instead, as img2dataset's multiprocessing distributor runs
them: a JVM would only relay the same function to the same cores, after seconds of start-up
(measured: 7 s before the first image on this 2-core machine, 1 s with processes).
"""

from __future__ import annotations

import bisect
import functools
import math
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder import storage
from wit_builder.download.rows import CARRIED
from wit_builder.download.writer import join
from wit_builder.shard.samples import write_card

# Columns of the prepared input that go into every sample's json (besides url and caption).
EXTRA_COLUMNS = ["uid", *CARRIED]
# What img2dataset's Reader gives its Downloader for a Parquet input with a caption column.
COLUMN_LIST = [*EXTRA_COLUMNS, "caption", "url"]
SHARDS_PER_JOB = 1000  # img2dataset's subjob_size: one Spark job runs at most this many shards
SHARD_RETRIES = 1  # a failed shard (an exception in its task) runs once more


class Piece(NamedTuple):
    """Rows [start, stop) of a shard's feather file for one task: the whole shard, written into
    the output folder, or a part of it, written into `OUT/_tmp/parts/K/` for join."""

    shard_id: int
    feather: str
    start: int
    stop: int
    folder: str
    whole: bool = True


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
    run = functools.partial(_run_pieces, section, out_dir)
    try:
        batch: list = []
        for shard in _shard_files(input_dir, tmp, section.samples_per_shard, done_shards,
                                  start_shard_id):
            batch.append(shard)
            if len(batch) == SHARDS_PER_JOB:
                _run_batch(spark, run, batch, pool, out_dir)
                batch = []
        if batch:
            _run_batch(spark, run, batch, pool, out_dir)
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path, recursive=True)
    write_card(out_dir, "download")


def _shard_files(input_dir: str, tmp: str, per_shard: int, done_shards: set, start_shard_id: int):
    """(shard id, feather path, rows) of each shard to download, one input file read at a
    time."""
    fs, path = storage.filesystem(input_dir)
    shard_id = start_shard_id
    for name in sorted(fs.glob(path.rstrip("/") + "/*.parquet")):
        with fs.open(name, "rb") as handle:
            table = pq.read_table(handle, columns=["url", "text", *EXTRA_COLUMNS])
        table = table.rename_columns(["caption" if c == "text" else c
                                      for c in table.column_names]).select(COLUMN_LIST)
        for i in range(math.ceil(table.num_rows / per_shard)):
            if shard_id + i not in done_shards:
                rows = table.slice(i * per_shard, per_shard)
                yield (shard_id + i, _write_shard(rows, f"{tmp}/{shard_id + i}.feather"),
                       rows.num_rows)
        shard_id += math.ceil(table.num_rows / per_shard)


def _write_shard(rows: pa.Table, path: str) -> str:
    with storage.open_file(path, "wb") as handle, pa.ipc.new_file(handle, rows.schema) as writer:
        writer.write_table(rows)
    return path


def deal(shards: list, tasks: int, out_dir: str) -> list[list[Piece]]:
    """The shards' rows in `tasks` even, contiguous runs, as pieces: a shard that a run's end
    cuts is split in parts, each in its own folder under `OUT/_tmp/parts/`."""
    total = sum(rows for _, _, rows in shards)
    tasks = max(1, min(tasks, total))
    bounds = [round(k * total / tasks) for k in range(1, tasks)]  # where task k+1 starts
    groups: list[list[Piece]] = [[] for _ in range(tasks)]
    offset = 0
    for shard_id, feather, rows in shards:
        cuts = [0, *(b - offset for b in bounds if offset < b < offset + rows), rows]
        for part, (start, stop) in enumerate(zip(cuts, cuts[1:])):
            task = bisect.bisect_right(bounds, offset + start)
            if len(cuts) == 2:
                groups[task].append(Piece(shard_id, feather, start, stop, out_dir))
            else:
                folder = f"{out_dir.rstrip('/')}/_tmp/parts/{part}"
                groups[task].append(Piece(shard_id, feather, start, stop, folder, False))
        offset += rows
    return [group for group in groups if group]


def _run_batch(spark, run, shards: list, pool, out_dir: str) -> None:
    """Run the shards, dealt to as many tasks as Spark has cores (each task downloads its
    pieces one after the other, the next starting while the last answers of the one before
    come in: a shard's slowest URLs no longer idle its process); pieces a failed task left
    unfinished run once more (as img2dataset's retrier); then the split shards are joined."""
    cores = _cores(spark)
    groups = deal(shards, cores, out_dir)
    pieces = [piece for group in groups for piece in group]
    for folder in {piece.folder for piece in pieces if not piece.whole}:
        fs, path = storage.filesystem(folder)
        fs.makedirs(path, exist_ok=True)
    for _ in range(SHARD_RETRIES + 1):
        if not groups:
            break
        if pool is not None:
            failed = list(pool.map(run, groups))
        else:
            failed = spark.sparkContext.parallelize(groups, len(groups)).map(run).collect()
        failed = [piece for group in failed for piece in group]
        groups = [failed[i::cores] for i in range(min(cores, len(failed)))]
    parts: dict = {}
    for piece in pieces:
        if not piece.whole:
            parts.setdefault(piece.shard_id, []).append(piece.folder)
    for shard_id, folders in parts.items():
        if all(storage.exists(_stats_path(folder, shard_id)) for folder in folders):
            join(folders, out_dir, shard_id)
    # what is still missing is reported by the stage (shards without `_stats.json`)


def _stats_path(folder: str, shard_id: int) -> str:
    return f"{folder.rstrip('/')}/{storage.shard_name(shard_id)}_stats.json"


def _local_without_jvm(spark) -> bool:
    """A local master whose session (a LazySession) has not started."""
    return not getattr(spark, "started", True) and spark.master.startswith("local")


def _cores(spark) -> int:
    if hasattr(spark, "default_parallelism"):  # a LazySession: no session started for it
        return spark.default_parallelism
    return spark.sparkContext.defaultParallelism


def _run_pieces(section, out_dir: str, pieces: list) -> list:
    """Download `pieces` in this task; those left unfinished (the task failed), for a retry."""
    from wit_builder.download import engine  # in the executors only

    try:
        engine.download_shards(section, out_dir, COLUMN_LIST, pieces)
        return []
    except Exception:  # noqa: BLE001 - reported by the stage if the retry fails too
        import traceback

        traceback.print_exc()
        return [p for p in pieces if not storage.exists(_stats_path(p.folder, p.shard_id))]
