"""Data for the trainer and the evaluator.

Training streams WebDataset shards (`KEY.jpg` + `KEY.txt`, other members ignored) local or on
s3://: each loader worker draws shards at random with replacement (resampling: no epochs, any
number of steps), shuffles samples in a buffer, decodes and crops, and emits whole batches of
(uint8 images, token ids). Shards are read by the shared tar reader (shard/tars.py). Bad
samples (undecodable image or one over images' bounds, no caption, unreadable shard) are
skipped and counted, with a rate-limited warning; when a full pass over the shards yields no
usable sample the stream ends, and the trainer stops with an error.

The stream is a pure function of its seed: the trainer keys it on (seed, rank, step at which the
loader starts) so that a run resumed from a checkpoint sees exactly the batches the uninterrupted
run saw.

Evaluation reads a `captions.tsv` / `labels.tsv` (path + caption or label, paths relative to the
file), a folder per class, or WebDataset shards with `.cls`.
"""

import csv
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import braceexpand
import torch
from webdataset.filters import shuffle

from wit_builder.clip.transforms import eval_pixels, open_rgb, random_resized_crop
from wit_builder.errors import UserError
from wit_builder.shard.samples import IMAGE_EXTS
from wit_builder.shard.tars import read_samples as read_tar_samples
from wit_builder.images import ImageRefused, open_checked

log = logging.getLogger(__name__)



def expand_shards(spec: str | list[str]) -> list[str]:
    """`dir/{00000..00009}.tar` (brace patterns, several separated by `::`) -> shard URLs."""
    specs = spec.split("::") if isinstance(spec, str) else list(spec)
    urls = [url for s in specs if s for url in braceexpand.braceexpand(s)]
    if not urls:
        raise UserError("empty shard list (give --shards like 'out/shards/{00000..00009}.tar')")
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]} "
                        "(check the --shards pattern)")
    return urls


class SkipCounter:
    """Counts skipped samples by reason; warns at most once every `every_s` seconds per process."""

    def __init__(self, every_s: float = 30.0):
        self.counts, self.every_s, self.last_warning = Counter(), every_s, -float("inf")

    def skip(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if time.monotonic() - self.last_warning >= self.every_s:
            self.last_warning = time.monotonic()
            log.warning("skipped bad samples (%s so far in this loader process); latest: %s at %s",
                        self.totals(), reason, where)

    def totals(self) -> str:
        return ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items())) or "none"


def _shard_samples(url: str, skips: SkipCounter) -> Iterator[dict]:
    """One shard's samples {"__key__", "__url__", "jpg": bytes, "txt": bytes, ...}, read by the
    shared tar reader (shard/tars.py: members bounded, damage ends the shard); a sample it
    reports a problem with, and a shard that does not open, are skipped and counted."""
    try:
        # storage: the S3 endpoint and retry settings; refused credentials stop with a UserError
        for key, files, problem in read_tar_samples(url):
            if problem:
                skips.skip(problem, f"{url}:{key}")
                continue
            yield {"__key__": key, "__url__": url, **files}
    except OSError as e:
        skips.skip("unreadable_shard", f"{url}: {e}")


def read_samples(urls: Iterator[str], skips: SkipCounter) -> Iterator[dict]:
    """The samples of the shards `urls` names, in order (see _shard_samples)."""
    for url in urls:
        yield from _shard_samples(url, skips)


def iter_captions(urls: list[str], limit: int) -> Iterator[str]:
    """Up to `limit` captions, shards in order: the tokenizer's training text."""
    skips = SkipCounter()
    captions = (sample["txt"] for sample in read_samples(iter(urls), skips) if "txt" in sample)
    for n, text in enumerate(captions):
        if n >= limit:
            return
        yield text.decode("utf-8", "replace")


def _resampled(urls: list[str], rng: random.Random) -> Iterator[str]:
    """Shards drawn with replacement, forever: no epoch boundaries, any number of steps."""
    while True:
        yield rng.choice(urls)


def _image_bytes(sample: dict) -> bytes | None:
    return next((sample[ext] for ext in IMAGE_EXTS if ext in sample), None)


class ShardStream(torch.utils.data.IterableDataset):
    """Endless batches (uint8 images (B, 3, S, S), token ids (B, context)) from resampled shards."""

    def __init__(self, urls: list[str], tokenizer, image_size: int, batch_size: int,
                 shuffle_buffer: int, seed: str, min_crop: float = 0.9):
        self.urls, self.tokenizer, self.image_size = urls, tokenizer, image_size
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.crop_scale = (min_crop, 1.0)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}/worker{worker.id if worker else 0}")
        skips = SkipCounter()
        samples = _candidates(_resampled(self.urls, rng), len(set(self.urls)), skips)
        images, captions = [], []
        for sample in shuffle(self.shuffle_buffer, self.shuffle_buffer // 2, rng=rng)(samples):
            try:
                image = random_resized_crop(open_rgb(_image_bytes(sample)),
                                            self.image_size, rng, scale=self.crop_scale)
            except Exception:  # PIL raises many types on corrupt files
                skips.skip("corrupt_image", f"{sample['__url__']}:{sample['__key__']}")
                continue
            images.append(image)
            captions.append(sample["txt"].decode("utf-8", "replace"))
            if len(images) == self.batch_size:
                yield torch.stack(images), self.tokenizer(captions)
                images, captions = [], []


def _candidates(urls: Iterator[str], shards: int, skips: SkipCounter) -> Iterator[dict]:
    """The samples, from the shards `urls` draws, that have a caption and an image whose header
    is within images' bounds (pixels, JPEG scans; checked before the shuffle buffer, so a shard
    of bombs or junk yields nothing).

    Ends when all `shards` distinct shards were drawn in a row without one candidate: a full pass
    that yields nothing (empty, cut, unreadable shards, or no usable pairs) would yield nothing
    ever again, and the endless draw would spin (re-reading, re-requesting) forever. The trainer
    reports the end of the stream as an error."""
    barren: set[str] = set()
    for url in urls:
        found = False
        for sample in _shard_samples(url, skips):
            reason = _refusal(sample)
            if reason:
                skips.skip(reason, f"{url}:{sample['__key__']}")
                continue
            found = True
            yield sample
        if found:
            barren.clear()
            continue
        barren.add(url)
        if len(barren) == shards:
            log.error("no usable sample in any of the %d shards (skipped: %s)", shards, skips.totals())
            return


def _refusal(sample: dict) -> str | None:
    """Why a sample cannot train (missing_image, missing_caption, or images' refusal), or None."""
    data, text = _image_bytes(sample), sample.get("txt")
    if data is None:
        return "missing_image"
    if text is None or not text.strip():
        return "missing_caption"
    try:
        open_checked(data).close()
    except ImageRefused as e:
        return e.reason
    return None


def make_loader(urls: list[str], tokenizer, image_size: int, batch_size: int, workers: int,
                shuffle_buffer: int, seed: str, min_crop: float = 0.9, pin_memory: bool = False):
    stream = ShardStream(urls, tokenizer, image_size, batch_size, shuffle_buffer, seed, min_crop)
    # batch_size=None: batches are made in the workers; workers are read round-robin, in order,
    # so the sequence of batches depends only on the seed.
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                       pin_memory=pin_memory,
                                       prefetch_factor=4 if workers else None)


# ---------------------------------------------------------------------------- evaluation sets

def read_tsv(path: str | Path, value: str) -> list[tuple[str, str]]:
    """(absolute image path, value) rows of a tab-separated file whose header names `path` and `value`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (give a tab-separated file with a header 'path<TAB>{value}')")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not {"path", value} <= set(reader.fieldnames or []):
            raise UserError(f"{path}: header {reader.fieldnames} lacks 'path' and '{value}' "
                            "(first row must name the columns, tab-separated)")
        rows = [(str(path.parent / row["path"]), row[value]) for row in reader if row["path"]]
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def read_class_folders(root: str | Path) -> list[tuple[str, str]]:
    """(image path, folder name) for images in `root/<class>/`."""
    root = Path(root)
    rows = [(str(p), d.name) for d in sorted(root.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir()) if p.suffix.lower().lstrip(".") in IMAGE_EXTS]
    if not rows:
        raise UserError(f"{root} has no class folders with images (expected {root}/<class>/<image>)")
    return rows


class ImageFiles(torch.utils.data.Dataset):
    """Eval images: center crop, uint8; an unreadable file yields ok=False instead of raising."""

    def __init__(self, paths: list[str], image_size: int):
        self.paths, self.image_size = paths, image_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            with open(self.paths[i], "rb") as f:
                return eval_pixels(f.read(), self.image_size), True
        except Exception:  # missing or corrupt: reported as a count by the evaluator
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), False


def iter_shard_classification(urls: list[str], image_size: int) -> Iterator[tuple[torch.Tensor, int] | None]:
    """(center-cropped uint8 image, class index) from shards with `.cls`; None for a bad sample."""
    skips = SkipCounter()
    for sample in read_samples(iter(urls), skips):
        data, cls = _image_bytes(sample), sample.get("cls")
        try:
            yield eval_pixels(data, image_size), int(cls)
        except Exception:  # no image, no class or undecodable: counted by the evaluator
            yield None
