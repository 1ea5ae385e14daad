"""`wit-builder demo` end to end on the test session's Spark: every stage, the report, training, eval."""

import json

import pytest

from wit_builder import registry, stages
from wit_builder.demo import run as demo
from wit_builder.cli import main

TRAIN_STEPS = 20  # the demo's default is 150; a few steps prove the shards feed the trainer
# The demo's config names no scoring model and leaves screen off ([screen] enabled), so it runs
# every data stage but those two.
STAGES = [stage for stage in registry.DATA if stage not in ("score", "screen")]


@pytest.fixture(scope="module")
def demo_run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    lines = []
    paths = demo.run(out, train_steps=TRAIN_STEPS, spark=spark, log=lines.append)
    return out, paths, lines


def _manifest(out, stage):
    return json.loads((out / stage / stages.MANIFEST).read_text())


def test_every_stage_finishes_and_accounts_for_every_row(demo_run):
    out, paths, _ = demo_run
    assert "score" not in paths and not (out / "score").exists()
    for stage in STAGES:
        assert (out / stage / stages.SUCCESS).exists(), stage
        m = _manifest(out, stage)
        assert m["rows_out"] > 0, stage
        assert m["rows_in"] == m["rows_out"] + sum(m["drops"].values()), stage
        assert paths[stage] == str(out / stage)


def test_the_planted_noise_is_dropped_where_it_belongs(demo_run):
    out, _, _ = demo_run
    drops = {stage: _manifest(out, stage)["drops"] for stage in STAGES}

    def at_least(stage, **expected):
        for reason, n in expected.items():
            assert drops[stage].get(reason, 0) >= n, (stage, reason, drops[stage])

    at_least("extract", non_http=2, empty_text=1)  # data: and javascript: images, an empty alt
    at_least("match", no_match=2)
    at_least("filter", language=2, duplicate=8, url_rule=1, boilerplate_text=1)
    at_least("balance", balanced_out=1)  # t = 20 on ~350 rows
    at_least("download", http_404=1, not_an_image=1, truncated_image=1, robots_optout=1,
             blocked_address=1)  # the redirect to 169.254.169.254
    # near_duplicate: three pictures have two smaller re-compressed copies each (pHash of such
    # flat pictures is touchy: not every copy lands within the Hamming distance)
    at_least("finalize", near_duplicate=2, eval_contamination=1, too_small=1, bad_aspect=1)


def test_shards_report_and_eval(demo_run):
    import webdataset as wds

    out, paths, lines = demo_run
    sizes = json.loads((out / "finalize" / "sizes.json").read_text())
    tars = sorted((out / "finalize").glob("*.tar"))
    assert sorted(sizes) == [t.name for t in tars] and len(tars) >= 2
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert len(samples) == sum(sizes.values()) == _manifest(out, "finalize")["rows_out"]
    assert all({"jpg", "txt", "json"} <= set(s) for s in samples)

    report = (out / "report.html").read_text()
    assert report.count("<img") >= 3 and "balance" in report

    results = json.loads((out / "eval.json").read_text())
    assert results["train"]["step"] == TRAIN_STEPS
    for task, classes in (("colour", 6), ("shape", 4)):
        z = results[task]["zeroshot"]
        assert z["classes"] == classes and z["images"] == 48 and 0 <= z["top1"] <= 1
    assert results["colour"]["retrieval"]["captions"] == 96
    assert (out / "train" / "LATEST.pt").exists()

    text = "\n".join(lines)
    assert str(out / "report.html") in text and "wit-builder curate --input" in text
    assert "spark-submit" in text


def test_rerun_skips_every_stage(demo_run, spark):
    out, _, _ = demo_run
    lines = []
    demo.run(out, skip_train=True, spark=spark, log=lines.append)
    for stage in STAGES:
        assert any(line.startswith(f"{stage}: up to date, skipped") for line in lines), (stage, lines)


def test_cli_rejects_zero_training_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--train-steps", "0"]) == 2
    assert "--train-steps" in capsys.readouterr().err
