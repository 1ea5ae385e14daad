"""The docker files, checked without a docker engine (none on our machines).

What can drift is checked here: the files they copy exist, the versions they install agree with
pyproject.toml, CI and the installed pyspark, and the commands they run are the tested ones
(the cluster test runs the compose file's own submit command and spark-node.sh).
"""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def args_of(dockerfile: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in instructions(dockerfile) if op == "ARG" and "=" in a)


def dependency_spec(name: str, extra: str | None = None) -> SpecifierSet:
    deps = PYPROJECT["project"]["optional-dependencies"][extra] if extra else \
        PYPROJECT["project"]["dependencies"]
    for dep in deps:
        match = re.match(rf"^{re.escape(name)}\s*([<>=!~].*)$", dep)
        if match:
            return SpecifierSet(match.group(1))
    raise AssertionError(f"{name} not in pyproject.toml")


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.mark.parametrize("name", ["Dockerfile.spark", "Dockerfile.train"])
def test_copied_files_exist_and_python_matches(name):
    dockerfile = DOCKER / name
    steps = instructions(dockerfile)
    for op, arguments in steps:
        if op == "COPY":
            *sources, _target = shlex.split(arguments)
            for source in sources:
                assert (REPO / source).exists(), f"{name} copies {source}, which is not in the repo"
    base = next(a for op, a in steps if op == "FROM")
    python = re.match(r"python:(\d+\.\d+)", base).group(1)
    assert Version(python) in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert f"python{python}" in (DOCKER / name).read_text() or name == "Dockerfile.train"
    # the package is installed from this checkout with the tested pins (constraints.txt)
    assert any(op == "RUN" and re.search(r"pip install -c constraints\.txt \"?\.(\[|\"| |$)", a)
               for op, a in steps)
    assert any(op == "COPY" and "constraints.txt" in a.split() for op, a in steps)


def test_spark_image_matches_ci_java_and_the_installed_spark():
    import pyspark

    text = (DOCKER / "Dockerfile.spark").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    java = re.search(r"openjdk-\d+-jre-headless", text).group(0)
    assert java in ci, "the image's Java is not the one CI tests with"
    assert Version(pyspark.__version__) in dependency_spec("pyspark")
    # hadoop-aws must be the Hadoop version bundled with pyspark, or s3a:// fails at class loading
    jars = Path(pyspark.__file__).parent / "jars"
    hadoop = sorted(re.match(r"hadoop-client-api-(.+)\.jar", p.name).group(1)
                    for p in jars.glob("hadoop-client-api-*.jar"))
    assert len(hadoop) == 1
    # the image reads the version from the pinned pyspark's own jar, as this test does
    assert re.search(r'hadoop-client-api-\*\.jar.*HADOOP_AWS_VERSION|HADOOP_AWS_VERSION="\$\(ls '
                     r'"\$\{SPARK_HOME\}"/jars/hadoop-client-api-\*\.jar', text)
    assert "HADOOP_AWS_VERSION=3" not in text  # no hard-coded version to drift
    pinned = re.search(r"^pyspark==(.+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert Version(pinned) == Version(pyspark.__version__)
    documented = re.findall(r"hadoop-aws:([\w.]+)", (REPO / "pipelines" / "cluster.toml").read_text())
    assert documented and set(documented) == set(hadoop)


def test_train_image_entry_point_runs_torchrun_for_several_processes(tmp_path):
    """train-entry.sh, run here with stand-ins for wit-builder and torchrun on PATH."""
    steps = instructions(DOCKER / "Dockerfile.train")
    assert ("ENTRYPOINT", '["train-entry.sh"]') in steps
    for tool in ("wit-builder", "torchrun"):
        (tmp_path / tool).write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    run = lambda **extra: subprocess.run(  # noqa: E731
        ["sh", str(DOCKER / "train-entry.sh"), "train", "--steps", "5"], env={**env, **extra},
        capture_output=True, text=True, check=True).stdout.strip()
    assert run() == "wit-builder train --steps 5"
    assert run(NPROC="4") == ("torchrun --standalone --nproc-per-node 4 -m wit_builder.cli "
                              "train --steps 5")
    assert "--shm-size" in (DOCKER / "Dockerfile.train").read_text()


def test_build_context_leaves_out_environments_and_outputs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "wit-demo", "out", "runs", ".git"} <= ignored
    for op, arguments in instructions(DOCKER / "Dockerfile.spark") + \
            instructions(DOCKER / "Dockerfile.train"):
        if op == "COPY":
            assert not any(source.split("/")[0] in ignored for source in shlex.split(arguments)[:-1])


def test_train_image_torch_is_the_ci_pin():
    torch = args_of(DOCKER / "Dockerfile.train")["TORCH_VERSION"]
    ci = (REPO / ".ci" / "run").read_text()
    assert f"torch=={torch}" in ci
    assert Version(torch) in dependency_spec("torch", extra="train")


def test_image_build_checks_run_here():
    """The python one-liners the images run at build time (model present, CLI works) pass here."""
    snippets = [m.group(1) for op, a in instructions(DOCKER / "Dockerfile.spark") if op == "RUN"
                for m in re.finditer(r'python3 -c "([^"]+)"', a)]
    assert snippets, "the spark image should check its language model at build time"
    for code in snippets:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_compose_runs_the_tested_commands():
    services = compose()["services"]
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "submit"} <= set(services)
    node_script = "spark-node.sh"
    spark = instructions(DOCKER / "Dockerfile.spark")
    assert any(op == "COPY" and a.startswith(f"docker/{node_script} ") for op, a in spark)
    assert services["spark-master"]["command"] == [node_script, "master"]
    for worker in ("spark-worker-1", "spark-worker-2"):
        assert services[worker]["command"] == [node_script, "worker"]
        assert services[worker]["environment"]["SPARK_MASTER_URL"] == "spark://spark-master:7077"
    for service in services.values():
        assert service["image"] == "wit-builder-spark"
        assert service["build"]["dockerfile"] == "docker/Dockerfile.spark"
        assert (DOCKER / service["build"]["context"]).resolve() == REPO
    submit = services["submit"]["command"]
    assert submit[:3] == ["spark-submit", "--master", "spark://spark-master:7077"]
    # tests/integration/test_cluster.py runs this very command (master and /data paths swapped)
    assert submit[3:] == ["pipelines/build_wit.py", "--config", "pipelines/local.toml",
                          "--set", "run.input=/data/input", "--set", "run.out=/data/out"]
    assert (REPO / submit[3]).is_file() and (REPO / submit[5]).is_file()


def test_configs_load():
    from wit_builder.config import load_config

    for name in ("local.toml", "cluster.toml"):
        cfg = load_config(REPO / "pipelines" / name)
        assert cfg.run.input and cfg.run.out and cfg.match.queries
