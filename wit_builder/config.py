"""One TOML config (its sections and defaults: settings.py), read, checked and printed.

`load_config(path, overrides)` reads the file, applies `section.key=value` overrides from the
command line, and validates: an unknown section or key, or a value of the wrong type or outside
its allowed set, fails fast with a message naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from wit_builder.errors import UserError
from wit_builder.settings import SECTIONS, Config


def _coerce(key: str, value, f: dataclasses.Field, from_cli: bool):
    """Convert `value` (TOML value or override string) to the field's type, or fail naming `key`.
    A list's elements must be of its default's element type (`_element_kind`)."""
    kind = typing.get_type_hints(_section_class(key.split(".")[0]))[f.name]
    try:
        if kind is list:
            if from_cli:
                items = [item.strip() for item in value.split(",") if item.strip()]
            else:
                items = value if isinstance(value, list) else _bad()
            return [_convert(_element_kind(f), item, from_cli) for item in items]
        if kind is dict:
            return dict(value) if isinstance(value, dict) else _bad()
        return _convert(kind, value, from_cli)
    except (ValueError, TypeError):
        if kind is list:
            name, hint = f"list of {_element_kind(f).__name__}", " (comma-separated on the command line)"
        else:
            name, hint = getattr(kind, "__name__", str(kind)), ""
        raise UserError(f"config key {key}: {value!r} is not a valid {name}{hint}") from None


def _element_kind(f: dataclasses.Field) -> type:
    """A list setting's element type: its default's. An empty default holds strings: every
    list setting without a default lists paths, domains, networks or texts."""
    default = f.default_factory()
    return type(default[0]) if default else str


def _convert(kind: type, value, from_cli: bool):
    """One bool, int, float or str value (a string from the command line is parsed as `kind`);
    ValueError when it is not one."""
    from_cli = from_cli and kind is not str
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_cli and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError
    if kind is int:
        if isinstance(value, bool):
            raise ValueError
        return int(value.replace("_", "")) if from_cli else int(value) if isinstance(value, int) else _bad()
    if kind is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value) if from_cli or isinstance(value, (int, float)) else _bad()
    return value if isinstance(value, str) else _bad()


def _bad():
    raise ValueError


def _section_class(name: str):
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}[name]


def _field(key: str) -> dataclasses.Field:
    """The config field `section.key` names, or a user error listing what exists."""
    section_name, _, field_name = key.partition(".")
    if section_name not in SECTIONS or not field_name:
        raise UserError(f"unknown config key {key!r} (sections: {', '.join(SECTIONS)}; "
                        "write section.key)")
    fields = {f.name: f for f in dataclasses.fields(_section_class(section_name))}
    if field_name not in fields:
        raise UserError(f"unknown config key {key!r} (allowed in [{section_name}]: "
                        f"{', '.join(fields)})")
    return fields[field_name]


def describe(key: str) -> str:
    """`default: X` (and the allowed values) of a config key, for help texts."""
    f = _field(key)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    text = f"default: {_toml_value(default)}" if default not in ("", [], {}) else "default: none"
    choices = f.metadata.get("choices")
    if choices:
        text += "; one of " + "|".join(choices)
    return text


def _cli_value(key: str, value: str):
    """A --set value read as a TOML value (["en", "de"], 5, true, "text"); what is not TOML
    stays a string (paths, URLs; a plain string for a list field is split on commas later)."""
    name = _field(key).name
    kind = typing.get_type_hints(_section_class(key.split(".")[0]))[name]
    if kind is str:
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _set(cfg: Config, key: str, value, from_cli: bool = False) -> None:
    section_name, _, field_name = key.partition(".")
    if section_name == "spark" and field_name.startswith("extra_conf."):  # --conf KEY=VALUE
        conf_key = field_name[len("extra_conf."):]
        if not conf_key.startswith("spark.") or not str(value):
            # the value is not repeated: Spark settings hold secrets (fs.s3a.secret.key)
            raise UserError(f"Spark setting {conf_key}: write --conf spark.KEY=VALUE")
        cfg.spark.extra_conf[conf_key] = str(value)
        return
    f = _field(key)
    section = getattr(cfg, section_name)
    converted = _coerce(key, value, f, from_cli)
    choices = f.metadata.get("choices")
    if choices and converted not in choices:
        raise UserError(f"config key {key}: {converted!r} is not allowed (one of: {', '.join(choices)})")
    low = f.metadata.get("min")
    if low is not None and converted < low:
        raise UserError(f"config key {key}: {converted!r} is below the minimum {low}")
    setattr(section, field_name, converted)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then `section.key=value` overrides."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path} (give an existing TOML file to --config)")
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise UserError(f"config file {path} cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
            raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}: save it "
                            "as UTF-8)") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
        for section_name, values in data.items():
            if section_name not in SECTIONS:
                raise UserError(f"unknown config section [{section_name}] in {path} "
                                f"(allowed: {', '.join(SECTIONS)})")
            if not isinstance(values, dict):
                raise UserError(f"config section [{section_name}] in {path} must be a table")
            for key, value in values.items():
                _set(cfg, f"{section_name}.{key}", value)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep and key.startswith("spark.extra_conf."):  # from --conf (cli._conf_overrides)
            raise UserError(f"--conf {key[len('spark.extra_conf.'):]}: write --conf spark.KEY=VALUE")
        if not sep:
            raise UserError(f"--set {item!r}: write section.key=value")
        key, value = key.strip(), value.strip()
        if key.startswith("spark.extra_conf."):
            _set(cfg, key, value)
            continue
        value = _cli_value(key, value)
        _set(cfg, key, value, from_cli=isinstance(value, str))
    return cfg


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(cfg: Config) -> str:
    """The whole config as TOML (`wit-builder config` prints the defaults this way)."""
    lines = []
    for section_name in SECTIONS:
        lines.append(f"[{section_name}]")
        for key, value in cfg.section(section_name).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
