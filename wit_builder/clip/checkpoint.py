"""The run folder (local or s3://): checkpoints, `OUT/step_00001000.pt` written atomically and
`OUT/LATEST.pt` the newest of them, and `OUT/log.jsonl`.

A checkpoint holds everything a run needs to continue exactly or be evaluated alone: model,
optimiser and scheduler state, step, model config, the tokenizer (as JSON) and training options.
"""

import io
import json
import os
import posixpath
import shutil

import torch

from wit_builder import storage
from wit_builder.clip.model import CLIP, config_from_dict
from wit_builder.clip.tokenizer import TextTokenizer
from wit_builder.errors import UserError

LATEST = "LATEST.pt"


def save(out: str, state: dict, keep: int) -> str:
    """Write step_N.pt then LATEST.pt, each all-or-nothing (never a half-written file): locally
    by rename (LATEST.pt a hard link), on S3 by whole-object PUTs through `storage`."""
    out = str(out)
    name = f"step_{state['step']:08d}.pt"
    path, latest = storage.join(out, name), storage.join(out, LATEST)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    storage.write_bytes_atomic(path, data)
    if storage.is_remote(out):
        storage.write_bytes_atomic(latest, data)
    else:
        latest_tmp = os.path.join(out, f".{LATEST}.tmp")
        if os.path.exists(latest_tmp):
            os.unlink(latest_tmp)
        try:
            os.link(path, latest_tmp)  # a hard link: no second copy on disk
        except OSError:
            shutil.copyfile(path, latest_tmp)
        os.replace(latest_tmp, latest)
    if keep > 0:
        steps = [f for f in storage.list_files(out, suffixes=(".pt",))
                 if posixpath.basename(f).startswith("step_")]
        for old in sorted(steps)[:-keep]:
            storage.remove(old)
    return path


class RunLog:
    """OUT/log.jsonl: appended line by line locally; an S3 object cannot be appended to, so there
    it is rewritten whole at every checkpoint and at the end."""

    def __init__(self, out: str):
        self.path, self.remote = storage.join(out, "log.jsonl"), storage.is_remote(out)
        if self.remote:
            self.text = storage.read_text(self.path) if storage.exists(self.path) else ""
        else:
            self.file = open(self.path, "a")

    def write(self, record: dict) -> None:
        line = json.dumps(record) + "\n"
        if self.remote:
            self.text += line
        else:
            self.file.write(line)
            self.file.flush()

    def flush(self) -> None:
        if self.remote:
            storage.write_bytes_atomic(self.path, self.text.encode())

    def close(self) -> None:
        self.flush()
        if not self.remote:
            self.file.close()



def load(path: str) -> dict:
    path = str(path)
    if not storage.exists(path):
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with storage.open_file(path, "rb") as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        # their first line: torch's weights-only refusal runs over many lines, one an old traceback
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or not {"model", "model_config", "tokenizer", "step"} <= state.keys():
        raise UserError(f"{path} is not a wit-builder CLIP checkpoint")
    return state


def load_for_eval(path: str, device: torch.device) -> tuple[CLIP, TextTokenizer, int]:
    return model_of(load(path), str(path), device)


def model_of(state: dict, source: str, device: torch.device) -> tuple[CLIP, TextTokenizer, int]:
    """(model, tokenizer, step) of a loaded checkpoint, `source` naming it in errors."""
    cfg = config_from_dict(state["model_config"], source=source)
    model = CLIP(cfg)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:  # missing, extra or misshapen weights
        raise UserError(f"{source}: its weights do not fit its model config ({str(e)[:200]})") from None
    tokenizer = TextTokenizer.from_json(state["tokenizer"], cfg.context_length)
    return model.to(device).eval(), tokenizer, state["step"]
