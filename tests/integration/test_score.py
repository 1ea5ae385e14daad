"""The score stage on the shards of a real small pipeline run (img2dataset-layout download shards
of real photos -> finalize -> score): a briefly trained `tiny` CLIP scores true pairs above the
same photos with swapped captions, the scores land in each sample's json and the shard Parquet,
the filter keeps what the threshold says and counts the rest as `low_clip_score`, a rerun
resumes by shard, and a Hugging Face folder (our export) scores like the checkpoint."""

import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_shards import write_flickr_shards  # noqa: E402
from shard_maker import make_download  # noqa: E402

from wit_builder import cli  # noqa: E402
from wit_builder.clip.config import TrainConfig  # noqa: E402
from wit_builder.clip.train import train  # noqa: E402


def _tar_samples(path: Path) -> dict[str, dict]:
    samples = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def _swap_captions(src: Path, dst: Path) -> None:
    """The same shards with each caption moved to the next photo (json and txt)."""
    from webdataset import TarWriter

    dst.mkdir()
    for tar in sorted(src.glob("*.tar")):
        samples = list(_tar_samples(tar).items())
        texts = [s["txt"] for _, s in samples]
        with open(dst / tar.name, "wb") as raw:
            writer = TarWriter(raw)
            for i, (key, files) in enumerate(samples):
                text = texts[(i + 1) % len(texts)]
                meta = {**json.loads(files["json"]), "caption": text.decode(), "text": text.decode()}
                writer.write({"__key__": key, "jpg": files["jpg"], "txt": text, "json": json.dumps(meta)})
            writer.close()


@pytest.fixture(scope="module")
def run(shared_data, spark, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("score")
    make_download(shared_data / "images", root / "download", n_train=60)
    (root / "download" / "manifest.json").write_text(json.dumps({"stage": "download"}))
    (root / "download" / "_SUCCESS").write_text("")
    assert cli.main(["finalize", "--input", str(root / "download"), "--out", str(root / "out"),
                     "--samples-per-shard", "16"]) == 0
    shards = write_flickr_shards(shared_data / "images" / "flickr8k_dev" / "train", root / "flickr", max_side=64)
    train(TrainConfig(shards=shards, out=str(root / "clip"), model="tiny", steps=120, batch_size=64, lr=1e-3,
                      warmup=10, workers=1, shuffle_buffer=300, save_every=120, log_every=40,
                      tokenizer_captions=4000))
    return {"root": root, "finalize": root / "out" / "finalize", "checkpoint": root / "clip" / "LATEST.pt"}


def _scores(stage: Path) -> dict[str, float]:
    return {r["key"]: r["clip_score"] for f in sorted((stage / "scores").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}


def test_true_pairs_score_above_swapped_ones_and_scores_reach_json_and_parquet(run):
    root = run["root"]
    assert cli.main(["score", "--input", str(run["finalize"]), "--out", str(root / "out"),
                     "--model", str(run["checkpoint"]), "--batch-size", "8", "--device", "cpu"]) == 0
    stage = root / "out" / "score"
    manifest = json.loads((stage / "manifest.json").read_text())
    finalized = json.loads((run["finalize"] / "manifest.json").read_text())["rows_out"]
    assert manifest["rows_in"] == manifest["rows_out"] == finalized > 30 and manifest["drops"] == {}
    true = _scores(stage)
    assert len(true) == finalized and all(-1 <= s <= 1 for s in true.values())
    for tar in sorted(stage.glob("*.tar")):  # every sample's json and the shard Parquet carry it
        rows = {r["key"]: r for r in pq.read_table(tar.with_suffix(".parquet")).to_pylist()}
        for key, files in _tar_samples(tar).items():
            assert json.loads(files["json"])["clip_score"] == pytest.approx(true[key], abs=1e-5)
            assert rows[key]["clip_score"] == pytest.approx(true[key], abs=1e-6)
            assert rows[key]["uid"] == json.loads(files["json"])["uid"]
    summary = manifest["clip_score"]
    assert summary["scored"] == finalized and sum(summary["histogram"]["counts"]) == finalized
    assert summary["lowest"][0]["clip_score"] <= summary["highest"][0]["clip_score"]

    _swap_captions(run["finalize"], root / "swapped")
    assert cli.main(["score", "--input", str(root / "swapped"), "--out", str(root / "swapped_out"),
                     "--model", str(run["checkpoint"]), "--device", "cpu"]) == 0
    swapped = _scores(root / "swapped_out" / "score")
    assert set(swapped) == set(true)
    mean_true, mean_swapped = (sum(d.values()) / len(d) for d in (true, swapped))
    assert mean_true > mean_swapped + 0.02, (mean_true, mean_swapped)
    assert sum(true[k] > swapped[k] for k in true) > 0.6 * len(true)


def test_filter_keeps_the_top_fraction_counts_low_clip_score_and_resumes(run, capsys):
    root = run["root"]
    out = root / "filtered"
    args = ["score", "--input", str(run["finalize"]), "--out", str(out), "--model", str(run["checkpoint"]),
            "--device", "cpu"]
    assert cli.main(args + ["--top-fraction", "0.5"]) == 0
    stage = out / "score"
    manifest = json.loads((stage / "manifest.json").read_text())
    n = manifest["rows_in"]
    assert manifest["rows_out"] == (n + 1) // 2 and manifest["drops"] == {"low_clip_score": n - (n + 1) // 2}
    threshold = manifest["clip_score"]["threshold"]
    kept = [json.loads(s["json"])["clip_score"] for t in stage.glob("*.tar") for s in _tar_samples(t).values()]
    assert len(kept) == manifest["rows_out"] and min(kept) >= threshold - 1e-6
    drops = [r for f in (stage / "drops").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(drops) == n - len(kept) and all(d["reason"] == "low_clip_score" and d["clip_score"] < threshold
                                               for d in drops)
    assert json.loads((stage / "sizes.json").read_text()) == {
        t.name: len(_tar_samples(t)) for t in sorted(stage.glob("*.tar"))}

    # A new threshold reuses every shard's scores (resume by shard); a lost scores file is redone.
    (stage / "scores" / "00000.parquet").unlink()
    assert cli.main(args + ["--min-score", str(threshold)]) == 0
    again = json.loads((stage / "manifest.json").read_text())
    assert again["resumed_shards"] == again["scored_shards"] + again["resumed_shards"] - 1
    assert again["rows_out"] == manifest["rows_out"] and again["drops"] == manifest["drops"]


def test_a_hugging_face_folder_scores_like_the_checkpoint(run):
    pytest.importorskip("transformers")
    root = run["root"]
    assert cli.main(["export", "--checkpoint", str(run["checkpoint"]), "--out", str(root / "hf")]) == 0
    assert cli.main(["score", "--input", str(run["finalize"]), "--out", str(root / "hf_out"),
                     "--model", str(root / "hf"), "--device", "cpu"]) == 0
    ours = _scores(root / "out" / "score") if (root / "out" / "score").exists() else None
    theirs = _scores(root / "hf_out" / "score")
    assert ours is not None and set(theirs) == set(ours)
    # Same model, same pixels (one preprocessing): equal up to float rounding.
    assert max(abs(ours[k] - theirs[k]) for k in ours) < 1e-3
