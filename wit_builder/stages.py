"""The stage contract and how a stage's output is published.

A stage's `check(cfg, inputs)` returns a `Plan` (made before Spark starts) and its
`run(ctx, plan)` (ctx: a `Context`) a `StageResult`; `run_stage` publishes what it wrote:
OUT/<stage>/ = output files + manifest.json + _SUCCESS (written last). Generic: it knows no
stage by name (pipeline.py calls it; runner.py is how a stage's work runs on the driver or on
Spark).

A stage is up to date when its `_SUCCESS` exists and its manifest records the same config
section and the same input fingerprints as now; then a rerun skips it. A stage output used as
another stage's input is fingerprinted by its manifest, so redoing an upstream stage makes every
downstream stage stale.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from wit_builder import __version__, staging, storage
from wit_builder.errors import UserError

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"


@dataclass
class StageResult:
    rows_in: int
    rows_out: int
    drops: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # stage-specific figures (records_read, ...)

    def check(self, stage: str) -> None:
        dropped = sum(self.drops.values())
        if self.rows_in != self.rows_out + dropped:
            raise RuntimeError(f"{stage}: rows_in {self.rows_in} != rows_out {self.rows_out} "
                               f"+ drops {dropped}: rows were lost (a bug, please report)")


@dataclass
class Plan:
    """What a stage's `check(cfg, inputs)` found before Spark starts, for its `run(ctx, plan)`."""
    inputs: list[str]  # the data the stage reads
    extra: list[str] = field(default_factory=list)  # other files its output depends on
    detail: Any = None  # the stage's own findings (extract: its files; finalize, score: the tars)
    notes: list[str] = field(default_factory=list)  # lines for the log (inputs passed over)


@dataclass
class Context:
    """What a stage's `run(ctx, plan)` works with: `spark` (a LazySession, started when the
    stage first uses it), the config, `out` (the folder it writes; the runner publishes it)
    and `log` for its messages."""
    spark: Any
    cfg: Any
    out: str
    log: Callable[[str], None] = print


@dataclass
class StageRun:
    stage: str
    path: str
    manifest: dict
    skipped: bool


def is_complete(stage_dir: str) -> bool:
    return storage.exists(storage.join(stage_dir, SUCCESS))


def fingerprint(path: str) -> str:
    """A stage output by its manifest; anything else by its files' sizes and stamps."""
    if is_complete(path):
        read_manifest(path)  # a folder that only looks finished fails here, naming it
        with storage.open_file(storage.join(path, MANIFEST)) as f:
            return "manifest:" + hashlib.sha256(f.read()).hexdigest()[:16]
    digest = hashlib.sha256()
    for f in storage.list_files(path):
        digest.update(f"{f}\t{storage.file_fingerprint(f)}\n".encode())
    return "files:" + digest.hexdigest()[:16]


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("pyspark", "pyarrow", "numpy", "img2dataset", "webdataset", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    return found


def run_stage(stage: str, out: str, config: dict, inputs: list[str],
              body: Callable[[str], StageResult], force: bool = False,
              log: Callable[[str], None] = print, in_place: bool = False) -> StageRun:
    """Run `body(work_dir)` unless OUT/<stage> is up to date; publish its output atomically.

    `in_place=True` is for stages that resume their own partial output (download): they write
    straight into OUT/<stage>, whose `_SUCCESS` is removed first and written again last.
    """
    final = storage.join(out, stage)
    staging.recover_staged(final)  # a killed run's leftovers, before `final` is looked at
    fingerprints = [{"path": p, "fingerprint": fingerprint(p)} for p in inputs]
    if not force and is_complete(final):
        old = _own_manifest(final)
        if old.get("config") == _jsonable(config) and old.get("inputs") == fingerprints:
            log(f"{stage}: up to date, skipped ({final}; --force redoes it)")
            return StageRun(stage, final, old, skipped=True)
        log(f"{stage}: inputs or config changed, redoing")
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    if in_place:
        storage.remove(storage.join(final, SUCCESS))
    with (_in_place(final) if in_place else staging.staging_dir(final)) as work:
        result = body(work)
        result.check(stage)
        manifest = {
            "stage": stage,
            "run_id": uuid.uuid4().hex,  # a redone stage always changes its fingerprint
            "wit_builder_version": __version__,
            "config": _jsonable(config),
            "inputs": fingerprints,
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "drops": dict(sorted(result.drops.items(), key=lambda kv: -kv[1])),
            **result.extra,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - clock, 3),
            "versions": versions(),
        }
        storage.write_json_atomic(storage.join(work, MANIFEST), manifest)
        storage.write_bytes_atomic(storage.join(work, SUCCESS), b"")
    log(f"{stage}: {result.rows_in:,} in -> {result.rows_out:,} out, "
        f"{sum(result.drops.values()):,} dropped ({manifest['seconds']:.1f}s) -> {final}")
    reason, dropped = max(result.drops.items(), key=lambda kv: kv[1], default=("", 0))
    if dropped and 2 * dropped >= result.rows_in:  # a run mostly refused for one reason: say so
        log(f"{stage}: {dropped / result.rows_in:.0%} of the rows were dropped as {reason}"
            + (f"; {DROP_HINTS[reason]}" if reason in DROP_HINTS else ""))
    return StageRun(stage, final, manifest, skipped=False)


# What to change when most of a run is dropped for one reason (by drop reason).
DROP_HINTS = {
    "blocked_address": "their hosts resolve to private, loopback or reserved addresses; to "
                       "fetch from such a network on purpose, allow it with "
                       "--set 'download.allow_networks=[\"10.0.0.0/8\"]' (its CIDR)",
    "robots_txt": "the sites' robots.txt disallow our user agent (download.user_agent)",
    "dns_error": "their host names do not resolve here: check this machine's DNS",
    "timeout": "the servers answer slowly: raise download.total_timeout or download.timeout",
    "language": "the texts are not in filter.languages",
    "no_match": "no query of the list matched the texts (match --queries)",
}


@contextmanager
def _in_place(final: str):
    fs, p = storage.filesystem(final)
    fs.makedirs(p, exist_ok=True)
    yield final


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def read_manifest(stage_dir: str) -> dict:
    """A stage folder's manifest (a JSON object), or a user error naming the folder: a garbage
    manifest.json makes no stage output."""
    try:
        manifest = json.loads(storage.read_text(storage.join(stage_dir, MANIFEST)))
    except ValueError:  # not JSON, or not UTF-8
        manifest = None
    if not isinstance(manifest, dict):
        raise UserError(f"{stage_dir}: {MANIFEST} is not a stage manifest (a JSON object; rerun "
                        "the stage that wrote it, or remove it if this is a folder of plain files)")
    return manifest


def _own_manifest(final: str) -> dict:
    """The manifest of the output a stage is about to redo or skip; one that is not readable
    only makes the stage redo its output."""
    try:
        return read_manifest(final)
    except UserError:
        return {}


def require_complete(stage_dir: str) -> dict:
    """The manifest of a finished stage output, or a user error saying what to run."""
    if not storage.exists(stage_dir):
        raise UserError(f"input not found: {stage_dir} (run the previous stage first)")
    if not is_complete(stage_dir):
        raise UserError(f"{stage_dir} has no {SUCCESS}: that stage did not finish "
                        "(rerun it; --force redoes it)")
    return read_manifest(stage_dir)


def stage_parts(stage_dir: str) -> list[str]:
    """A finished stage's Parquet part files (its top-level *.parquet), or a user error when it
    has none (a shard folder given where rows are read)."""
    require_complete(stage_dir)
    files = storage.list_files(storage.join(stage_dir, "*.parquet"))
    if not files:
        raise UserError(f"{stage_dir} holds no Parquet rows (give a stage output with rows: "
                        "extract, match, filter or balance)")
    return files


def read_stage(spark, stage_dir: str):
    """A finished stage's Parquet rows as a DataFrame (manifest and markers left out)."""
    # The files by name, not a glob: Spark looks for a streaming `_spark_metadata` folder under
    # a glob path and logs a page of stack trace at WARN when there is none.
    return spark.read.parquet(*[storage.spark_path(f) for f in stage_parts(stage_dir)])
