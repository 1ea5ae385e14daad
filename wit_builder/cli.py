"""`wit-builder`: a subcommand per stage (from the registry in registry.py) and per tool.

Argument parsing only; the work lives in the modules. Flags that mirror a config key become
`section.key=value` overrides, so the command line, `--set` and the TOML file go through the
same validation in config.py, and help texts show the defaults settings.py holds. The stage
commands are one generic parser; the tool commands' parsers are in cli_tools.py.
"""

from __future__ import annotations

import argparse
import sys

from wit_builder import __version__, cli_tools, pipeline, registry, storage
from wit_builder.cli_args import Parser, command, conf_overrides, key_flag
from wit_builder.config import load_config
from wit_builder.safety import Refused, parse_networks
from wit_builder.errors import UserError


def _session(args, cfg):
    """The Spark session, started on first use, after every check that needs no Spark."""
    from wit_builder.spark import lazy_from_config

    return lazy_from_config(cfg, args.master)


# --- the stages, one subcommand each, from the registry -------------------------------------

def _add_stage(sub, stage):
    p = command(sub, stage.name, stage.help, spark=True)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help=stage.reads)
    for option in stage.options:
        key_flag(p, option.flag, option.key, option.help, **option.kwargs)
    p.add_argument("--out", required=True, help=f"output root; writes OUT/{stage.name}")
    p.set_defaults(func=_cmd_stage)


def _cmd_stage(args, cfg):
    storage.check_writable(args.out)
    checked = pipeline.check(cfg, [args.command], args.input)
    pipeline.run_chain(_session(args, cfg), cfg, [args.command], args.input, args.out,
                       force=args.force, checked=checked)


def _add_curate(sub):
    p = command(sub, "curate", f"{' -> '.join(registry.CURATE)} in one Spark session",
                 spark=True)
    p.add_argument("--input", nargs="+", help="crawl or candidate inputs (not with --from)")
    key_flag(p, "--format", "extract.format", "input format")
    key_flag(p, "--queries", "match.queries", "query list")
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
    p = command(sub, "run", f"{' -> '.join(registry.NAMES)} from one config", spark=True)
    key_flag(p, "--input", "run.input", "inputs, comma-separated")
    key_flag(p, "--format", "extract.format", "input format")
    key_flag(p, "--queries", "match.queries", "query list")
    key_flag(p, "--out", "run.out", "output root")
    key_flag(p, "--until", "run.until", "last stage to run")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args, cfg):
    pipeline.run_pipeline(cfg, spark=_session(args, cfg), force=args.force)


# ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="wit-builder",
        description="Build CLIP-style WebImageText datasets: crawl -> queries -> shards -> CLIP. "
                    f"Stages: {' -> '.join(registry.NAMES)}.")
    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_tools.add_queries(sub)
    for stage in registry.STAGES:
        if stage.publishes:  # the report has its own command, on any folder
            _add_stage(sub, stage)
    for add in (_add_curate, cli_tools.add_stats, cli_tools.add_train_tokenizer, cli_tools.add_train,
                cli_tools.add_eval, cli_tools.add_export, _add_run, cli_tools.add_demo,
                cli_tools.add_config, cli_tools.add_doctor):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        overrides = list(getattr(args, "overrides", [])) + conf_overrides(args)
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
