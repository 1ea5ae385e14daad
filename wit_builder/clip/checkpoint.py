"""Checkpoints: `OUT/step_00001000.pt` written atomically, `OUT/LATEST.pt` the newest of them.

A checkpoint holds everything a run needs to continue exactly or be evaluated alone: model,
optimiser and scheduler state, step, model config, the tokenizer (as JSON) and training options.
"""

import os
import shutil
from pathlib import Path

import torch

from wit_builder.clip.model import CLIP, config_from_dict
from wit_builder.clip.tokenizer import TextTokenizer
from wit_builder.errors import UserError

LATEST = "LATEST.pt"


def save(out: Path, state: dict, keep: int) -> Path:
    """Write step_N.pt then point LATEST.pt at it, each by rename (never a half-written file)."""
    path = out / f"step_{state['step']:08d}.pt"
    tmp = out / f".{path.name}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    latest_tmp = out / f".{LATEST}.tmp"
    latest_tmp.unlink(missing_ok=True)
    try:
        os.link(path, latest_tmp)  # a hard link: no second copy on disk
    except OSError:
        shutil.copyfile(path, latest_tmp)
    os.replace(latest_tmp, out / LATEST)
    if keep > 0:
        for old in sorted(out.glob("step_*.pt"))[:-keep]:
            old.unlink()
    return path


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        raise UserError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or not {"model", "model_config", "tokenizer", "step"} <= state.keys():
        raise UserError(f"{path} is not a wit-builder CLIP checkpoint")
    return state


def load_for_eval(path: str | Path, device: torch.device) -> tuple[CLIP, TextTokenizer, int]:
    state = load(path)
    cfg = config_from_dict(state["model_config"], source=str(path))
    model = CLIP(cfg)
    model.load_state_dict(state["model"])
    tokenizer = TextTokenizer.from_json(state["tokenizer"], cfg.context_length)
    return model.to(device).eval(), tokenizer, state["step"]
