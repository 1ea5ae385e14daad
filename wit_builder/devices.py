"""The one device picker of train, eval and score (torch imported only when asked)."""

from __future__ import annotations

from wit_builder.errors import UserError


def pick_device(name: str = "auto"):
    """auto: cuda when there is a GPU, else cpu; or cpu, cuda, cuda:N (checked to exist)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UserError(f"device {name}: this machine has {count} CUDA device(s) "
                            "(use --device cpu, or auto)")
    return device
