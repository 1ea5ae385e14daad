"""img2dataset's Resizer, decoding big JPEGs at a reduced size (libjpeg's DCT scaling).

img2dataset decodes every image at full size (`cv2.imdecode(..., IMREAD_UNCHANGED)`) before
shrinking it to `image_size`: a 6000x4000 photo costs 72 MB of pixels (and libjpeg's working
buffers) for a 384x256 result. A JPEG can be decoded directly at 1/2, 1/4 or 1/8 of its size
(cv2's IMREAD_REDUCED_* flags set libjpeg's scale_denom), which costs a quarter to a
sixty-fourth of that. BoundedResizer does so when the reduced image still has at least
`image_size` pixels on the side the resize mode measures (the shortest for keep_ratio and
center_crop, the longest for border and keep_ratio_largest), so the final resize still shrinks it;
the output has the size a full decode gives (computed from the true size, as albumentations
computes it), and `original_width/height` stay the true size. Everything else (not a JPEG, CMYK
JPEGs, too small to reduce, resize_mode "no", blurring, re-encoding switches) goes to
img2dataset's own code unchanged, so those outputs are byte-identical to img2dataset's.

A reduced decode gives other pixels than a full decode followed by INTER_AREA (DCT scaling
averages in the frequency domain), but both are box-like downsamplings of the same picture.
Progressive JPEGs still buffer their DCT coefficients at full size inside libjpeg (about 2 bytes
per pixel and component before chroma subsampling), baseline ones do not.
"""

from __future__ import annotations

import io

import albumentations as A
import cv2
import numpy as np
from img2dataset.resizer import Resizer, ResizeMode, SuppressStdoutStderr

_SHORTEST = (ResizeMode.keep_ratio, ResizeMode.center_crop)
_LONGEST = (ResizeMode.border, ResizeMode.keep_ratio_largest)
_REDUCED = {  # (PIL mode, factor) -> cv2 flag; orientation ignored, as IMREAD_UNCHANGED does
    ("RGB", 2): cv2.IMREAD_REDUCED_COLOR_2, ("RGB", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("RGB", 8): cv2.IMREAD_REDUCED_COLOR_8, ("L", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("L", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, ("L", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def jpeg_header(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, PIL mode) of a JPEG from its header alone; None for anything else."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header, decodes nothing
            if img.format != "JPEG":
                return None
            return img.width, img.height, img.mode
    except Exception:  # noqa: BLE001 - cv2 may still decode it: img2dataset's path decides
        return None


def reduction(width: int, height: int, image_size: int, resize_mode) -> int:
    """The largest JPEG decode factor (8, 4, 2) that keeps the side `resize_mode` measures at
    least `image_size` pixels (libjpeg rounds reduced sides up); 1 when none does."""
    for factor in (8, 4, 2):
        w, h = -(-width // factor), -(-height // factor)
        if resize_mode in _SHORTEST and min(w, h) >= image_size:
            return factor
        if resize_mode in _LONGEST and max(w, h) >= image_size:
            return factor
    return 1


class BoundedResizer(Resizer):
    """img2dataset's Resizer whose JPEG decodes are bounded by the target size."""

    def _plan(self, img_stream, blurring_bbox_list):
        """(data, width, height, cv2 flag) for a reduced decode, or None for img2dataset's."""
        if (blurring_bbox_list is not None or self.disable_all_reencoding or self.skip_reencode
                or self.resize_mode not in _SHORTEST + _LONGEST):
            return None
        img_stream.seek(0)
        data = img_stream.read()
        img_stream.seek(0)
        header = jpeg_header(data)
        if header is None:
            return None
        width, height, mode = header
        factor = reduction(width, height, self.image_size, self.resize_mode)
        flag = _REDUCED.get((mode, factor))
        return None if flag is None else (data, width, height, flag | cv2.IMREAD_IGNORE_ORIENTATION)

    def __call__(self, img_stream, blurring_bbox_list=None):
        plan = self._plan(img_stream, blurring_bbox_list)
        if plan is None:
            return super().__call__(img_stream, blurring_bbox_list)
        try:
            with SuppressStdoutStderr():
                cv2.setNumThreads(1)
                return self._reduced(*plan)
        except Exception as err:  # noqa: BLE001 - img2dataset's contract: the error as a string
            return None, None, None, None, None, str(err)

    def _reduced(self, data: bytes, original_width: int, original_height: int, flag: int):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if img is None:
            raise ValueError("Image decoding error")
        # img2dataset's checks, on the true size
        if min(original_height, original_width) < self.min_image_size:
            return None, None, None, None, None, "image too small"
        if original_height * original_width > self.max_image_area:
            return None, None, None, None, None, "image area too large"
        if max(original_height, original_width) / min(original_height, original_width) > self.max_aspect_ratio:
            return None, None, None, None, None, "aspect ratio too large"
        # the size albumentations' SmallestMaxSize / LongestMaxSize gives the full image
        side = min if self.resize_mode in _SHORTEST else max
        scale = self.image_size / side(original_height, original_width)
        size = (max(1, round(original_width * scale)), max(1, round(original_height * scale)))
        img = cv2.resize(img, size, interpolation=self.downscale_interpolation)
        if self.resize_mode == ResizeMode.center_crop:
            img = A.CenterCrop(height=self.image_size, width=self.image_size)(image=img)["image"]
        elif self.resize_mode == ResizeMode.border:
            img = A.PadIfNeeded(min_height=self.image_size, min_width=self.image_size,
                                border_mode=cv2.BORDER_CONSTANT, value=[255, 255, 255],
                                p=1.0)(image=img)["image"]
        height, width = img.shape[:2]
        img_str = cv2.imencode(f".{self.encode_format}", img, params=self.encode_params)[1].tobytes()
        return img_str, width, height, original_width, original_height, None
