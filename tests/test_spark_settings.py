"""Which Spark settings are the operator's (spark-defaults.conf), read without starting Spark."""

from wit_builder import spark as spark_module


def test_the_operators_spark_defaults_are_read_as_the_launcher_reads_them(tmp_path, monkeypatch):
    (tmp_path / "spark-defaults.conf").write_text(
        "# an operator's defaults\n"
        "spark.ui.showConsoleProgress   false\n"
        "spark.sql.shuffle.partitions=7\n"
        "  spark.executor.memory:2g\n"
        "! spark.driver.memory 1g\n"
        "\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    operator = spark_module._operator_settings()
    assert operator == {"spark.ui.showConsoleProgress", "spark.sql.shuffle.partitions",
                        "spark.executor.memory"}
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "3g")  # the launcher's other source of it
    assert "spark.driver.memory" in spark_module._operator_settings()
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "none"))
    assert spark_module._operator_settings() == {"spark.driver.memory"}


def test_our_local_tuning_covers_what_an_operator_may_set():
    tuning = spark_module._tuning("local[3]")
    assert tuning == {"spark.ui.showConsoleProgress": "true", "spark.driver.memory": "4g",
                      "spark.sql.shuffle.partitions": "6"}
    assert set(spark_module._tuning("spark://h:7077")) == {"spark.ui.showConsoleProgress"}
