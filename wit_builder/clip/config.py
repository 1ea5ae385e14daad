"""Training options: the config's `[train]` section (wit_builder/settings.py holds the defaults,
so `wit-builder config` shows them and TOML files and `--set train.KEY=VALUE` set them) plus
the two things every run names itself: the shards and the run folder.

Kept free of torch so the CLI can build its parser without importing torch. In Python:
`TrainConfig(shards=..., out=..., steps=200)`; the options that mean "none" in TOML (0 or an
empty string) read as None here.
"""

import os
import re
from dataclasses import dataclass

from wit_builder.settings import TrainSection
from wit_builder.errors import UserError

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(kw_only=True)
class TrainConfig(TrainSection):
    shards: str                      # brace pattern(s), '::'-separated; local or s3://
    out: str                         # checkpoints, tokenizer.json and log.jsonl go here (local or s3://)

    def __post_init__(self):
        for name in ("max_minutes", "threads", "tokenizer", "resume", "val_data"):
            if not getattr(self, name):  # 0 / "" in TOML: not set
                setattr(self, name, None)
        for name in ("steps", "batch_size", "accum", "save_every", "log_every", "shuffle_buffer",
                     "val_every", "tokenizer_captions"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UserError(f"max_minutes must be positive (got {self.max_minutes})")
        if not 0 < self.min_crop <= 1:
            raise UserError(f"min_crop must be in (0, 1] (got {self.min_crop})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"precision {self.precision!r}: use auto, bf16 or fp32")
        if not DEVICE.fullmatch(self.device or ""):
            raise UserError(f"device {self.device!r}: use auto, cpu, cuda or cuda:N")
        try:
            beta1, beta2 = (float(b) for b in self.betas)
        except (TypeError, ValueError):
            raise UserError(f"betas {self.betas!r}: give two numbers, e.g. [0.9, 0.98]") from None
        self.betas = (beta1, beta2)
        if self.workers < 0:
            self.workers = cores_per_rank()


def cores_per_rank() -> int:
    """The cores this process may run on, shared among the ranks torchrun started on this
    machine: the loader's default number of workers (a fixed 4 oversubscribed small machines)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
