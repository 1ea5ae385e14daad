"""Test helper: WebDataset shards (KEY.jpg, KEY.txt, KEY.json) from the flickr8k_dev photos.

Imported by the CLIP tests and benchmarks; shards go to a temporary folder, never to shared data.
"""

import csv
import io
import json
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image
from webdataset import TarWriter


def write_shards(samples, out_dir: Path, per_shard: int = 1000) -> list[str]:
    """Write dicts {"__key__", "jpg", "txt", ...} into out_dir/00000.tar, 00001.tar, ..."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, writer = [], None
    for i, sample in enumerate(samples):
        if i % per_shard == 0:
            if writer:
                writer.close()
            paths.append(str(out_dir / f"{len(paths):05d}.tar"))
            writer = TarWriter(paths[-1])
        writer.write(sample)
    if writer:
        writer.close()
    return paths


def jpeg_bytes(path: Path, max_side: int) -> bytes:
    """The photo shrunk to at most `max_side` pixels (small tests decode fast) as JPEG."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((max_side, max_side), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def read_captions(split_dir: Path) -> dict[str, list[str]]:
    """image file name -> its captions, from split_dir/captions.tsv."""
    captions = defaultdict(list)
    with (split_dir / "captions.tsv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            captions[row["path"]].append(row["caption"])
    return dict(captions)


def write_flickr_shards(split_dir: Path, out_dir: Path, max_side: int = 96, seed: int = 0) -> str:
    """Shards of a flickr8k_dev split, shard k holding caption k of every image in its own random
    order; returns the brace pattern naming them.

    Like web data, a shard then never holds one image twice, so a batch drawn from a shuffle
    buffer rarely pairs an image with a second caption of its own as a false negative.
    """
    captions = read_captions(split_dir)
    images = {name: jpeg_bytes(split_dir / name, max_side) for name in sorted(captions)}
    rng = random.Random(seed)
    rounds = max(len(c) for c in captions.values())
    samples = []
    for j in range(rounds):
        order = [name for name in images if j < len(captions[name])]
        rng.shuffle(order)
        samples += [{"__key__": f"{Path(name).stem}_{j}", "jpg": images[name], "txt": captions[name][j],
                     "json": json.dumps({"image": name, "caption_index": j})} for name in order]
    paths = write_shards(samples, out_dir, per_shard=len(images))
    return str(out_dir / f"{{00000..{len(paths) - 1:05d}}}.tar")
