"""Small local inputs run match, filter and balance on the driver (pyarrow, no Spark jobs); what they
write and count must equal the Spark path's, row for row, on real candidates."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wit_builder import pipeline, registry
from wit_builder.config import load_config

QUERIES = str(pipeline.__file__).rsplit("/wit_builder/", 1)[0] + "/query_lists/wit-queries-en.json.gz"


def _rows(folder: Path):
    files = sorted(folder.glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: (r["uid"], r["text"]))


@pytest.fixture(scope="module")
def extracted(spark, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    cfg = load_config(None, ["extract.page_url_column=page_url", f"match.queries={QUERIES}",
                             "balance.t=3"])  # a small t: balancing drops rows here
    run = pipeline.execute("extract", spark, cfg,
                           [str(shared_data / "candidates" / "alt_text_pairs.jsonl")], str(out),
                           log=lambda _m: None)
    return cfg, run.path, out


@pytest.mark.parametrize("stage", ["match", "filter", "balance"])
def test_driver_path_equals_spark_path(spark, extracted, stage):
    cfg, extract_dir, out = extracted
    found = {}
    for way in ("driver", "spark"):
        if way == "spark":
            cfg = load_config(None, [f"match.queries={QUERIES}", "balance.t=3",
                                     "spark.driver_rows=0"])
        root = out / f"{stage}-{way}"
        source = extract_dir
        for before in registry.CURATE[1:registry.CURATE.index(stage)]:  # match (and filter)
            source = pipeline.execute(before, spark, cfg, [source], str(root),
                                      log=lambda _m: None).path
        run = pipeline.execute(stage, spark, cfg, [source], str(root), log=lambda _m: None)
        found[way] = run
    driver, by_spark = found["driver"], found["spark"]
    assert driver.manifest["spark_jobs"] == 0 < by_spark.manifest["spark_jobs"]
    for key in ("rows_in", "rows_out", "drops"):
        assert driver.manifest[key] == by_spark.manifest[key], key
    assert driver.manifest["rows_out"] > 0 and driver.manifest["drops"]
    assert _rows(Path(driver.path)) == _rows(Path(by_spark.path))
    if stage == "balance":
        assert driver.manifest["balance"] == by_spark.manifest["balance"]
        counts = [pq.read_table(f"{run.path}/entry_counts").to_pylist()
                  for run in (driver, by_spark)]
        assert counts[0] == counts[1]


def test_dedup_on_the_driver_and_by_spark_partitions_equals_spark_windows(spark):
    """Duplicates, the per-URL text cap, dead rows, null URLs and texts, ties on page_url.
    As in real rows, a uid names one (url, text): it is their hash. The Arrow dedup on the
    whole table (driver) and on each partition of the shuffle by URL (runner.by_key on Spark)
    give what Spark's windows give."""
    import hashlib
    import random

    import pyarrow as pa

    from filter_reference import dedup_reasons_by_windows
    from wit_builder import runner
    from wit_builder.filter.dedup import dedup_reasons

    rng = random.Random(7)
    rows = []
    for i in range(600):
        url = rng.choice([None, "u1", "u2", "u3"] + [f"v{k}" for k in range(20)])
        text = rng.choice([None, "a", "b"] + [f"t{k}" for k in range(15)])
        uid = hashlib.sha256(repr((url, text)).encode()).hexdigest()[:16]
        rows.append({"uid": uid, "url_canonical": url, "text_norm": text,
                     "page_url": rng.choice([None, "p1", "p2"]), "source": "s",
                     "drop_reason": rng.choice([None, None, None, "language"])})
    table = pa.Table.from_pylist(rows)
    dedup = lambda t: dedup_reasons(t, 3)  # noqa: E731
    local = runner.by_key(runner.Rows(table=table), "url_canonical", dedup, table.schema)
    frame = spark.createDataFrame(table.to_pandas()).repartition(4)
    by_partitions = runner.by_key(runner.Rows(frame=frame), "url_canonical", dedup,
                                  table.schema).frame.toPandas()
    by_windows = dedup_reasons_by_windows(frame, 3).toPandas()
    key = lambda r: (r["uid"], str(r["url_canonical"]), str(r["text_norm"]),  # noqa: E731
                     str(r["page_url"]), str(r["drop_reason"]))
    records = lambda df: df.astype(object).where(df.notna(), None).to_dict("records")  # noqa: E731
    expected = sorted(map(key, records(by_windows)))
    assert sorted(map(key, local.table.to_pylist())) == expected
    assert sorted(map(key, records(by_partitions))) == expected
    reasons = {r["drop_reason"] for r in local.table.to_pylist()}
    assert {"duplicate", "too_many_texts_per_url"} <= reasons
