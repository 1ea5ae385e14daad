"""CPU throughput of the CLIP trainer: `tiny` training samples/s against the data loader alone.

    .venv/bin/python tests/benchmarks/bench_clip_train.py [--quick]

Shards are made from the flickr8k_dev train photos (stored at 256 px on the long side, about
what `download` writes). The baseline is the loader by itself (same shards, same workers, same
decode and crop), measured in the same run: their ratio says whether the loader could keep up.
Prints one JSON object.
"""

import argparse
import json
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
from wit_builder.clip.data import expand_shards, make_loader  # noqa: E402
from wit_builder.clip.model import load_config  # noqa: E402
from wit_builder.clip.tokenizer import TextTokenizer  # noqa: E402
from wit_builder.clip.train import train  # noqa: E402

SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def loader_samples_per_s(shards: str, tokenizer_json: str, batches: int, batch_size: int, workers: int,
                         model: str = "tiny", pin_memory: bool = False) -> float:
    """The data loader alone (the baseline that says whether training waits for data)."""
    cfg = load_config(model)
    tokenizer = TextTokenizer.from_json(tokenizer_json, cfg.context_length)
    loader = make_loader(expand_shards(shards), tokenizer, cfg.image_size, batch_size, workers,
                         shuffle_buffer=1000, seed="bench", pin_memory=pin_memory)
    it = iter(loader)
    for _ in range(max(3, workers)):  # workers started, buffers filled
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, batch_size, workers = (60, 64, 1) if args.quick else (200, 64, 1)
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_flickr_shards(SHARED / "images" / "flickr8k_dev" / "train", Path(tmp) / "shards", max_side=256)
        out = Path(tmp) / "run"
        train(TrainConfig(shards=shards, out=str(out), model="tiny", steps=steps, batch_size=batch_size,
                          workers=workers, log_every=10, save_every=steps, warmup=10, lr=1e-3))
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]  # skip start-up
        train_sps = sum(r["samples_per_s"] for r in records) / len(records)
        data_wait = sum(r["data_wait"] for r in records) / len(records)
        loader_sps = loader_samples_per_s(shards, (out / "tokenizer.json").read_text(),
                                          batches=steps // 4, batch_size=batch_size, workers=workers)
    result = {
        "benchmark": "clip_train_cpu", "model": "tiny", "steps": steps, "batch_size": batch_size,
        "loader_workers": workers, "torch_threads": torch.get_num_threads(),
        "train_samples_per_s": round(train_sps, 1), "train_data_wait_fraction": round(data_wait, 3),
        "baseline_loader_only_samples_per_s": round(loader_sps, 1),
        "ratio_loader_over_train": round(loader_sps / train_sps, 2),
        "loader_keeps_up": loader_sps > train_sps,
        "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
        "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
