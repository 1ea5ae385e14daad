"""What the screen stage runs, as `wit-builder doctor` and the stage's own check report it.

Every model ships inside an installed package; nothing is fetched at run time. Each function
returns (detail, facts) or raises UserError saying what to install or fix.
"""

from __future__ import annotations

import hashlib
import os

from wit_builder.errors import UserError
from wit_builder.screen import hashes, nsfw


def nudenet() -> tuple[str, dict]:
    """NudeNet's 320n detector: the file its wheel ships, loaded by onnxruntime."""
    try:
        path = nsfw.model_path()
        import onnxruntime
    except ImportError as e:
        raise UserError(f"{e}: pip install nudenet onnxruntime (the screen stage's NSFW score "
                        "and faces)") from None
    if not os.path.isfile(path):
        raise UserError(f"NudeNet's model is missing from its package: {path} (reinstall nudenet)")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    try:
        nsfw.Detector(path)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise UserError(f"onnxruntime {onnxruntime.__version__} cannot load {path}: {e}") from None
    size = os.path.getsize(path)
    return (f"NudeNet 320n, {size / 1e6:.1f} MB, onnxruntime {onnxruntime.__version__} ({path})",
            {"path": path, "bytes": size, "sha256_16": digest,
             "onnxruntime": onnxruntime.__version__})


def pdq() -> tuple[str, dict]:
    """The pdqhash package: hashes a small test image."""
    import numpy as np

    try:
        value = hashes.pdq_of(np.zeros((64, 64, 3), np.uint8))
    except ImportError:
        raise UserError("pdqhash is not installed: pip install pdqhash (it compiles: needs g++)") \
            from None
    return "pdqhash (PDQ, 256 bits)", {"bits": len(value) * 4}


def hash_lists(paths: list[str]) -> tuple[str, dict]:
    """The configured hash lists, parsed: how many PDQ and pHash hashes each holds."""
    lists = hashes.load_lists(list(paths))
    if not lists:
        return "none configured ([screen] hash_lists)", {}
    counts = {h.name: {"pdq": len(h.pdq), "phash": len(h.phash)} for h in lists}
    return ", ".join(f"{name}: {c['pdq']:,} PDQ + {c['phash']:,} pHash"
                     for name, c in counts.items()), counts
