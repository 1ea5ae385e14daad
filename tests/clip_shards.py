"""Test helper: WebDataset shards (KEY.jpg, KEY.txt, KEY.json) from the flickr8k_dev photos.

Imported by the CLIP tests and benchmarks; shards go to a temporary folder, never to shared data.
"""

import csv
import io
import json
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


def flickr_samples(split_dir: Path, max_side: int = 96):
    """One sample per (image, caption) pair, in file order."""
    for name, captions in sorted(read_captions(split_dir).items()):
        data = jpeg_bytes(split_dir / name, max_side)
        for j, caption in enumerate(captions):
            yield {"__key__": f"{Path(name).stem}_{j}", "jpg": data, "txt": caption,
                   "json": json.dumps({"image": name, "caption_index": j})}


def write_flickr_shards(split_dir: Path, out_dir: Path, per_shard: int = 1000, max_side: int = 96) -> str:
    """Shards of a flickr8k_dev split; returns the brace pattern naming them."""
    paths = write_shards(flickr_samples(split_dir, max_side), out_dir, per_shard)
    return str(out_dir / f"{{00000..{len(paths) - 1:05d}}}.tar")
