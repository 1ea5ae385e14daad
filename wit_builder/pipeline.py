"""How a chain of stages runs (the stages, their order and options: registry.py).

Every chain goes through `run_chain`: each stage reads the previous one's output, and each goes
through `stages.run_stage`, so each leaves OUT/<stage> with its manifest and a rerun skips what
is up to date. OUT/curate_summary.json (written after each curation stage, so a failed run still
leaves one) lists the stages that led to the last output with rows in and out and every drop
reason, and checks that the chain accounts for every record.
"""

from __future__ import annotations

import uuid
from typing import Callable

from wit_builder import safety, stages, storage
from wit_builder.errors import UserError
from wit_builder.progress import SparkProgress
from wit_builder.registry import BY_NAME, CURATE, NAMES
from wit_builder.spark import lazy_from_config, lazy_session

SUMMARY = "curate_summary.json"


def select(names: tuple, start: str | None, until: str | None) -> list[str]:
    """The stages of `names` from `start` to `until` (both included; None: the ends)."""
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    if first > last:
        raise UserError(f"--from {start} comes after --until {until} (the order is "
                        f"{' -> '.join(names)})")
    return list(names[first:last + 1])


def wanted(cfg, names: list[str], until: str | None = None, out: str | None = None) -> list[str]:
    """`names` less the stages the config does not ask for (an explicit `until` always runs, and
    so does one `used_when_present` whose output OUT holds)."""
    return [n for n in names if n == until or BY_NAME[n].wanted(cfg) or (
        out and BY_NAME[n].used_when_present and stages.is_complete(storage.join(out, n)))]


def previous_output(out: str, name: str) -> str:
    """OUT/<the stage before `name`>, which must have finished."""
    before = storage.join(out, NAMES[NAMES.index(name) - 1])
    stages.require_complete(before)
    return before


def check(cfg, names: list[str], inputs: list[str] | None = None,
          log: Callable[[str], None] = print) -> stages.Plan | None:
    """What can fail before Spark starts: the config of every stage in `names`, and the first
    stage's check on `inputs` (when given), whose Plan the run then uses."""
    for name in names[1:] if inputs is not None else names:
        _check_config(cfg, name)
    return None if inputs is None else plan(cfg, names[0], inputs, log)


def _check_config(cfg, name: str) -> None:
    getattr(BY_NAME[name].module, "check_config", lambda _cfg: None)(cfg)


def plan(cfg, name: str, inputs: list[str], log: Callable[[str], None] = print) -> stages.Plan:
    """Stage `name`'s checks (its config's, then `check` on `inputs`): its Plan. Network inputs
    (and the extra files the output depends on) pass the address rules before anything reads
    them."""
    _check_config(cfg, name)
    allowed = safety.parse_networks(cfg.download.allow_networks)
    safety.check_inputs(inputs, allowed)
    found = BY_NAME[name].module.check(cfg, list(inputs))
    safety.check_inputs(found.extra, allowed)
    for note in found.notes:
        log(f"{name}: {note}")
    return found


def execute(name: str, spark, cfg, inputs: list[str], out: str, force: bool = False,
            log: Callable[[str], None] = print, checked: stages.Plan | None = None) -> stages.StageRun:
    """Run one stage the same way for every command, spark-submit and the demo. `spark`: a
    session, or a LazySession that the stage starts only if it needs Spark; `checked`: the
    stage's Plan for `inputs` when `check` made it already."""
    spark = lazy_session(spark)
    stage = BY_NAME[name]
    module = stage.module
    found = checked or plan(cfg, name, inputs, log)
    if not stage.publishes:  # the report: it writes OUT/stats itself, no manifest
        module.run(stages.Context(spark, cfg, out, log), found)
        return stages.StageRun(name, storage.join(out, name), {}, skipped=False)

    def body(work: str) -> stages.StageResult:
        # The stage's Spark jobs carry one job group, so the manifest can say how many ran.
        group = f"wit-builder-{name}-{uuid.uuid4().hex[:8]}"

        def tag(session) -> None:
            session.sparkContext.setJobGroup(group, f"wit-builder {name}")
        spark.on_start(tag)
        interval = cfg.spark.progress_seconds if stage.task_progress else 0
        jobs = []
        try:
            with SparkProgress(spark, name, interval):
                result = module.run(stages.Context(spark, cfg, work, log), found)
        finally:
            spark.forget(tag)
            if spark.started:
                jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(group)
                spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        result.extra["spark_jobs"] = len(jobs)
        return result

    return stages.run_stage(name, out, cfg.section(name), found.inputs + found.extra, body,
                            force=force, log=log, in_place=getattr(module, "IN_PLACE", False))


def run_chain(spark, cfg, names: list[str], inputs: list[str], out: str, force: bool = False,
              log: Callable[[str], None] = print,
              after: Callable[[stages.StageRun], None] = lambda _run: None,
              checked: stages.Plan | None = None) -> list[stages.StageRun]:
    """Run `names` in order, each reading the previous one's output; `after(run)` follows each
    data stage. `spark` may be a function that makes the session (or a LazySession): it is
    made when a stage first needs it. `checked`: the first stage's Plan (from `check`); each
    later stage is checked on the output before it, as its turn comes."""
    spark = lazy_session(spark)
    runs = []
    for name in names:
        run = execute(name, spark, cfg, inputs, out, force=force, log=log, checked=checked)
        checked = None
        if not BY_NAME[name].publishes:
            continue
        runs.append(run)
        after(run)
        inputs = [run.path]
    return runs


def curate(cfg, inputs: list[str] | None, out: str, start: str | None = None,
           until: str | None = None, force: bool = False, log: Callable[[str], None] = print,
           spark=None, master: str | None = None) -> dict:
    """extract -> match -> filter -> balance (or `start`..`until` of them) in one session;
    writes and returns OUT/curate_summary.json."""
    todo = select(CURATE, start, until)
    if todo[0] == CURATE[0]:
        if not inputs:
            raise UserError("curate needs --input (crawl or candidate files), or --from a later stage")
    elif inputs:
        raise UserError(f"--from {todo[0]} reads the previous stage's output in OUT (drop --input)")
    else:
        inputs = [previous_output(out, todo[0])]
    checked = check(cfg, todo, inputs, log)
    return _curate(spark or lazy_from_config(cfg, master), cfg, todo, checked, out, force, log)


def _curate(spark, cfg, todo: list[str], checked: stages.Plan, out: str, force: bool,
            log: Callable[[str], None]) -> dict:
    """The curation stages `todo`, checked already; OUT/curate_summary.json after each."""
    statuses = {name: "earlier run" for name in CURATE[:CURATE.index(todo[0])]}

    def record(run: stages.StageRun) -> None:
        statuses[run.stage] = "up to date" if run.skipped else "ran"
        storage.write_json_atomic(storage.join(out, SUMMARY), summarize(out, statuses))

    run_chain(spark, cfg, todo, checked.inputs, out, force, log, after=record, checked=checked)
    return summarize(out, statuses)


def run_pipeline(cfg, spark=None, master: str | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> list[stages.StageRun]:
    """`wit-builder run` and pipelines/build_wit.py: the stages from extract to `[run] until` on
    `[run] input`, under `[run] out`; the config is checked (and an s3:// output probed) before
    Spark starts. Returns the runs after curation (curate writes its own summary)."""
    run = cfg.run
    if not run.input:
        raise UserError("nothing to run on: no inputs (set [run] input in the config or give --input)")
    if not run.out:
        raise UserError("no output root (set [run] out in the config or give --out)")
    storage.check_writable(run.out)
    todo = wanted(cfg, select(NAMES, None, run.until), run.until, run.out)
    curated = [n for n in todo if n in CURATE] or [CURATE[0]]
    checked = check(cfg, todo, list(run.input), log)
    session = spark or lazy_from_config(cfg, master)
    _curate(session, cfg, curated, checked, run.out, force, log)
    rest = todo[len(curated):]
    return run_chain(session, cfg, rest, [storage.join(run.out, curated[-1])], run.out, force, log)


def summarize(out: str, statuses: dict) -> dict:
    """Rows in/out and drops of the stages in `statuses` (stage -> status), and the checks."""
    known = {"stage", "rows_in", "rows_out", "drops", "seconds", "started", "finished",
             "config", "inputs", "versions", "wit_builder_version"}
    rows = []
    for name in [s for s in CURATE if s in statuses]:
        folder = storage.join(out, name)
        if not stages.is_complete(folder):
            continue
        manifest = storage.read_json(storage.join(folder, stages.MANIFEST))
        rows.append({
            "stage": name, "status": statuses[name],
            "rows_in": manifest["rows_in"], "rows_out": manifest["rows_out"],
            "dropped": sum(manifest["drops"].values()), "drops": manifest["drops"],
            "seconds": manifest.get("seconds"), "finished": manifest.get("finished"),
            "extra": {k: v for k, v in manifest.items() if k not in known},
        })
    balanced = all(r["rows_in"] == r["rows_out"] + r["dropped"] for r in rows)
    chained = all(b["rows_in"] == a["rows_out"] for a, b in zip(rows, rows[1:])
                  if CURATE.index(b["stage"]) == CURATE.index(a["stage"]) + 1)
    return {"out": out, "stages": rows,
            "input_rows": rows[0]["rows_in"] if rows else 0,
            "output_rows": rows[-1]["rows_out"] if rows else 0,
            "every_row_accounted": balanced and chained}


def print_summary(summary: dict) -> None:
    """A short terminal table: a line per stage, then a line per drop reason."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"curate summary ({summary['out']})", title_justify="left")
    for name, justify in [("stage", "left"), ("status", "left"), ("rows in", "right"),
                          ("rows out", "right"), ("dropped", "right"), ("seconds", "right")]:
        table.add_column(name, justify=justify)
    for row in summary["stages"]:
        table.add_row(row["stage"], row["status"], f"{row['rows_in']:,}", f"{row['rows_out']:,}",
                      f"{row['dropped']:,}", f"{row['seconds'] or 0:.1f}", style="bold")
        for reason, count in row["drops"].items():
            table.add_row("", f"  {reason}", "", "", f"{count:,}", "")
    table.caption = ("every row accounted for" if summary["every_row_accounted"] else
                     "ROWS NOT ACCOUNTED FOR: a stage's rows_in differs from its rows out + drops "
                     "or from the previous stage's rows out")
    Console().print(table)
