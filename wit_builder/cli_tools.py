"""`wit-builder`'s tool commands (queries, stats, train, eval, export, demo, doctor, config):
argument parsing only; the work lives in the modules."""

from __future__ import annotations

import sys

from wit_builder import storage
from wit_builder.cli_args import command, conf_overrides, json_flag, key_flag
from wit_builder.errors import UserError


# --- queries ------------------------------------------------------------------------------

def add_queries(sub):
    p = sub.add_parser("queries", help="build the query list (Wikipedia, bigrams, titles, WordNet)")
    qsub = p.add_subparsers(dest="queries_command", required=True, metavar="{build}")
    b = command(qsub, "build", "build a query list from its sources")
    key_flag(b, "--wiki-unigrams", "queries.wiki_unigrams", "word<TAB>count file", metavar="FILE")
    key_flag(b, "--unigram-min-count", "queries.unigram_min_count", "keep words seen at least N times", metavar="N")
    key_flag(b, "--bigram-corpus", "queries.bigram_corpus", "text corpus for PMI bigrams (json/jsonl/txt, optionally .gz)", metavar="FILE")
    key_flag(b, "--bigram-min-count", "queries.bigram_min_count", "pairs seen at least N times", metavar="N")
    key_flag(b, "--bigram-min-pmi", "queries.bigram_min_pmi", "natural log", metavar="X")
    key_flag(b, "--titles", "queries.titles", "title files, original-case ones first", metavar="FILE[,FILE]")
    key_flag(b, "--title-min-views", "queries.title_min_views", "for title files with view counts", metavar="N")
    key_flag(b, "--wordnet", "queries.wordnet", "WordNet synsets (needs NLTK_DATA)", metavar="true|false")
    key_flag(b, "--wordnet-lemmas", "queries.wordnet_lemmas", "every lemma name of a synset, or only its first", metavar="all|first")
    key_flag(b, "--max-entries", "queries.max_entries", "cap", metavar="N")
    b.add_argument("--format", choices=["json", "metaclip"], default="json",
                   help="json: ours, with sources and parameters; metaclip: a JSON list of strings")
    b.add_argument("--out", required=True, help="query list to write (.json, or .json.gz to gzip)")
    b.set_defaults(func=_cmd_queries_build)


def _cmd_queries_build(args, cfg):
    from wit_builder.queries.build import build_to

    build_to(cfg.queries, args.out, args.format)


# --- stats / train / eval -------------------------------------------------------------------

def add_stats(sub):
    p = command(sub, "stats", "statistics of any stage output or shard folder")
    p.add_argument("path", help="a stage output, shard folder or output root (local or s3://)")
    json_flag(p, "the statistics")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args, cfg):
    from wit_builder.stats import report

    report.command(args.path, json_to=args.json, html_file=args.html, top=cfg.stats.top_entries)


def add_train_tokenizer(sub):
    p = command(sub, "train-tokenizer", "train the byte-level BPE on shard captions",
                 config=False)
    p.add_argument("--shards", required=True, help="shard pattern, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="tokenizer.json to write (or a folder for it)")
    p.add_argument("--vocab-size", type=int, default=49408, help="ids including specials (default %(default)s)")
    p.add_argument("--max-captions", type=int, default=1_000_000, help="captions read (default %(default)s)")
    p.set_defaults(func=_cmd_train_tokenizer)


def _cmd_train_tokenizer(args, cfg):
    from wit_builder.clip.train import train_tokenizer

    print(train_tokenizer(args.shards, args.out, args.vocab_size, args.max_captions))


def add_train(sub):
    p = command(sub, "train", "train a compact CLIP on WebDataset shards (several GPUs: "
                 "torchrun --nproc-per-node N -m wit_builder.cli train ...); options are the "
                 "config's [train] section")
    p.add_argument("--shards", required=True,
                   help="shard pattern(s), '::'-separated, local or s3://, e.g. 'OUT/finalize/{00000..00009}.tar'")
    p.add_argument("--out", required=True, help="run folder, local or s3://: *.pt checkpoints, LATEST.pt, "
                   "tokenizer.json, log.jsonl (on S3 rewritten at each checkpoint)")
    o = lambda flag, help, **kw: key_flag(p, flag, "train." + flag[2:].replace("-", "_"), help, **kw)  # noqa: E731
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


def add_eval(sub):
    p = command(sub, "eval", "zero-shot classification and retrieval of a checkpoint",
                 config=False)
    p.add_argument("--checkpoint", required=True, help="a *.pt checkpoint, e.g. runs/x/LATEST.pt")
    p.add_argument("--retrieval", metavar="CAPTIONS_TSV",
                   help="tab-separated with header path<TAB>caption (several rows per image allowed)")
    p.add_argument("--zeroshot", metavar="DATA", help="labels.tsv (path<TAB>label), a folder per class, "
                   "or WebDataset shards with .cls (needs --classnames)")
    p.add_argument("--templates", help='prompt templates with {c}: {"templates": [...]} or a JSON list')
    p.add_argument("--classnames", help='{"classnames": [...]}, a JSON list or one name per line '
                   "(default: the labels themselves)")
    json_flag(p, "the results")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=256, help="default %(default)s")
    p.add_argument("--workers", type=int, default=2, help="image loader processes (default %(default)s)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args, cfg):
    from wit_builder.clip.evaluate import evaluate

    evaluate(args.checkpoint, retrieval=args.retrieval, zeroshot=args.zeroshot, templates=args.templates,
             classnames=args.classnames, json_to=args.json, device=args.device,
             batch_size=args.batch_size, workers=args.workers)


def add_export(sub):
    p = command(sub, "export", "write a checkpoint as a Hugging Face CLIP folder (CLIPModel, "
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

def add_demo(sub):
    p = command(sub, "demo", "every stage on a small generated corpus, offline, images served "
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
             config=args.config, overrides=args.overrides + conf_overrides(args),
             master=args.master, force=args.force)


def add_doctor(sub):
    p = command(sub, "doctor", "check this machine before a run: Python, packages, Java, "
                 "Spark, models, query list, --out, S3, GPU, Chromium")
    key_flag(p, "--queries", "match.queries", "query list to check")
    p.add_argument("--out", help="output root to check for write access (default: [run] out)")
    json_flag(p, "the checks")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args, cfg):
    from wit_builder import doctor

    if not doctor.run(cfg, args.out, json_to=args.json):
        sys.exit(1)  # something a run needs is missing: the lines above say what


def add_config(sub):
    p = command(sub, "config", "print the effective config (defaults + file + --set) as TOML")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args, cfg):
    from wit_builder.config import to_toml
    print(to_toml(cfg), end="")
