"""The one SparkSession factory: local[*] by default, any master URL for a cluster.

For local runs the Python workers must be this interpreter (the venv that has our package and
img2dataset), so PYSPARK_PYTHON is set to it. On a cluster the executors' Python is the cluster's
business (spark-submit's --conf spark.pyspark.python or the docker image).

S3 from Spark needs hadoop-aws on the classpath (present on EMR/Dataproc/Databricks; elsewhere
add `--packages org.apache.hadoop:hadoop-aws:<hadoop version>`); `s3://` paths are rewritten to
`s3a://` and the endpoint of an S3-compatible store comes from `[spark] s3_endpoint_url`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

from wit_builder import storage
from wit_builder.java import find_java

JAVA_OPTIONS = "spark.driver.extraJavaOptions"
LOG4J2 = """rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
# pyspark counts as Spark's shell, whose level (if not this one) it announces on start-up
logger.repl.name = org.apache.spark.api.python.PythonGatewayServer
logger.repl.level = {level}
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
"""


def get_spark(master: str | None = None, app_name: str = "wit-builder", conf: dict | None = None,
              arrow_batch_rows: int = 10_000, s3_endpoint_url: str = "", ui: bool = True,
              log_level: str = ""):
    """Return this process's SparkSession, creating it on the first call.

    Spark's own defaults and the operator's confs (spark-submit --conf, spark-defaults.conf)
    stand: the web UI is on and the log level is Spark's unless `ui=False` / `log_level` say
    otherwise (the tests and the demo turn the UI off), and our tuning (`_tuning`) gives way to
    the operator's settings of the same keys. `conf` (our config's) wins over both. A new
    session prints its web UI's address.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not _submitted():  # we are about to start the JVM: fail in one line if it cannot start
        find_java()
    master = master_url(master)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: stay on loopback
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_rows))
        .config("spark.python.worker.reuse", "true")  # keeps per-executor caches (automaton, model)
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        # stages.py writes the one _SUCCESS that readers trust, after the manifest
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
        .config("spark.sql.parquet.compression.codec", "zstd")
        # let adaptive execution shrink shuffles of cached frames too (stages cache to count drops)
        .config("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning", "true")
    )
    if not ui:
        builder = builder.config("spark.ui.enabled", "false")
    if master:
        builder = builder.master(master)
    operator = _operator_settings()
    for key, value in _tuning(master).items():
        if key not in operator:
            builder = builder.config(key, value)
    if log_level and not _submitted() and not {JAVA_OPTIONS} & (operator | set(conf or {})):
        # the JVM's own start-up lines too, which setLogLevel comes too late for
        builder = builder.config(JAVA_OPTIONS, f"-Dlog4j2.configurationFile={_log4j2(log_level)}")
    # ours, named for this run: wins over spark-defaults.conf as our config does
    if master.startswith("local") and not _submitted() and os.environ.get("WIT_DRIVER_MEMORY"):
        builder = builder.config("spark.driver.memory", os.environ["WIT_DRIVER_MEMORY"])
    endpoint = s3_endpoint_url or os.environ.get("WIT_S3_ENDPOINT_URL", "")
    if endpoint:
        # s3a for Spark's own I/O; the variable for fsspec here and in the executors' tasks
        os.environ["WIT_S3_ENDPOINT_URL"] = endpoint
        builder = (builder.config("spark.hadoop.fs.s3a.endpoint", endpoint)
                   .config("spark.hadoop.fs.s3a.path.style.access", "true")
                   .config("spark.executorEnv.WIT_S3_ENDPOINT_URL", endpoint))
    for key, value in (conf or {}).items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    if log_level:
        spark.sparkContext.setLogLevel(log_level)
    if spark.sparkContext.uiWebUrl:  # None when the UI is off
        print(f"spark: web UI at {spark.sparkContext.uiWebUrl}", file=sys.stderr)
    return spark


def _log4j2(level: str) -> str:
    """A log4j2 configuration that logs at `level` from the JVM's first line: Spark's own
    default profile, which it announces on start-up, with its root level replaced."""
    path = os.path.join(tempfile.gettempdir(), f"wit-builder-log4j2-{level.lower()}.properties")
    if not os.path.exists(path):
        storage.write_bytes_atomic(path, LOG4J2.format(level=level.lower()).encode())
    return path


def _tuning(master: str) -> dict[str, str]:
    """Settings we prefer where the operator has not made them (see `_operator_settings`)."""
    tuning = {"spark.ui.showConsoleProgress": "true"}
    if master.startswith("local") and not _submitted():  # the JVM we start is all there is
        tuning["spark.driver.memory"] = "4g"
        # Spark's 200 shuffle partitions are sized for clusters; on one machine 2 x cores
        tuning["spark.sql.shuffle.partitions"] = str(2 * _local_cores(master))
    return tuning


def _operator_settings() -> set[str]:
    """The Spark settings the operator made outside our config. Under spark-submit: all its
    JVM holds (its --conf and spark-defaults.conf). Otherwise: the keys of the
    spark-defaults.conf that the launcher we start reads ($SPARK_CONF_DIR, else
    $SPARK_HOME/conf), and the driver memory of SPARK_DRIVER_MEMORY, which the launcher
    takes when no conf names one."""
    if _submitted():
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # connects to spark-submit's JVM
        return {key for key, _ in SparkConf().getAll()}
    keys = {"spark.driver.memory"} if os.environ.get("SPARK_DRIVER_MEMORY") else set()
    conf_dir = os.environ.get("SPARK_CONF_DIR")
    if not conf_dir:
        from pyspark.find_spark_home import _find_spark_home

        conf_dir = os.path.join(_find_spark_home(), "conf")
    try:
        with open(os.path.join(conf_dir, "spark-defaults.conf"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:  # none (the usual case with pip's pyspark)
        return keys
    # Java properties: a key ends at whitespace, "=" or ":"; "#" and "!" start comments
    return keys | {re.split(r"[\s=:]", line, maxsplit=1)[0] for line in map(str.strip, lines)
                   if line and line[0] not in "#!"}


def _submitted() -> bool:
    """Under spark-submit, which starts the JVM first and tells us its port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def master_url(master: str | None) -> str:
    """The master a session made with `master` gets: under spark-submit "" (spark-submit's
    --master stands) unless one is named."""
    return master or os.environ.get("WIT_SPARK_MASTER") or ("" if _submitted() else "local[*]")


def _local_cores(master: str) -> int:
    inside = master[len("local["):-1] if master.startswith("local[") else "1"
    return (os.cpu_count() or 1) if inside in ("*", "") else int(inside.split(",")[0])


def spark_from_config(cfg, master_override: str | None = None):
    """A session built from the `[spark]` config section (CLI --master wins)."""
    section = cfg.spark
    conf = dict(section.extra_conf)
    if section.shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = section.shuffle_partitions
    return get_spark(master=master_override or section.master or None, app_name=section.app_name,
                     conf=conf, arrow_batch_rows=section.arrow_batch_rows,
                     s3_endpoint_url=section.s3_endpoint_url, ui=section.ui,
                     log_level=section.log_level)


class LazySession:
    """A SparkSession made when a stage first uses it, so that a command whose stages all run
    their small local inputs on the driver never starts a JVM (seconds on a laptop). Every
    attribute not defined here is the session's (starting it); `on_start` hooks run on the
    session as soon as it exists (a stage's job group)."""

    def __init__(self, make=None, master: str | None = None, session=None):
        self._make, self._master, self._session = make, master, session
        self._hooks: list = []

    @property
    def started(self) -> bool:
        return self._session is not None

    def session(self):
        if self._session is None:
            self._session = self._make()
            for hook in list(self._hooks):
                hook(self._session)
        return self._session

    def on_start(self, hook) -> None:
        self._hooks.append(hook)
        if self._session is not None:
            hook(self._session)

    def forget(self, hook) -> None:
        self._hooks.remove(hook)

    @property
    def master(self) -> str:
        """The master URL, known without starting a session unless spark-submit names it."""
        if self._session is None and self._master:
            return self._master
        return self.session().sparkContext.master

    @property
    def default_parallelism(self) -> int:
        """Spark's default number of tasks; for a local master, without starting a session."""
        if self._session is None and self._master and self._master.startswith("local"):
            return _local_cores(self._master)
        return self.session().sparkContext.defaultParallelism

    def __getattr__(self, name):
        return getattr(self.session(), name)


def lazy_session(spark) -> LazySession:
    """`spark` (a session, a function that makes one, or a LazySession) as a LazySession."""
    if isinstance(spark, LazySession):
        return spark
    if callable(spark):
        return LazySession(spark)
    return LazySession(session=spark)


def lazy_from_config(cfg, master_override: str | None = None) -> LazySession:
    """spark_from_config's session, made on first use."""
    return LazySession(lambda: spark_from_config(cfg, master_override),
                       master_url(master_override or cfg.spark.master or None))
