"""A real session (in a fresh process: one JVM each) keeps the operator's spark-defaults.conf
where our config says nothing, lets our config win where it does, prints its web UI's address
when the UI is on, and says nothing else at `--log-level ERROR`."""

import json
import os
import subprocess
import sys

SESSION = r'''
import json, sys
from wit_builder.spark import get_spark

def settings(spark):
    conf = spark.sparkContext.getConf()
    return {key: conf.get(key, None) for key in
            ("spark.ui.showConsoleProgress", "spark.sql.shuffle.partitions", "spark.driver.memory")}

spark = get_spark(master="local[1]", log_level="ERROR")
first = settings(spark)
spark.stop()
spark = get_spark(master="local[1]", conf={"spark.sql.shuffle.partitions": "3"}, ui=False)
print(json.dumps([first, settings(spark)]))
'''


def test_operator_defaults_stand_unless_configured_and_the_ui_address_is_printed(tmp_path):
    (tmp_path / "spark-defaults.conf").write_text("spark.ui.showConsoleProgress false\n"
                                                  "spark.sql.shuffle.partitions 7\n"
                                                  "spark.driver.memory 1g\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIT_DRIVER_MEMORY", "SPARK_DRIVER_MEMORY", "PYSPARK_GATEWAY_PORT",
                        "WIT_SPARK_MASTER")} | {"SPARK_CONF_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SESSION], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    first, configured = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == {"spark.ui.showConsoleProgress": "false", "spark.sql.shuffle.partitions": "7",
                     "spark.driver.memory": "1g"}
    assert configured["spark.sql.shuffle.partitions"] == "3"
    ui_lines = [line for line in done.stderr.splitlines() if line.startswith("spark: web UI at ")]
    assert len(ui_lines) == 1 and ui_lines[0].split(" at ")[1].startswith("http://")
    # log level ERROR from the JVM's first line: no log4j banner, no start-up WARN; only the
    # JVM's own note on the incubator module that Spark 4 loads is left
    assert [line for line in done.stderr.splitlines() if line not in ui_lines
            and not line.startswith("WARNING: Using incubator modules")] == []
