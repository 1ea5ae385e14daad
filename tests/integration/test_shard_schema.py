"""One shard schema across stages (issue 25): a real download of shared photos from a loopback
server, then finalize, both through the CLI; every `_stats.json`, Parquet file and sample json
of both read through shard/samples.py's schema, and both folders loaded with Hugging Face
`datasets` (a throwaway venv from the package index, as test_webdataset_releases.py does) with
every json column typed as written, none as `null`."""

import json
import os
import subprocess
import tarfile

import pyarrow.parquet as pq
import pytest

from pypi_venv import venv_python
from wit_builder import cli
from wit_builder.shard.samples import CARD, SHARD_COLUMNS, STATS_KEYS, parquet_schema, read_stats

NAMES = [name for name, _ in SHARD_COLUMNS]


@pytest.fixture(scope="module")
def stages(image_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    urls = image_server.photo_urls[:24] + [image_server.catalog["missing"]] * 2
    table = root / "candidates.jsonl"
    table.write_text("".join(json.dumps({"url": u, "text": f"photo {i}"}) + "\n"
                             for i, u in enumerate(urls)))
    out = root / "OUT"
    assert cli.main(["download", "--input", str(table), "--out", str(out), "--master", "local[2]",
                     "--set", "download.allow_networks=127.0.0.0/8",
                     "--set", "download.samples_per_shard=10"]) == 0
    assert cli.main(["finalize", "--input", str(out / "download"), "--out", str(out),
                     "--samples-per-shard", "8"]) == 0
    return {"download": out / "download", "finalize": out / "finalize"}


@pytest.mark.parametrize("stage", ["download", "finalize"])
def test_every_stage_writes_the_one_shard_schema(stages, stage):
    folder = stages[stage]
    tars = sorted(folder.glob("*.tar"))
    assert tars
    for tar in tars:
        stats = read_stats(str(tar.with_name(tar.stem + "_stats.json")))
        assert list(stats)[:len(STATS_KEYS)] == STATS_KEYS
        rows = pq.read_table(tar.with_suffix(".parquet"))
        assert rows.schema.equals(parquet_schema())
        by_key = {r["key"]: r for r in rows.to_pylist()}
        with tarfile.open(tar) as t:
            records = [json.load(t.extractfile(m)) for m in t.getmembers() if m.name.endswith(".json")]
        assert records and stats["successes"] == len(records)
        for record in records:  # a sample's json is its Parquet row, key by key
            assert list(record) == NAMES and record == by_key[record["key"]]
            assert record["status"] == "success" and record["error_message"] is None
        if stage == "download":  # its Parquet also holds the failed URLs
            assert stats["count"] == rows.num_rows == len(records) + stats["failed_to_download"]
        else:
            assert all(r["source_shard"] and r["phash"] for r in records)
    assert "\ndataset_info:\n" in (folder / CARD).read_text()


DATASETS = r"""
import json, sys
import datasets
features = {}
for folder in sys.argv[1:]:
    ds = datasets.load_dataset(folder, split="train")
    features[folder] = [len(ds), {k: str(v) for k, v in ds.features["json"].items()}]
print(json.dumps(features))
"""


def test_hugging_face_datasets_types_every_column(stages, request):
    """datasets typed columns that are null in every sample it looked at (page_url, user_id,
    error_message...) as `null`; the dataset card of each folder declares their types."""
    python = venv_python(request, "datasets", ["datasets", "pillow"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([str(python), "-I", "-c", DATASETS, *map(str, stages.values())],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for folder, (rows, features) in json.loads(done.stdout.splitlines()[-1]).items():
        assert rows == sum(json.loads(p.read_text())["successes"]
                           for p in stages[folder.rsplit("/", 1)[1]].glob("*_stats.json"))
        assert list(features) == NAMES
        assert not [k for k, v in features.items() if "null" in v], features
