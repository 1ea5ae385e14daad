"""Train CLIP on WebDataset shards: one process, or one per GPU under `torchrun` (DDP).

    wit-builder train --shards 'shards/{00000..00009}.tar' --model tiny --out runs/x --steps 2000

Each step takes `accum` micro-batches of `batch_size` pairs per rank, the contrastive loss over
the global micro-batch (features gathered across ranks), AdamW with linear warmup then cosine
decay, gradient clipping, and clamps the logit scale to ln(100). The contrastive negatives of a
pair are the other pairs of its micro-batch on every rank: `accum` accumulates gradients only, it
does not widen the loss's batch. With `val_data`, retrieval R@1/R@5 on held-out captions is
logged every `val_every` steps. Checkpoints go to OUT (local or s3://, through `storage`) every
`save_every` steps, at the end, and when `max_minutes` runs out; `resume` continues from one
exactly: the data loader restarts at every checkpoint with a seed keyed on that step, so the
resumed run draws the same batches the uninterrupted run drew.
"""

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from wit_builder import storage
from wit_builder.clip import checkpoint
from wit_builder.clip.config import TrainConfig
from wit_builder.clip.data import expand_shards, iter_captions, make_loader
from wit_builder.clip.model import CLIP, clip_loss, load_config
from wit_builder.clip.tokenizer import TextTokenizer, train_bpe
from wit_builder.clip.transforms import normalize
from wit_builder.clip.validate import Validator
from wit_builder.devices import pick_device
from wit_builder.errors import UserError


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear from 1/warmup to 1 over `warmup` steps, then cosine down to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; gains, biases and the logit scale (the parameters under 2-D) get no weight decay."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def setup_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun this joins the process group, and each process
    takes cuda:LOCAL_RANK (or the CPU, with device cpu or without a GPU)."""
    if "RANK" not in os.environ:
        return 0, 1, pick_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and device_name != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def find_resume(cfg: TrainConfig, out: str) -> dict | None:
    latest = storage.join(out, checkpoint.LATEST)
    if cfg.resume is None:
        if storage.exists(latest):
            raise UserError(f"{out} already holds checkpoints (pass --resume to continue, or a new --out)")
        return None
    if cfg.resume == "auto":
        return checkpoint.load(latest) if storage.exists(latest) else None
    return checkpoint.load(cfg.resume)


def get_tokenizer(cfg: TrainConfig, urls: list[str], context_length: int, vocab_size: int,
                  resumed: dict | None, out: str, rank: int, world: int) -> TextTokenizer:
    """From the checkpoint, from --tokenizer, or trained on the shards' captions (by rank 0)."""
    path = storage.join(out, "tokenizer.json")
    if resumed is not None:
        tokenizer = TextTokenizer.from_json(resumed["tokenizer"], context_length)
    elif cfg.tokenizer:
        tokenizer = TextTokenizer.from_file(cfg.tokenizer, context_length)
    else:
        if rank == 0:
            bpe = train_bpe(iter_captions(urls, cfg.tokenizer_captions), vocab_size)
            storage.write_bytes_atomic(path, bpe.to_str().encode())
        _barrier(world)
        tokenizer = TextTokenizer.from_json(storage.read_text(path), context_length)
    if tokenizer.vocab_size > vocab_size:
        raise UserError(f"tokenizer has {tokenizer.vocab_size} ids but model {cfg.model!r} embeds "
                        f"{vocab_size} (use a model config with a larger vocab_size)")
    if rank == 0:
        storage.write_bytes_atomic(path, tokenizer.to_json().encode())
    return tokenizer


def train(cfg: TrainConfig) -> dict:
    """Train until `cfg.steps` (or `max_minutes`); returns a summary of the run."""
    start_time = time.monotonic()
    rank, world, device = setup_distributed(cfg.device)
    if device.type == "cpu":  # oversubscribed cores make every multi-threaded op stall
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) - cfg.workers))
    urls = expand_shards(cfg.shards)
    model_cfg = load_config(cfg.model)
    out = cfg.out
    storage.check_writable(out)  # s3://: the bucket exists and takes our credentials
    if not storage.is_remote(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    resumed = find_resume(cfg, out)
    if resumed is not None and resumed["model_config"] != model_cfg.to_dict():
        raise UserError(f"checkpoint was trained with model {resumed['train_config']['model']!r}, "
                        f"whose config differs from {cfg.model!r} "
                        "(pass the same --model, or a new --out without --resume)")
    tokenizer = get_tokenizer(cfg, urls, model_cfg.context_length, model_cfg.vocab_size,
                              resumed, out, rank, world)

    torch.manual_seed(cfg.seed)
    model = CLIP(model_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup, cfg.steps))
    step = 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        step = resumed["step"]
    raw_model = model
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    validator = (Validator(cfg.val_data, tokenizer, model_cfg.image_size, cfg.batch_size)
                 if cfg.val_data and rank == 0 else None)
    log_file = checkpoint.RunLog(out) if rank == 0 else None
    batches, loss = None, None
    window = {"time": time.monotonic(), "step": step, "data_s": 0.0, "loss": 0.0}  # since last log
    while step < cfg.steps:
        if batches is None:  # (re)started at every checkpoint: the stream is keyed on this step
            batches = iter(make_loader(urls, tokenizer, model_cfg.image_size, cfg.batch_size,
                                       cfg.workers, cfg.shuffle_buffer, f"{cfg.seed}/{rank}/{step}",
                                       cfg.min_crop, pin_memory=device.type == "cuda"))
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for micro in range(cfg.accum):
            t = time.monotonic()
            images, tokens = _next_batch(batches, urls)
            window["data_s"] += time.monotonic() - t
            images = normalize(images.to(device, non_blocking=True))
            tokens = tokens.to(device, non_blocking=True)
            sync = world == 1 or micro == cfg.accum - 1  # all-reduce gradients once per step
            with (nullcontext() if sync else model.no_sync()), autocast:
                micro_loss = clip_loss(*model(images, tokens)) / cfg.accum
            micro_loss.backward()
            loss += micro_loss.detach()
        window["loss"] = window["loss"] + loss  # a tensor: no device sync until logged
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            raw_model.logit_scale.clamp_(0, math.log(100))
        step += 1

        out_of_time = cfg.max_minutes is not None and _agree(
            time.monotonic() - start_time > 60 * cfg.max_minutes, device, world)
        validate = validator is not None and (step % cfg.val_every == 0 or step == cfg.steps or out_of_time)
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time or validate:
            val = None
            if validate:
                t = time.monotonic()
                val = validator(raw_model, device, autocast)
                window["time"] += time.monotonic() - t  # not counted in samples/s
            record = log_step(cfg, step, scheduler, raw_model, window, world, val)
            if log_file:
                log_file.write(record)
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            if rank == 0:
                checkpoint.save(out, {
                    "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step,
                    "model_config": model_cfg.to_dict(), "tokenizer": tokenizer.to_json(),
                    "train_config": asdict(cfg)}, cfg.keep)
                log_file.flush()
            _barrier(world)
            batches = None
        if out_of_time:
            break
    if log_file:
        log_file.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"step": step, "loss": loss.item() if loss is not None else None,
            "checkpoint": storage.join(out, checkpoint.LATEST), "stopped_early": step < cfg.steps}


def _next_batch(batches, urls: list[str]):
    """The loader's next batch; its stream ends only when no shard yields a usable sample."""
    try:
        return next(batches)
    except StopIteration:
        raise UserError(f"none of the {len(urls)} shards yields a usable sample (image and "
                        "caption): are they empty, cut, unreadable or not WebDataset tars? "
                        "(the warnings above count what was skipped)") from None


def _agree(flag: bool, device: torch.device, world: int) -> bool:
    """Rank 0's clock decides for all ranks (they must stop at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([flag], dtype=torch.int32, device=device)
    torch.distributed.broadcast(t, 0)
    return bool(t.item())


def log_step(cfg: TrainConfig, step: int, scheduler, model: CLIP, window: dict, world: int,
             val: dict | None = None) -> dict:
    """The JSONL record (loss: mean over the steps since the last record; validation recalls when
    `val`) and a progress line."""
    now = time.monotonic()
    elapsed, steps = now - window["time"], step - window["step"]
    samples = steps * cfg.batch_size * cfg.accum * world
    record = {"step": step, "loss": round(float(window["loss"]) / steps, 6), "lr": scheduler.get_last_lr()[0],
              "logit_scale": round(model.logit_scale.exp().item(), 4),
              "samples_per_s": round(samples / elapsed, 2),
              "data_wait": round(window["data_s"] / elapsed, 4), **(val or {})}
    window.update(time=now, step=step, data_s=0.0, loss=0.0)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"step {step:>7}/{cfg.steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
              f"scale {record['logit_scale']:6.2f}  {record['samples_per_s']:8.1f} samples/s  "
              f"data wait {100 * record['data_wait']:4.1f}%" + (
                  f"  val R@1/R@5 i2t {100 * val['val_i2t_R@1']:.1f}/{100 * val['val_i2t_R@5']:.1f}%"
                  f" t2i {100 * val['val_t2i_R@1']:.1f}/{100 * val['val_t2i_R@5']:.1f}%" if val else ""),
              file=sys.stderr, flush=True)
    return record


def train_tokenizer(shards: str, out: str, vocab_size: int, max_captions: int = 1_000_000) -> Path:
    """Train a byte-level BPE on the shards' captions and write it as tokenizer.json."""
    tokenizer = train_bpe(iter_captions(expand_shards(shards), max_captions), vocab_size)
    path = Path(out)
    if path.suffix != ".json":
        path = path / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tokenizer.to_str())
    return path
