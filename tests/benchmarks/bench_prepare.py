"""Download's candidate preparation of 20,000 rows: pyarrow on the driver (prepare_local.py)
against the Spark plan (spark.driver_rows=0), local[2], the session started and warmed by one job
first; two rounds. The figures prepare_local.py's docstring quotes.

    .venv/bin/python tests/benchmarks/bench_prepare.py
Prints the seconds per round of each way and the rows prepared."""
import sys, tempfile, time
import pyarrow as pa, pyarrow.parquet as pq
from wit_builder.config import load_config
from wit_builder.spark import get_spark
from wit_builder.download import prepare

spark = get_spark(master="local[2]", ui=False, log_level="ERROR")
spark.range(10).count()
work = tempfile.mkdtemp()
n = 20_000
pq.write_table(pa.table({"url": [f"http://h{i % 97}.test/{i}.jpg" for i in range(n)],
                         "text": [f"a caption {i % 5000}" for i in range(n)]}), f"{work}/c.parquet")
out = {}
for rnd in range(2):
    for way, limit in (("driver", 1_000_000), ("spark", 0)):
        cfg = load_config(None, [f"spark.driver_rows={limit}"])
        t = time.monotonic()
        p = prepare.prepare(spark, cfg, [f"{work}/c.parquet"], f"{work}/{way}{rnd}")
        out.setdefault(way, []).append(round(time.monotonic() - t, 2))
print(out, p["rows"])
