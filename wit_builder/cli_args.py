"""The command line's building blocks: the parser class and the options every command shares."""

from __future__ import annotations

import argparse

from wit_builder.config import describe


class Parser(argparse.ArgumentParser):
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


def command(sub, name: str, help_text: str, config: bool = True, spark: bool = False):
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
        key_flag(p, "--log-level", "spark.log_level", "Spark's log level (empty: Spark's own)",
              group=g)
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def json_flag(parser, what: str) -> None:
    """`--json [FILE]`, one convention for every command that reports: the JSON on stdout
    instead of the human-readable lines, or written into FILE beside them."""
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help=f"{what} as JSON: on stdout instead of the lines, or into FILE")


def key_flag(parser, flag: str, key: str, help: str, group=None, **kwargs):
    """An option that overrides config key `key` when given; its help shows the config's
    default and allowed values."""
    action = (group or parser).add_argument(flag, default=None, help=f"{help} ({describe(key)})",
                                            **kwargs)
    parser.set_defaults(**{"_keys": {**parser.get_default("_keys"), action.dest: key}})


def conf_overrides(args) -> list[str]:
    """--conf KEY=VALUE as `spark.extra_conf` overrides (config.py checks their form)."""
    return [f"spark.extra_conf.{item}" for item in getattr(args, "spark_conf", [])]
