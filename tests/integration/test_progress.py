"""Progress lines of long Spark work, read from Spark's status tracker while tasks run."""

import re
import time

from wit_builder.progress import SparkProgress


def test_task_progress_while_a_job_runs(spark):
    def slow(rows):  # defined here: pickled by value, so the workers need not import this file
        time.sleep(0.4)
        yield from rows

    lines = []
    with SparkProgress(spark, "extract", interval=0.2, log=lines.append):
        spark.sparkContext.parallelize(range(6), 6).mapPartitions(slow).count()
    seen = [line for line in lines if re.fullmatch(r"extract: \d/6 tasks, 0m\d\ds(, ETA .*)?", line)]
    assert seen, lines
    done = [int(line.split(": ")[1].split("/")[0]) for line in seen]
    assert done == sorted(done)  # steady, never backwards


def test_no_line_while_nothing_runs(spark):
    lines = []
    with SparkProgress(spark, "finalize", interval=0.1, log=lines.append):
        time.sleep(0.35)
    assert lines == []
