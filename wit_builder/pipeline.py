"""`wit-builder curate`: extract -> match -> filter (+ dedup) -> balance in one Spark session.

Each stage goes through `stages.execute`, so each leaves OUT/<stage> with its manifest and a
rerun skips what is up to date. Balancing counts come after filtering and dedup, as in
CLIP/MetaCLIP. `--from STAGE` starts at STAGE reading OUT/<previous stage>; `--until STAGE`
stops after it. OUT/curate_summary.json lists the stages that led to this run's last output
(run now, up to date, or from an earlier run) with rows in and out and every drop reason, and
checks that the chain accounts for every record: each stage keeps rows_in == rows_out + drops,
and each stage's rows_in equals the previous stage's rows_out.
"""

from __future__ import annotations

from typing import Callable

from wit_builder import stages, storage
from wit_builder.errors import UserError

CHAIN = ["extract", "match", "filter", "balance"]
SUMMARY = "curate_summary.json"


def select_stages(start: str | None, until: str | None) -> list[str]:
    first = CHAIN.index(start) if start else 0
    last = CHAIN.index(until) if until else len(CHAIN) - 1
    if first > last:
        raise UserError(f"--from {start} comes after --until {until} (the order is "
                        f"{' -> '.join(CHAIN)})")
    return CHAIN[first:last + 1]


def _check_queries(cfg, todo: list[str]) -> None:
    """Fail before a long extract when match will not find its query list."""
    if "match" not in todo:
        return
    if not cfg.match.queries:
        raise UserError("curate needs a query list for match (give --queries FILE)")
    if not storage.exists(cfg.match.queries):
        raise UserError(f"query list not found: {cfg.match.queries} (give an existing file to --queries)")


def curate(cfg, inputs: list[str] | None, out: str, start: str | None = None,
           until: str | None = None, force: bool = False, log: Callable[[str], None] = print,
           spark=None, master: str | None = None) -> dict:
    """Check the request, run the chain in one session (`spark` or a new one from the config),
    write and return the summary."""
    todo = select_stages(start, until)
    if todo[0] == "extract":
        if not inputs:
            raise UserError("curate needs --input (crawl or candidate files), or --from a later stage")
    else:
        previous = storage.join(out, CHAIN[CHAIN.index(todo[0]) - 1])
        stages.require_complete(previous)
        inputs = [previous]
    _check_queries(cfg, todo)
    if spark is None:
        from wit_builder.spark import spark_from_config

        spark = spark_from_config(cfg, master)
    statuses = {stage: "earlier run" for stage in CHAIN[:CHAIN.index(todo[0])]}
    for stage in todo:
        run = stages.execute(stage, spark, cfg, inputs, out, force=force, log=log)
        inputs = [run.path]
        statuses[stage] = "up to date" if run.skipped else "ran"
        summary = summarize(out, statuses)  # after each stage: a failed run still leaves one
        storage.write_json_atomic(storage.join(out, SUMMARY), summary)
    return summary


def summarize(out: str, statuses: dict) -> dict:
    """Rows in/out and drops of the stages in `statuses` (stage -> status), and the checks."""
    rows = []
    for stage in [s for s in CHAIN if s in statuses]:
        folder = storage.join(out, stage)
        if not stages.is_complete(folder):
            continue
        manifest = storage.read_json(storage.join(folder, stages.MANIFEST))
        known = {"stage", "rows_in", "rows_out", "drops", "seconds", "started", "finished",
                 "config", "inputs", "versions", "wit_builder_version"}
        rows.append({
            "stage": stage,
            "status": statuses[stage],
            "rows_in": manifest["rows_in"],
            "rows_out": manifest["rows_out"],
            "dropped": sum(manifest["drops"].values()),
            "drops": manifest["drops"],
            "seconds": manifest.get("seconds"),
            "finished": manifest.get("finished"),
            "extra": {k: v for k, v in manifest.items() if k not in known},
        })
    balanced = all(r["rows_in"] == r["rows_out"] + r["dropped"] for r in rows)
    chained = all(b["rows_in"] == a["rows_out"] for a, b in zip(rows, rows[1:])
                  if CHAIN.index(b["stage"]) == CHAIN.index(a["stage"]) + 1)
    return {
        "out": out,
        "stages": rows,
        "input_rows": rows[0]["rows_in"] if rows else 0,
        "output_rows": rows[-1]["rows_out"] if rows else 0,
        "every_row_accounted": balanced and chained,
    }


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
    ok = summary["every_row_accounted"]
    table.caption = ("every row accounted for" if ok else
                     "ROWS NOT ACCOUNTED FOR: a stage's rows_in differs from its rows out + drops "
                     "or from the previous stage's rows out")
    Console().print(table)
