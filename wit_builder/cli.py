"""`wit-builder`: a subcommand per stage (from the registry in registry.py) and per tool.

Argument parsing only; the work lives in the modules. Flags that mirror a config key become
`section.key=value` overrides, so the command line, `--set` and the TOML file go through the
same validation in config.py, and help texts show the defaults config.py holds. Long because
it is a flat list of the tool commands' parsers (the stage commands are one generic parser).
"""

from __future__ import annotations

import argparse
import sys

from wit_builder import __version__, pipeline, registry, storage
from wit_builder.config import describe, load_config
from wit_builder.safety import Refused, parse_networks
from wit_builder.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse with two differences: an option is only ever its whole name (`--conf` on a
    command without it must not be read as `--config`: allow_abbrev=False; subcommands inherit
    the class), and an argument error is one `error:` line, exit 2, like a UserError, that
    never repeats the values it was given (`--conf spark.hadoop.fs.s3a.secret.key=...`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            options = [a.split("=", 1)[0] for a in extra if a.startswith("-")]
            named = f" {', '.join(options)}" if options else ""
            command = " ".join(filter(None, (self.prog, getattr(parsed, "command", None),
                                             getattr(parsed, "queries_command", None))))
            self.exit(2, f"error: unrecognized argument(s){named} ({len(extra)} in all; values "
                         f"not shown; see {command} --help)\n")
        return parsed

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _command(sub, name: str, help_text: str, config: bool = True, spark: bool = False):
    """A subcommand with the options that act on it: --config/--set where the config is read,
    --master/--conf/--force where Spark runs stages, --debug everywhere."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(_keys={})
    g = p.add_argument_group("common options")
    if config:
        g.add_argument("--config", metavar="FILE", help="TOML config (a section per stage)")
        g.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                       dest="overrides", help="override a config key (repeatable)")
    if spark:
        g.add_argument("--master", metavar="URL", help="Spark master (default local[*])")
        g.add_argument("--conf", metavar="KEY=VALUE", action="append", default=[],
                       dest="spark_conf", help="a Spark setting, as spark-submit's --conf "
                       "(repeatable; adds to [spark] extra_conf)")
        g.add_argument("--force", action="store_true", help="redo stages even when up to date")
        _flag(p, "--log-level", "spark.log_level", "Spark's log level (empty: Spark's own)",
              group=g)
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _flag(parser, flag: str, key: str, help: str, group=None, **kwargs):
    """An option that overrides config key `key` when given; its help shows the config's
    default and allowed values."""
    action = (group or parser).add_argument(flag, default=None, help=f"{help} ({describe(key)})",
                                            **kwargs)
    parser.set_defaults(**{"_keys": {**parser.get_default("_keys"), action.dest: key}})


def _conf_overrides(args) -> list[str]:
    """--conf KEY=VALUE as `spark.extra_conf` overrides (config.py checks their form)."""
    return [f"spark.extra_conf.{item}" for item in getattr(args, "spark_conf", [])]


def _session(args, cfg):
    """The Spark session, started on first use, after every check that needs no Spark."""
    from wit_builder.spark import lazy_from_config

    return lazy_from_config(cfg, args.master)


# --- the stages, one subcommand each, from the registry -------------------------------------

def _add_stage(sub, stage):
    p = _command(sub, stage.name, stage.help, spark=True)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help=stage.reads)
    for option in stage.options:
        _flag(p, option.flag, option.key, option.help, **option.kwargs)
    p.add_argument("--out", required=True, help=f"output root; writes OUT/{stage.name}")
    p.set_defaults(func=_cmd_stage)


def _cmd_stage(args, cfg):
    storage.check_writable(args.out)
    checked = pipeline.check(cfg, [args.command], args.input)
    pipeline.run_chain(_session(args, cfg), cfg, [args.command], args.input, args.out,
                       force=args.force, checked=checked)


def _add_curate(sub):
    p = _command(sub, "curate", f"{' -> '.join(registry.CURATE)} in one Spark session",
                 spark=True)
    p.add_argument("--input", nargs="+", help="crawl or candidate inputs (not with --from)")
    _flag(p, "--format", "extract.format", "input format")
    _flag(p, "--queries", "match.queries", "query list")
    p.add_argument("--out", required=True, help="output root")
    p.add_argument("--from", dest="start", choices=registry.CURATE,
                   help="start at this stage, reading the previous stage's output in OUT")
    p.add_argument("--until", choices=registry.CURATE, help="stop after this stage")
    p.set_defaults(func=_cmd_curate)


def _cmd_curate(args, cfg):
    storage.check_writable(args.out)
    summary = pipeline.curate(cfg, args.input, args.out, start=args.start, until=args.until,
                              force=args.force, spark=_session(args, cfg))
    pipeline.print_summary(summary)


def _add_run(sub):
    p = _command(sub, "run", f"{' -> '.join(registry.NAMES)} from one config", spark=True)
    _flag(p, "--input", "run.input", "inputs, comma-separated")
    _flag(p, "--format", "extract.format", "input format")
    _flag(p, "--queries", "match.queries", "query list")
    _flag(p, "--out", "run.out", "output root")
    _flag(p, "--until", "run.until", "last stage to run")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args, cfg):
    pipeline.run_pipeline(cfg, spark=_session(args, cfg), force=args.force)


# --- queries ------------------------------------------------------------------------------

def _add_queries(sub):
    p = sub.add_parser("queries", help="build the query list (Wikipedia, bigrams, titles, WordNet)")
    qsub = p.add_subparsers(dest="queries_command", required=True, metavar="{build}")
    b = _command(qsub, "build", "build a query list from its sources")
    _flag(b, "--wiki-unigrams", "queries.wiki_unigrams", "word<TAB>count file", metavar="FILE")
    _flag(b, "--unigram-min-count", "queries.unigram_min_count", "keep words seen at least N times", metavar="N")
    _flag(b, "--bigram-corpus", "queries.bigram_corpus", "text corpus for PMI bigrams (json/jsonl/txt, optionally .gz)", metavar="FILE")
    _flag(b, "--bigram-min-count", "queries.bigram_min_count", "pairs seen at least N times", metavar="N")
    _flag(b, "--bigram-min-pmi", "queries.bigram_min_pmi", "natural log", metavar="X")
    _flag(b, "--titles", "queries.titles", "title files, original-case ones first", metavar="FILE[,FILE]")
    _flag(b, "--title-min-views", "queries.title_min_views", "for title files with view counts", metavar="N")
    _flag(b, "--wordnet", "queries.wordnet", "WordNet synsets (needs NLTK_DATA)", metavar="true|false")
    _flag(b, "--wordnet-lemmas", "queries.wordnet_lemmas", "every lemma name of a synset, or only its first", metavar="all|first")
    _flag(b, "--max-entries", "queries.max_entries", "cap", metavar="N")
    b.add_argument("--format", choices=["json", "metaclip"], default="json",
                   help="json: ours, with sources and parameters; metaclip: a JSON list of strings")
    b.add_argument("--out", required=True, help="query list to write (.json, or .json.gz to gzip)")
    b.set_defaults(func=_cmd_queries_build)


def _cmd_queries_build(args, cfg):
    from wit_builder.queries.build import build_to

    build_to(cfg.queries, args.out, args.format)


# --- stats / train / eval -------------------------------------------------------------------

def _add_stats(sub):
    p = _command(sub, "stats", "statistics of any stage output or shard folder")
    p.add_argument("path", help="a stage output, shard folder or output root (local or s3://)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args, cfg):
    from wit_builder.stats import report

    report.command(args.path, as_json=args.json, html_file=args.html, top=cfg.stats.top_entries)


def _add_train_tokenizer(sub):
    p = _command(sub, "train-tokenizer", "train the byte-level BPE on shard captions",
                 config=False)
    p.add_argument("--shards", required=True, help="shard pattern, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="tokenizer.json to write (or a folder for it)")
    p.add_argument("--vocab-size", type=int, default=49408, help="ids including specials (default %(default)s)")
    p.add_argument("--max-captions", type=int, default=1_000_000, help="captions read (default %(default)s)")
    p.set_defaults(func=_cmd_train_tokenizer)


def _cmd_train_tokenizer(args, cfg):
    from wit_builder.clip.train import train_tokenizer

    print(train_tokenizer(args.shards, args.out, args.vocab_size, args.max_captions))


def _add_train(sub):
    p = _command(sub, "train", "train a compact CLIP on WebDataset shards (several GPUs: "
                 "torchrun --nproc-per-node N -m wit_builder.cli train ...); options are the "
                 "config's [train] section")
    p.add_argument("--shards", required=True,
                   help="shard pattern(s), '::'-separated, local or s3://, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="run folder, local or s3://: *.pt checkpoints, LATEST.pt, "
                   "tokenizer.json, log.jsonl (on S3 rewritten at each checkpoint)")
    o = lambda flag, help, **kw: _flag(p, flag, "train." + flag[2:].replace("-", "_"), help, **kw)  # noqa: E731
    o("--model", "tiny | small | ViT-B-32 | a JSON model config")
    o("--steps", "optimizer steps (the schedule's length)", type=int)
    o("--max-minutes", "stop with a checkpoint after this wall-clock budget (0: no budget)", type=float)
    o("--batch-size", "pairs per GPU/process per micro-batch", type=int)
    o("--accum", "micro-batches per step: gradient accumulation only, the contrastive negatives "
      "stay within each micro-batch (the loss sees batch-size x GPUs pairs, not x accum)", type=int)
    o("--lr", "peak learning rate", type=float)
    o("--warmup", "linear warmup steps before the cosine decay", type=int)
    o("--weight-decay", "AdamW weight decay (not on gains, biases, logit scale)", type=float)
    o("--grad-clip", "gradient norm clip", type=float)
    o("--device", "cpu, cuda, cuda:1 ... or auto: cuda if available (under torchrun each process "
      "takes cuda:LOCAL_RANK)")
    o("--workers", "data loader processes per GPU/process", type=int)
    o("--threads", "CPU training: torch threads (0: cores minus workers)", type=int)
    o("--shuffle-buffer", "samples in each worker's shuffle buffer", type=int)
    o("--min-crop", "random crops keep at least this fraction of the image area", type=float)
    o("--seed", "initialisation and data order seed", type=int)
    o("--save-every", "checkpoint every N steps", type=int)
    o("--keep", "step checkpoints kept (0: all)", type=int)
    o("--log-every", "progress line and log.jsonl record every N steps", type=int)
    o("--val-data", "captions TSV (path<TAB>caption, as eval --retrieval) for retrieval R@1/R@5 "
      "image->text and text->image in log.jsonl and the progress line", metavar="CAPTIONS_TSV")
    o("--val-every", "validate on --val-data every N steps and at the end", type=int, metavar="N")
    o("--precision", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=["auto", "bf16", "fp32"])
    o("--compile", "torch.compile the model", action="store_true")
    o("--tokenizer", "tokenizer.json or CLIP's bpe_simple_vocab_16e6.txt.gz; unset: trained on the shards")
    o("--resume", "continue from OUT/LATEST.pt (if any) or from CHECKPOINT", nargs="?", const="auto",
      metavar="CHECKPOINT")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args, cfg):
    from wit_builder.clip.config import TrainConfig
    from wit_builder.clip.train import train

    summary = train(TrainConfig(**cfg.section("train"), shards=args.shards, out=args.out))
    print(f"step {summary['step']}{' (stopped by --max-minutes)' if summary['stopped_early'] else ''}: "
          f"loss {summary['loss']:.4f}, checkpoint {summary['checkpoint']}")


def _add_eval(sub):
    p = _command(sub, "eval", "zero-shot classification and retrieval of a checkpoint",
                 config=False)
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
    p.add_argument("--batch-size", type=int, default=256, help="default %(default)s")
    p.add_argument("--workers", type=int, default=2, help="image loader processes (default %(default)s)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args, cfg):
    from wit_builder.clip.evaluate import evaluate

    evaluate(args.checkpoint, retrieval=args.retrieval, zeroshot=args.zeroshot, templates=args.templates,
             classnames=args.classnames, json_out=args.json_out, device=args.device,
             batch_size=args.batch_size, workers=args.workers)


def _add_export(sub):
    p = _command(sub, "export", "write a checkpoint as a Hugging Face CLIP folder (CLIPModel, "
                 "tokenizer, image processor) that transformers loads without wit-builder", config=False)
    p.add_argument("--checkpoint", required=True, help="a *.pt checkpoint, e.g. runs/x/LATEST.pt")
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, ...)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip reloading the folder and comparing its embeddings with ours")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args, cfg):
    from wit_builder.clip.export import export

    r = export(args.checkpoint, args.out, check=args.check)
    check = f", embeddings within {r['max_abs_diff']:.1e} of ours" if "max_abs_diff" in r else ""
    print(f"exported step {r['step']} to {r['out']} ({r['tokenizer_class']}{check})")


# --- demo / config --------------------------------------------------------------------------

def _add_demo(sub):
    p = _command(sub, "demo", "every stage on a small generated corpus, offline, images served "
                 "on 127.0.0.1; settings from the shipped demo.toml (--config replaces it, --set "
                 "overrides it)", spark=True)
    p.add_argument("--out", default="wit-demo", help="output folder (default ./%(default)s)")
    p.add_argument("--train-steps", type=int, default=150, metavar="N",
                   help="steps of the `tiny` CLIP training run (default %(default)s, batch 64)")
    p.add_argument("--skip-train", action="store_true", help="stop after the stats report")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args, cfg):
    from wit_builder.demo import run as demo
    if args.train_steps < 1:
        raise UserError(f"--train-steps {args.train_steps}: give at least 1 (or --skip-train)")
    storage.check_writable(args.out)
    demo.run(args.out, train_steps=args.train_steps, skip_train=args.skip_train,
             config=args.config, overrides=args.overrides + _conf_overrides(args),
             master=args.master, force=args.force)


def _add_doctor(sub):
    p = _command(sub, "doctor", "check this machine before a run: Python, packages, Java, "
                 "Spark, models, query list, --out, S3, GPU, Chromium")
    _flag(p, "--queries", "match.queries", "query list to check")
    p.add_argument("--out", help="output root to check for write access (default: [run] out)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args, cfg):
    from wit_builder import doctor

    if not doctor.run(cfg, args.out, as_json=args.json):
        sys.exit(1)  # something a run needs is missing: the lines above say what


def _add_config(sub):
    p = _command(sub, "config", "print the effective config (defaults + file + --set) as TOML")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args, cfg):
    from wit_builder.config import to_toml
    print(to_toml(cfg), end="")


# ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wit-builder",
        description="Build CLIP-style WebImageText datasets: crawl -> queries -> shards -> CLIP. "
                    f"Stages: {' -> '.join(registry.NAMES)}.")
    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_queries(sub)
    for stage in registry.STAGES:
        if stage.publishes:  # the report has its own command, on any folder
            _add_stage(sub, stage)
    for add in (_add_curate, _add_stats, _add_train_tokenizer, _add_train, _add_eval, _add_export, _add_run,
                _add_demo, _add_config, _add_doctor):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        overrides = list(getattr(args, "overrides", [])) + _conf_overrides(args)
        for dest, key in (getattr(args, "_keys", None) or {}).items():
            value = getattr(args, dest, None)
            if value is not None:
                overrides.append(f"{key}={value}")
        cfg = load_config(getattr(args, "config", None), overrides)
        # every http(s) read of the command (inputs, listings, models, shards, query lists)
        # connects to public addresses and the configured networks only
        with storage.networks(parse_networks(cfg.download.allow_networks)):
            args.func(args, cfg)
    except (UserError, Refused) as exc:
        if debug:
            raise
        if isinstance(exc, Refused):  # an http(s) read whose host resolved to a refused address
            exc = f"refusing to connect ({exc}; inputs are read from public addresses and " \
                  "[download] allow_networks only)"
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
