"""Small local inputs run match and balance on the driver (pyarrow, no Spark jobs); what they
write and count must equal the Spark path's, row for row, on real candidates."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wit_builder import inputs, pipeline
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


@pytest.mark.parametrize("stage", ["match", "balance"])
def test_driver_path_equals_spark_path(spark, extracted, monkeypatch, stage):
    cfg, extract_dir, out = extracted
    found = {}
    for way in ("driver", "spark"):
        if way == "spark":
            monkeypatch.setattr(inputs, "SMALL_ROWS", -1)
        root = out / f"{stage}-{way}"
        source = extract_dir
        if stage == "balance":
            source = pipeline.execute("match", spark, cfg, [extract_dir], str(root),
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
