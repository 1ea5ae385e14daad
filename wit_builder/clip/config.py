"""Training options: one dataclass, the single home of their defaults (kept free of torch so the
CLI can build its parser from it without importing torch)."""

from dataclasses import dataclass

from wit_builder.errors import UserError


@dataclass
class TrainConfig:
    shards: str                      # brace pattern(s), '::'-separated; local or s3://
    out: str                         # checkpoints, tokenizer.json and log.jsonl go here
    model: str = "tiny"              # tiny | small | ViT-B-32 | path to a JSON config
    steps: int = 1000                # length of the schedule (optimizer steps)
    max_minutes: float | None = None  # stop early (with a checkpoint) after this much wall clock
    batch_size: int = 256            # pairs per rank per micro-batch
    accum: int = 1                   # micro-batches per step (negatives stay per micro-batch)
    lr: float = 5e-4
    warmup: int = 100                # linear warmup steps, then cosine to 0
    weight_decay: float = 0.2        # not on gains, biases or the logit scale
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    workers: int = 4                 # loader processes per rank
    threads: int | None = None       # CPU only: torch threads (default: the cores the workers leave)
    shuffle_buffer: int = 2000
    min_crop: float = 0.9            # random crops cover this much of the image area, or more
    seed: int = 0
    save_every: int = 1000
    keep: int = 3                    # step checkpoints kept (0 = all); LATEST.pt always
    log_every: int = 10
    precision: str = "auto"          # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    tokenizer: str | None = None     # tokenizer.json or CLIP's bpe_simple_vocab_16e6.txt.gz; else trained
    tokenizer_captions: int = 1_000_000  # captions read from the shards to train the tokenizer
    resume: str | None = None        # "auto" (OUT/LATEST.pt if any) or a checkpoint path

    def __post_init__(self):
        for name in ("steps", "batch_size", "accum", "save_every", "log_every", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UserError(f"max_minutes must be positive (got {self.max_minutes})")
        if not 0 < self.min_crop <= 1:
            raise UserError(f"min_crop must be in (0, 1] (got {self.min_crop})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"precision {self.precision!r}: use auto, bf16 or fp32")
