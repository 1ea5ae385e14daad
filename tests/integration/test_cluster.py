"""A real Spark standalone cluster on 127.0.0.1 runs the curation pipeline like local mode does.

The master and one worker are started from the pyspark installation with docker/spark-node.sh
(as docker-compose.yml starts them), the docker-compose.yml `submit` command is run with the
master URL and the /data paths swapped for this test's, and the match/filter/balance rows must
equal, row for row, those of the same config run in local mode (different partition counts on
purpose: the output may not depend on how work is split over executors).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest
import yaml

from wit_builder.config import load_config
from wit_builder.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
COMPARED = ("match", "filter", "balance")
# Words common in alt texts: enough matches for balance to have something to cut.
QUERIES = ["logo", "image", "photo", "news", "the", "of", "and", "in", "for", "with", "home",
           "icon", "banner", "a", "to", "on", "by", "new", "from", "at", "is", "de", "your",
           "Wikipedia", "Commons", "map", "city", "people", "water", "book"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_submit_command() -> list[str]:
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    return compose["services"]["submit"]["command"]


def submit_command(master: str, input_dir: str, out_dir: str) -> list[str]:
    """docker-compose.yml's submit command, pointed at this master and these folders."""
    swap = {"spark://spark-master:7077": master, "run.input=/data/input": f"run.input={input_dir}",
            "run.out=/data/out": f"run.out={out_dir}"}
    command = [swap.get(arg, arg) for arg in compose_submit_command()]
    assert command[0] == "spark-submit" and master in command
    return [str(SPARK_HOME / "bin" / "spark-submit")] + command[1:]


def spark_env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIT_SPARK_MASTER", "WIT_DRIVER_MEMORY", "PYSPARK_GATEWAY_PORT")}
    env.update(SPARK_HOME=str(SPARK_HOME), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_HOST="127.0.0.1", SPARK_LOG_DIR=str(tmp / "logs"),
               SPARK_WORKER_DIR=str(tmp / "work"), **extra)
    return env


def wait_for(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, worker dir, env): a master and a 2-core worker, stopped after the module."""
    tmp = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    env = spark_env(tmp, SPARK_MASTER_PORT=str(port), SPARK_MASTER_WEBUI_PORT=str(ui),
                    SPARK_MASTER_URL=f"spark://127.0.0.1:{port}", SPARK_WORKER_CORES="2",
                    SPARK_WORKER_MEMORY="2g", SPARK_WORKER_WEBUI_PORT=str(free_port()))
    node = str(REPO / "docker" / "spark-node.sh")
    started = []
    logs = {}
    try:
        for role in ("master", "worker"):
            logs[role] = open(tmp / f"{role}.log", "wb")
            started.append(subprocess.Popen(["sh", node, role], env=env, stdout=logs[role],
                                            stderr=subprocess.STDOUT))
            if role == "master":
                wait_for(lambda: socket.create_connection(("127.0.0.1", port), 1).close() is None,
                         "the master's port")

        def worker_alive():
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                return json.load(r).get("aliveworkers", 0) >= 1
        wait_for(worker_alive, "the worker to register")
        yield f"spark://127.0.0.1:{port}", tmp / "work", env
    finally:
        for proc in reversed(started):  # spark-node.sh execs java: these are the JVMs
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


def rows(stage_dir: Path) -> list[dict]:
    table = pq.read_table(sorted(stage_dir.glob("*.parquet")))
    return sorted(table.to_pylist(), key=lambda r: (r["uid"], r["url"], r["text"]))


def test_cluster_run_equals_local_run(cluster, spark, shared_data, tmp_path):
    from wit_builder.filter.langid import default_model_path

    master, worker_dir, env = cluster
    inputs = tmp_path / "input"
    inputs.mkdir()
    lines = (shared_data / "candidates" / "alt_text_pairs.jsonl").read_text().splitlines(keepends=True)
    for part in range(2):  # two files: two extract tasks, one on each executor core
        (inputs / f"part{part}.jsonl").write_text("".join(lines[part::2]))
    # The driver's folder holds the query list and the language model under relative paths that
    # mean nothing in an executor's folder: they must reach executors the Spark way.
    driver = tmp_path / "driver"
    (driver / "lid").mkdir(parents=True)
    (driver / "pipelines").symlink_to(REPO / "pipelines")
    shutil.copy(default_model_path(), driver / "lid" / "lid.176.ftz")
    (driver / "queries.json").write_text(json.dumps(QUERIES))
    settings = ["run.until=balance", "balance.t=25"]

    command = submit_command(master, str(inputs), str(tmp_path / "cluster"))
    command += [arg for s in settings + ["match.queries=queries.json", "filter.lid_model=lid/lid.176.ftz",
                                         "spark.shuffle_partitions=3"] for arg in ("--set", s)]
    done = subprocess.run(command, cwd=driver, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert list(worker_dir.glob("app-*")), "no application ran on the worker"

    local = load_config(REPO / "pipelines" / "local.toml", settings + [
        f"run.input={inputs}", f"run.out={tmp_path / 'local'}",
        f"match.queries={driver / 'queries.json'}", f"filter.lid_model={driver / 'lid' / 'lid.176.ftz'}"])
    run_pipeline(local, spark=spark, log=lambda _: None)

    for stage in COMPARED:
        ours, theirs = tmp_path / "cluster" / stage, tmp_path / "local" / stage
        cluster_rows = rows(ours)
        assert cluster_rows, f"{stage}: no rows"
        assert cluster_rows == rows(theirs), f"{stage}: cluster and local rows differ"
        manifests = [json.loads((d / "manifest.json").read_text()) for d in (ours, theirs)]
        for key in ("rows_in", "rows_out", "drops"):
            assert manifests[0][key] == manifests[1][key], (stage, key)
    balance = json.loads((tmp_path / "cluster" / "balance" / "manifest.json").read_text())
    assert balance["drops"].get("balanced_out", 0) > 0  # t=25 cut something: the coin was used
