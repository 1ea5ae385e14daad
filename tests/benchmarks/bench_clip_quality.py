"""Quality of a short CPU run: `tiny` CLIP trained on flickr8k_dev train (815 photos x 5
captions) for 900 steps (capped at 18 minutes), then val retrieval (185 photos, 925 captions) and CIFAR-10
zero-shot (2,000 test images, the paper's 18 templates).

    nohup .venv/bin/python tests/benchmarks/bench_clip_quality.py > /tmp/q.json &   # not in CI

The baseline is chance, computed exactly for the same data: R@k of a model that knows nothing,
and 10% zero-shot top-1. Flickr8k never mentions airplanes, cars, deer, frogs or ships, so
CIFAR-10 is expected near chance. Prints one JSON object.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from clip_shards import write_flickr_shards  # noqa: E402

from wit_builder.clip.config import TrainConfig  # noqa: E402
from wit_builder.clip.evaluate import evaluate  # noqa: E402
from wit_builder.clip.train import train  # noqa: E402

SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def chance_recall(candidates: int, right: int, k: int) -> float:
    """P[at least one of `right` candidates among the top k of `candidates` in random order]."""
    return 1 - math.comb(candidates - right, k) / math.comb(candidates, k)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 minutes instead of 18")
    parser.add_argument("--steps", type=int, default=900)  # 815 photos: 3000 steps overfit (worse val)
    parser.add_argument("--max-minutes", type=float, default=18.0)
    args = parser.parse_args()
    minutes, steps = (2.0, 200) if args.quick else (args.max_minutes, args.steps)
    flickr = SHARED / "images" / "flickr8k_dev"
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_flickr_shards(flickr / "train", Path(tmp) / "shards", max_side=96)
        started = time.monotonic()
        summary = train(TrainConfig(shards=shards, out=f"{tmp}/run", model="tiny", steps=steps,
                                    max_minutes=minutes, batch_size=64, lr=1e-3, warmup=100,
                                    workers=1, shuffle_buffer=500, min_crop=0.5, save_every=steps,
                                    log_every=50))
        train_minutes = (time.monotonic() - started) / 60
        with contextlib.redirect_stdout(sys.stderr):  # the eval table; stdout is the JSON alone
            results = evaluate(summary["checkpoint"], retrieval=str(flickr / "val" / "captions.tsv"),
                               zeroshot=str(SHARED / "images" / "cifar10_test" / "labels.tsv"),
                               templates=str(SHARED / "eval" / "cifar10_templates.json"), workers=1)
    ret, zs = results["retrieval"], results["zeroshot"]
    chance = {**{f"i2t_R@{k}": chance_recall(925, 5, k) for k in (1, 5, 10)},
              **{f"t2i_R@{k}": chance_recall(185, 1, k) for k in (1, 5, 10)}, "cifar10_top1": 0.1}
    observed = {**{k: ret[k] for k in chance if k in ret}, "cifar10_top1": zs["top1"]}
    print(json.dumps({
        "benchmark": "clip_quality_cpu", "model": "tiny", "train_data": "flickr8k_dev/train (815 images, 4075 pairs)",
        "steps_done": summary["step"], "steps_planned": steps, "stopped_by_time": summary["stopped_early"],
        "train_minutes": round(train_minutes, 1), "final_loss": round(summary["loss"], 4),
        "val_retrieval": {k: round(v, 4) for k, v in observed.items() if k != "cifar10_top1"},
        "cifar10_zeroshot": {k: round(zs[k], 4) for k in ("top1", "top5", "mean_per_class_recall")},
        "baseline_chance": {k: round(v, 4) for k, v in chance.items()},
        "ratio_over_chance": {k: round(observed[k] / chance[k], 2) for k in chance},
        "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
        "python": platform.python_version(), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
