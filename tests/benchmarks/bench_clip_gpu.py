"""GPU throughput of the CLIP trainer: ViT-B-32, batch 256, bf16 autocast; peak memory; and
whether the data loader keeps up (baseline: the loader alone, same shards and workers).

Makes its own synthetic shards (256 px JPEGs with structure and noise, so decoding costs what
real photos cost; random word captions): the device machine has no ../shared.

Prepared for the device tool (one short run, ~3-4 minutes). The machine lacks webdataset and
braceexpand: here, once, in the repo root

    echo /.whl/ >> .git/info/exclude
    .venv/bin/pip download --no-deps --only-binary=:all: -d .whl webdataset==0.2.111 braceexpand==0.1.7

then run with carry [".whl"] and timeout_s 420:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
      && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 tests/benchmarks/bench_clip_gpu.py --out $OUT/clip_gpu.json

Prints one JSON object (and writes it to --out).
"""

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from wit_builder.clip.config import TrainConfig
from wit_builder.clip.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clip_train import loader_samples_per_s  # noqa: E402

WORDS = ("dog cat man woman child red blue green black white running jumping sitting on the in a "
         "grass water snow beach street park ball bike car tree mountain shirt hat playing").split()


def _jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.effect_noise((256, 192), rng.uniform(20, 60)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(256), rng.randrange(192)
        draw.ellipse((x, y, x + rng.randrange(20, 120), y + rng.randrange(20, 120)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_shard(args) -> str:
    from webdataset import TarWriter

    path, first, count = args
    rng = random.Random(first)
    with TarWriter(path) as writer:
        for i in range(first, first + count):
            caption = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(6, 16)))
            writer.write({"__key__": f"{i:08d}", "jpg": _jpeg(i), "txt": caption})
    return path


def make_shards(folder: Path, shards: int, per_shard: int) -> str:
    with Pool(min(shards, os.cpu_count() or 1)) as pool:
        pool.map(_write_shard, [(str(folder / f"{s:05d}.tar"), s * per_shard, per_shard) for s in range(shards)])
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        shards = make_shards(Path(tmp), shards=16, per_shard=500)
        shard_s = time.perf_counter() - t
        out = Path(tmp) / "run"
        torch.cuda.reset_peak_memory_stats()
        train(TrainConfig(shards=shards, out=str(out), model="ViT-B-32", steps=args.steps,
                          batch_size=args.batch_size, workers=args.workers, log_every=10,
                          save_every=args.steps, warmup=10, precision="bf16", compile=args.compile,
                          tokenizer_captions=8000))
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][2:]  # warm-up
        train_sps = sum(r["samples_per_s"] for r in records) / len(records)
        data_wait = sum(r["data_wait"] for r in records) / len(records)
        loader_sps = loader_samples_per_s(shards, (out / "tokenizer.json").read_text(), batches=30,
                                          batch_size=args.batch_size, workers=args.workers,
                                          model="ViT-B-32", pin_memory=True)
    result = {
        "benchmark": "clip_train_gpu", "model": "ViT-B-32", "batch_size": args.batch_size,
        "precision": "bf16", "compile": args.compile, "steps": args.steps, "loader_workers": args.workers,
        "train_samples_per_s": round(train_sps, 1), "train_data_wait_fraction": round(data_wait, 3),
        "peak_memory_gib": round(peak_gib, 2),
        "baseline_loader_only_samples_per_s": round(loader_sps, 1),
        "ratio_loader_over_train": round(loader_sps / train_sps, 2),
        "loader_keeps_up": data_wait < 0.05, "shard_making_s": round(shard_s, 1),
        "gpu": torch.cuda.get_device_name(), "cores": os.cpu_count(), "torch": torch.__version__,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
