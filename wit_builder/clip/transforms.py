"""Image preprocessing with PIL and torch only (PyPI torchvision does not import beside CPU torch).

Loader workers return uint8 tensors (4x less to copy between processes than float);
`normalize` turns them into the model's input on the training device.
"""

import math
import random

import torch
from PIL import Image

from wit_builder import images

# CLIP's normalisation constants (RGB mean and std of its training images).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def open_rgb(data: bytes) -> Image.Image:
    """Decode an image at full size, as `Image.open(f).convert("RGB")` does before Hugging Face's
    `CLIPImageProcessor`: a reduced JPEG decode (PIL's `draft`) is faster but gives other pixels,
    so a checkpoint and its export would score the same photo differently. An image over images'
    bounds (pixels, JPEG scans) is refused before decoding (images.ImageRefused), as PIL's errors
    refuse a corrupt one."""
    return images.decode(data, "RGB")


def eval_pixels(data: bytes, size: int) -> torch.Tensor:
    """The model input of eval and score (uint8): the decoded image, centre-cropped."""
    return center_crop(open_rgb(data), size)


def random_resized_crop(image: Image.Image, size: int, rng: random.Random,
                        scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """A crop of `scale` of the area and `ratio` aspect at a random place, resized to size x size."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return to_uint8_tensor(image.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch)))
    return center_crop(image, size)  # extreme aspect ratios: no such crop fits


def center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP's eval transform: shorter side resized to `size` (bicubic), then the central square.

    The same arithmetic as Hugging Face's `CLIPImageProcessor` (longer side `int(size * long /
    short)`, crop offset `(side - size) // 2`), so an exported model sees the same pixels.
    """
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return to_uint8_tensor(image.crop((left, top, left + size, top + size)))


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    w, h = image.size
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, scaled to [0, 1] and standardised with CLIP's mean and std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std
