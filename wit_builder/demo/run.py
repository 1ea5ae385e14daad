"""`wit-builder demo`: every stage, offline, on a corpus the demo generates, in a few minutes.

1. Draw a few hundred shape pictures and the web pages that show them (corpus.py); serve
   them from a thread on 127.0.0.1; save the pages as a crawler would, in a WARC.
2. extract -> match -> filter -> balance -> download -> finalize, through `pipeline.run_chain`
   exactly as the CLI runs them, with `demo/data/demo.toml` (the defaults scaled down) and the
   small query list `demo/data/queries.json`.
3. The stats report (HTML), a short `tiny` CLIP training run on the final shards, and zero-shot
   (colour and shape) and retrieval eval on held-out pictures.
4. Print where everything is and the commands that do the same on real data.

Rerunning with the same OUT skips the stages that are up to date (the pictures, pages and WARC
come out byte for byte the same when the server gets the same port back).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from wit_builder import pipeline, registry, stages, storage
from wit_builder.config import load_config
from wit_builder.demo.corpus import write_site, write_warc

DATA = Path(__file__).parent / "data"
DEMO_CONFIG = DATA / "demo.toml"
QUERIES = DATA / "queries.json"
METADATA_ADDRESS = "http://169.254.169.254/latest/meta-data/"


class _Handler(SimpleHTTPRequestHandler):
    """Static files, plus two routes a real web has: an AI opt-out header and a rogue redirect."""

    def do_GET(self):
        if self.path.startswith("/redirect/"):  # the download stage must refuse to follow it
            self.send_response(302)
            self.send_header("Location", METADATA_ADDRESS)
            self.end_headers()
            return
        super().do_GET()

    def end_headers(self):
        if self.path.startswith("/img/noai/"):
            self.send_header("X-Robots-Tag", "noai")
        super().end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path, port: int = 0):
    """Serve `folder` on 127.0.0.1 from a daemon thread; yields the base URL.

    `port` is tried first (the previous run's, so its WARC stays valid), then any free port.
    """
    handler = partial(_Handler, directory=str(folder))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-image-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo_config(out: Path, config: str | None = None, overrides: list[str] | None = None):
    """demo.toml (or the user's file) and --set overrides; the generated paths fill what is unset."""
    cfg = load_config(config or DEMO_CONFIG, overrides)
    cfg.match.queries = cfg.match.queries or str(QUERIES)
    cfg.finalize.eval_image_folders = (cfg.finalize.eval_image_folders
                                       or [str(out / "corpus" / "eval" / "images")])
    return cfg


def run(out: str | Path = "wit-demo", train_steps: int = 150, skip_train: bool = False,
        config: str | None = None, overrides: list[str] | None = None, master: str | None = None,
        force: bool = False, spark=None, log=print) -> dict:
    """The whole demo; returns the paths it wrote. `spark`: reuse a session (tests)."""
    from wit_builder.spark import lazy_from_config

    started = time.monotonic()
    out = Path(out).resolve()
    corpus = out / "corpus"
    cfg = demo_config(out, config, overrides)
    log(f"demo: generating the corpus under {corpus}")
    pages = write_site(corpus)
    port_file = corpus / "port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    paths = {"out": str(out), "corpus": str(corpus)}
    with serve(corpus / "site", port) as base_url:
        port_file.write_text(base_url.rsplit(":", 1)[1])
        warc = corpus / "crawl" / "shapes.warc.gz"
        write_warc(warc, corpus / "site", base_url, pages)
        log(f"demo: {len(pages)} pages in {warc}, images served at {base_url}/img/")
        runs = pipeline.run_chain(spark or lazy_from_config(cfg, master), cfg,
                                  pipeline.wanted(cfg, list(registry.DATA)), [str(warc.parent)], str(out),
                                  force=force, log=log)
        paths.update({run.stage: run.path for run in runs})

    from wit_builder.stats.report import command as stats_command
    paths["report"] = str(out / "report.html")
    stats_command(str(out), html_file=paths["report"], top=cfg.stats.top_entries)

    if not skip_train:
        paths.update(train_and_eval(out, train_steps, log))
    paths["seconds"] = round(time.monotonic() - started, 1)
    log(next_steps(paths))
    return paths


def train_and_eval(out: Path, steps: int, log=print) -> dict:
    """A short `tiny` CLIP run on the final shards, then eval on the held-out pictures."""
    from wit_builder.clip.evaluate import evaluate
    from wit_builder.clip.config import TrainConfig
    from wit_builder.clip.train import train

    shards = storage.list_files(str(out / "finalize"), suffixes=(".tar",))
    run_dir = out / "train"
    shutil.rmtree(run_dir, ignore_errors=True)  # the shards may have changed: start afresh
    log(f"demo: training `tiny` CLIP for {steps} steps on {len(shards)} shards -> {run_dir}")
    summary = train(TrainConfig(shards="::".join(shards), out=str(run_dir), model="tiny",
                                steps=steps, batch_size=64, lr=1e-3, warmup=min(30, steps),
                                weight_decay=0.1, workers=1, shuffle_buffer=500,
                                save_every=steps, keep=1, log_every=max(1, steps // 10)))
    held_out = out / "corpus" / "eval"
    results = {"train": summary}
    for task, labels, templates in (("colour", "colour_labels.tsv", "colour_templates.json"),
                                    ("shape", "shape_labels.tsv", "shape_templates.json")):
        results[task] = evaluate(summary["checkpoint"],
                                 retrieval=str(held_out / "captions.tsv") if task == "colour" else None,
                                 zeroshot=str(held_out / labels), templates=str(DATA / templates),
                                 workers=0)
    eval_json = out / "eval.json"
    storage.write_json_atomic(str(eval_json), results)
    return {"checkpoint": summary["checkpoint"], "eval": str(eval_json)}


def next_steps(paths: dict) -> str:
    out = paths["out"]
    lines = [
        "",
        f"demo: done in {paths['seconds']:.0f}s. Outputs under {out}:",
        "  corpus/              the generated pages, WARC and held-out eval pictures",
        *(f"  {stage + '/':<21}{_summary(paths[stage])}" for stage in registry.DATA if stage in paths),
        f"  report.html          the stats report: open {paths['report']} in a browser",
    ]
    if "eval" in paths:
        lines += ["  train/               the `tiny` CLIP checkpoints (LATEST.pt)",
                  f"  eval.json            zero-shot and retrieval on held-out pictures: "
                  f"{_eval_summary(paths['eval'])}"]
    lines += [
        "",
        "Next, the same on real data (README.md has the details):",
        "  # candidates from Common Crawl's WAT files, matched, filtered, balanced to t = 20,000",
        "  curl -O https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/wat.paths.gz",
        "  wit-builder curate --input wat.paths.gz --set extract.listing_prefix=s3://commoncrawl/ \\",
        "      --queries query_lists/wit-queries-en.json.gz --out OUT",
        "  wit-builder download --input OUT/balance --out OUT",
        "  wit-builder finalize --input OUT/download --out OUT",
        "  wit-builder stats OUT --html OUT/report.html",
        "  wit-builder train --shards 'OUT/finalize/{00000..NNNNN}.tar' --model small --out runs/x",
        "  # on a Spark cluster: add --master spark://HOST:7077 to the commands above, or run all",
        "  # stages from one config (set its input and out paths first):",
        "  spark-submit --master spark://HOST:7077 --packages org.apache.hadoop:hadoop-aws:3.5.0 \\",
        "      pipelines/build_wit.py --config pipelines/cluster.toml",
        f"  # the demo's settings, a small example config: {DEMO_CONFIG}",
    ]
    return "\n".join(lines)


def _summary(stage_dir: str) -> str:
    m = storage.read_json(storage.join(stage_dir, stages.MANIFEST))
    drops = ", ".join(f"{k} {v}" for k, v in m["drops"].items())
    return f"{m['rows_in']} in -> {m['rows_out']} out" + (f" (dropped: {drops})" if drops else "")


def _eval_summary(eval_json: str) -> str:
    r = json.loads(Path(eval_json).read_text())
    colour, shape = r["colour"]["zeroshot"], r["shape"]["zeroshot"]
    return (f"colour top-1 {_pct(colour)} (chance {100 / colour['classes']:.0f}%), "
            f"shape top-1 {_pct(shape)} (chance {100 / shape['classes']:.0f}%)")


def _pct(metrics: dict) -> str:
    return f"{100 * metrics['top1']:.0f}%"
