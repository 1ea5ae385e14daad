"""`wit-builder run`: curate -> download -> finalize -> stats in one Spark session, one config.

The CLI's `run` and `pipelines/build_wit.py` (the spark-submit entry) both call `run_pipeline`,
so what a cluster runs is what the tests run in local mode. Each stage goes through the stage
runner: an up-to-date stage is skipped, so a failed run resumes where it stopped.
"""

from __future__ import annotations

from typing import Callable

from wit_builder import stages, storage
from wit_builder.pipeline import CHAIN, curate
from wit_builder.errors import UserError

ORDER = ("extract", "match", "filter", "balance", "download", "finalize", "stats")


def run_pipeline(cfg, spark=None, master: str | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> list[stages.StageRun]:
    """Run the stages from extract to `[run] until` on `[run] input`, writing under `[run] out`.

    The config is checked (and an s3:// output bucket probed) before Spark starts; `spark`
    defaults to the session the `[spark]` section describes. Returns the download and finalize
    runs (curate writes its own OUT/curate_summary.json).
    """
    run = cfg.run
    if not run.input:
        raise UserError("nothing to run on: no inputs (set [run] input in the config or give --input)")
    if not run.out:
        raise UserError("no output root (set [run] out in the config or give --out)")
    storage.check_writable(run.out)
    todo = ORDER[:ORDER.index(run.until) + 1]
    curate(cfg, list(run.input), run.out, until=todo[-1] if todo[-1] in CHAIN else CHAIN[-1],
           force=force, log=log, spark=spark, master=master)
    if spark is None:  # the session curate started
        from wit_builder.spark import spark_from_config
        spark = spark_from_config(cfg, master)
    inputs, runs = [storage.join(run.out, CHAIN[-1])], []
    for stage in todo[len(CHAIN):]:
        if stage == "stats":
            write_stats(run.out, cfg, log)
            continue
        runs.append(stages.execute(stage, spark, cfg, inputs, run.out, force=force, log=log))
        inputs = [runs[-1].path]
    return runs


def write_stats(out: str, cfg, log: Callable[[str], None] = print) -> None:
    """OUT/stats/stats.json (and report.html): every stage of this output root."""
    from wit_builder.stats import collect, report

    stats = collect.collect(out, cfg.stats.top_entries)
    target = storage.join(out, "stats")
    storage.write_bytes_atomic(storage.join(target, "stats.json"), collect.to_json(stats).encode())
    if cfg.run.html_report:
        storage.write_bytes_atomic(storage.join(target, "report.html"),
                                   report.render_html(stats).encode())
    log(f"stats: {len(stats['pipeline'])} stages -> {target}")
