"""Train `tiny` CLIP on shards of real photos (flickr8k_dev train split) through the CLI, then
evaluate it on the held-out val split; resume, time budget and bad inputs."""

import json
import math
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_shards import write_flickr_shards  # noqa: E402

from wit_builder.cli import main  # noqa: E402
from wit_builder.clip.config import TrainConfig  # noqa: E402
from wit_builder.clip.train import train  # noqa: E402
from wit_builder.errors import UserError  # noqa: E402
from test_s3 import BUCKET, moto, s3_env  # noqa: E402,F401  (the moto S3 server fixtures)

STEPS, BATCH = 400, 64


@pytest.fixture(scope="module")
def flickr(shared_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("flickr")
    split = shared_data / "images" / "flickr8k_dev"
    return {"shards": write_flickr_shards(split / "train", root / "shards", max_side=64),
            "val": split / "val" / "captions.tsv", "root": root}


@pytest.fixture(scope="module")
def trained(flickr) -> Path:
    """The CLI run every test of the trained model shares."""
    out = flickr["root"] / "run"
    assert main(["train", "--shards", flickr["shards"], "--model", "tiny", "--out", str(out),
                 "--steps", str(STEPS), "--batch-size", str(BATCH), "--lr", "1e-3", "--warmup", "30",
                 "--workers", "1", "--shuffle-buffer", "500", "--min-crop", "0.5", "--save-every", "200",
                 "--log-every", "10"]) == 0
    return out


def binomial_tail(n: int, p: float, k: int) -> float:
    """P[Binomial(n, p) >= k]."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_loss_falls_and_val_retrieval_beats_chance(trained, flickr, tmp_path):
    losses = [json.loads(line)["loss"] for line in (trained / "log.jsonl").read_text().splitlines()]
    assert len(losses) == STEPS // 10
    assert losses[0] > 0.9 * math.log(BATCH)            # starts near chance: ln(64) = 4.16
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0]      # and falls clearly
    assert sorted(p.name for p in trained.glob("*.pt")) == ["LATEST.pt", "step_00000200.pt", "step_00000400.pt"]
    assert (trained / "tokenizer.json").is_file()

    out_json = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(trained / "LATEST.pt"), "--retrieval", str(flickr["val"]),
                 "--json", str(out_json), "--workers", "1"]) == 0
    r = json.loads(out_json.read_text())["retrieval"]
    assert (r["images"], r["captions"], r["unreadable_images"]) == (185, 925, 0)
    # Image->text R@10 over the 185 val images. Chance: an image's 5 captions among 925 reach
    # the top 10 with p = 1 - C(920,10)/C(925,10) = 5.3%, i.e. about 10 of 185 images. A model
    # that learned nothing about which caption goes with which photo (whatever its biases: the
    # val pairing is unseen) gets hits ~ Binomial(185, p) at best; we ask for a count whose
    # probability under that law is below 1e-6 -- a wide margin over chance, no luck involved.
    p = 1 - math.comb(920, 10) / math.comb(925, 10)
    need = next(k for k in range(186) if binomial_tail(185, p, k) < 1e-6)
    hits = round(r["i2t_R@10"] * 185)
    assert hits >= need, f"i2t R@10 hits {hits} of 185 < {need} (chance ~{185 * p:.0f})"
    assert r["t2i_R@10"] > 2 * 10 / 185                # and text->image well above its 5.4% chance


def test_zeroshot_from_labels_tsv_folders_and_cls_shards_agree(trained, shared_data, tmp_path):
    cifar = shared_data / "images" / "cifar10_test"
    rows = [line.split("\t") for line in (cifar / "labels.tsv").read_text().splitlines()[1:]][::50]
    labels = tmp_path / "labels.tsv"
    labels.write_text("path\tlabel\n" + "".join(f"{cifar / p}\t{lab}\n" for p, lab in rows))
    classes = sorted({lab.strip() for _, lab in rows})
    for p, lab in rows:
        (tmp_path / "folders" / lab.strip()).mkdir(parents=True, exist_ok=True)
        shutil.copy(cifar / p, tmp_path / "folders" / lab.strip() / p)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i, (p, lab) in enumerate(rows):
            tar.add(cifar / p, f"{i:04d}.png")
            cls = tmp_path / f"{i:04d}.cls"
            cls.write_text(str(classes.index(lab.strip())))
            tar.add(cls, f"{i:04d}.cls")
    (tmp_path / "classnames.json").write_text(json.dumps({"classnames": classes}))
    templates = shared_data / "eval" / "cifar10_templates.json"
    results = []
    for data, extra in ((labels, []), (tmp_path / "folders", []),
                        (tmp_path / "00000.tar", ["--classnames", str(tmp_path / "classnames.json")])):
        out = tmp_path / f"{len(results)}.json"
        assert main(["eval", "--checkpoint", str(trained / "LATEST.pt"), "--zeroshot", str(data),
                     "--templates", str(templates), "--json", str(out), "--workers", "0", *extra]) == 0
        results.append(json.loads(out.read_text())["zeroshot"])
    first = results[0]
    assert (first["images"], first["classes"], first["templates"]) == (40, 10, 18)
    for r in results[1:]:  # same images, same classes: the same numbers whatever the format
        assert {k: r[k] for k in ("top1", "top5", "mean_per_class_recall")} == \
               pytest.approx({k: first[k] for k in ("top1", "top5", "mean_per_class_recall")})
    assert 0 <= first["top1"] <= first["top5"] <= 1


def _small_run(shards: str, out: Path, **kw) -> dict:
    options = dict(shards=shards, out=str(out), model="tiny", steps=8, batch_size=16, lr=1e-3,
                   warmup=2, workers=1, shuffle_buffer=50, save_every=4, keep=0, log_every=1,
                   tokenizer_captions=500)
    return train(TrainConfig(**{**options, **kw}))


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())}


def test_resume_reproduces_the_uninterrupted_runs_next_losses(flickr, tmp_path):
    whole = _small_run(flickr["shards"], tmp_path / "whole")
    assert whole["step"] == 8
    resumed = _small_run(flickr["shards"], tmp_path / "resumed",
                         resume=str(tmp_path / "whole" / "step_00000004.pt"))
    assert resumed["step"] == 8
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "resumed")
    assert sorted(b) == [5, 6, 7, 8]
    assert [b[s] for s in b] == pytest.approx([a[s] for s in b], rel=1e-5, abs=1e-6)
    final_a = torch.load(tmp_path / "whole" / "LATEST.pt", weights_only=True)["model"]
    final_b = torch.load(tmp_path / "resumed" / "LATEST.pt", weights_only=True)["model"]
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-5) for k in final_a)


def test_max_minutes_stops_with_a_checkpoint_and_resume_continues(flickr, tmp_path):
    out = tmp_path / "budget"
    first = _small_run(flickr["shards"], out, steps=6, max_minutes=1e-4)
    assert first["stopped_early"] and first["step"] == 1
    assert (out / "LATEST.pt").is_file() and (out / "step_00000001.pt").is_file()
    with pytest.raises(UserError, match="pass --resume"):
        _small_run(flickr["shards"], out, steps=6)
    again = _small_run(flickr["shards"], out, steps=6, resume="auto")
    assert again["step"] == 6 and not again["stopped_early"]


def test_bad_inputs_give_clear_messages(flickr, tmp_path, capsys):
    out = tmp_path / "x"
    _small_run(flickr["shards"], out, steps=1)
    # a checkpoint of another config
    assert main(["train", "--shards", flickr["shards"], "--model", "small", "--out", str(out), "--resume"]) == 2
    assert "trained with model 'tiny'" in capsys.readouterr().err
    # an empty shard list, missing shards
    assert main(["train", "--shards", "", "--out", str(tmp_path / "y")]) == 2
    assert "empty shard list" in capsys.readouterr().err
    assert main(["train", "--shards", str(tmp_path / "{00000..00002}.tar"), "--out", str(tmp_path / "y")]) == 2
    assert "do not exist" in capsys.readouterr().err
    # eval: no checkpoint, not a checkpoint, no task, bad templates
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--retrieval", str(flickr["val"])]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", "--checkpoint", str(tmp_path / "junk.pt"), "--retrieval", str(flickr["val"])]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(out / "LATEST.pt")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    (tmp_path / "t.json").write_text('["no placeholder"]')
    assert main(["eval", "--checkpoint", str(out / "LATEST.pt"), "--zeroshot", str(flickr["val"]),
                 "--templates", str(tmp_path / "t.json")]) == 2
    assert "{c}" in capsys.readouterr().err


def test_train_section_of_the_config_and_validation_retrieval(flickr, tmp_path, capsys):
    """`[train]` in a TOML file, `--set train.*` and flags override it in that order; --val-data
    logs R@1/R@5 both ways every --val-every steps (and at the end) in log.jsonl and on stderr."""
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmodel = \"tiny\"\nsteps = 3\nbatch_size = 8\nlr = 0.1\nwarmup = 1\n"
                      "workers = 0\nshuffle_buffer = 20\ntokenizer_captions = 300\nlog_every = 1\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--set", "train.lr=1e-3", "--set", "train.val_every=2",
                 "--shards", flickr["shards"], "--out", str(out), "--device", "cpu",
                 "--val-data", str(flickr["val"])]) == 0
    err = capsys.readouterr().err
    assert "val R@1/R@5 i2t" in err
    state = torch.load(out / "LATEST.pt", weights_only=True)
    cfg = state["train_config"]
    assert (cfg["steps"], cfg["batch_size"], cfg["lr"], cfg["device"], cfg["val_every"]) == (3, 8, 1e-3, "cpu", 2)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    validated = [r["step"] for r in records if "val_i2t_R@1" in r]
    assert validated == [2, 3]  # every 2 steps, and the last
    for r in records[1:]:
        assert set(r) >= {"val_i2t_R@1", "val_i2t_R@5", "val_t2i_R@1", "val_t2i_R@5"}
        assert 0 <= r["val_i2t_R@1"] <= r["val_i2t_R@5"] <= 1
    # wrong values name the key
    assert main(["train", "--shards", flickr["shards"], "--out", str(tmp_path / "y"), "--set", "train.stepz=3"]) == 2
    assert "train.stepz" in capsys.readouterr().err
    assert main(["train", "--shards", flickr["shards"], "--out", str(tmp_path / "y"), "--device", "gpu"]) == 2
    assert "device 'gpu'" in capsys.readouterr().err


def test_checkpoints_log_and_tokenizer_go_to_s3_and_resume_from_there(flickr, s3_env):
    """--out s3://...: every file of the run folder is written through `storage`; resume and
    eval read them back from the bucket."""
    from wit_builder import storage
    from wit_builder.clip.checkpoint import load_for_eval

    out = f"s3://{BUCKET}/clip-run"
    first = _small_run(flickr["shards"], out, steps=2, save_every=1, keep=1, workers=0)
    assert first["checkpoint"] == f"{out}/LATEST.pt"
    names = sorted(u.rsplit("/", 1)[1] for u in storage.list_files(out))
    assert names == ["LATEST.pt", "log.jsonl", "step_00000002.pt", "tokenizer.json"]  # keep=1
    with pytest.raises(UserError, match="pass --resume"):
        _small_run(flickr["shards"], out, steps=3, workers=0)
    again = _small_run(flickr["shards"], out, steps=3, save_every=1, keep=1, workers=0, resume="auto")
    assert again["step"] == 3
    steps = [json.loads(line)["step"] for line in storage.read_text(f"{out}/log.jsonl").splitlines()]
    assert steps == [1, 2, 3]
    model, tokenizer, step = load_for_eval(f"{out}/LATEST.pt", torch.device("cpu"))
    assert step == 3 and tokenizer.vocab_size <= model.cfg.vocab_size


def test_shards_that_yield_no_sample_stop_train_with_one_error_line(tmp_path):
    """Empty, cut, compressed-garbage and junk-only shards: a full pass yields no sample, so train
    stops with one `error:` line (exit 2) instead of drawing them forever (issue 23 #8)."""
    import gzip
    import subprocess

    from hostile_tars import END, jpeg, member

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "00000.tar").write_bytes(b"")
    (shards / "00001.tar").write_bytes((member("a.jpg", jpeg()) + member("a.txt", b"cut"))[:700])
    (shards / "00002.tar").write_bytes(gzip.compress(b"not a tar" * 100))
    (shards / "00003.tar").write_bytes(member("b.jpg", b"<html>no</html>") + member("b.txt", b"junk")
                                       + member("c.jpg", jpeg()) + END)  # c has no caption
    done = subprocess.run([str(Path(sys.executable).parent / "wit-builder"), "train", "--shards",
                           str(shards / "{00000..00003}.tar"), "--model", "tiny", "--out",
                           str(tmp_path / "run"), "--steps", "5", "--batch-size", "4", "--workers", "1",
                           "--device", "cpu"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    assert "none of the 4 shards yields a usable sample" in done.stderr
