"""img2dataset's Resizer with cheaper JPEG decodes: TurboJPEG for whole JPEGs, and libjpeg's DCT
scaling for big ones.

img2dataset decodes every image with `cv2.imdecode(..., IMREAD_UNCHANGED)` at full size before
shrinking it to `image_size`. BoundedResizer decodes a clean YCbCr or grey JPEG (what the web
serves, nearly always) in one of two ways, then resizes, crops or pads and re-encodes exactly as
img2dataset does:

- At full size with TurboJPEG (simplejpeg): the same libjpeg-turbo decoder with the same
  settings (accurate integer IDCT, smooth chroma upsampling, no EXIF rotation), so the pixels,
  and therefore the output bytes, are identical; but about half the CPU of cv2's imdecode
  (measured on the shared Flickr photos: 0.18 ms against 0.31 ms), and no redirection of the
  process's stdout/stderr per image (libjpeg's warnings are ValueErrors here: such a JPEG goes
  to img2dataset's own code).
- At 1/2, 1/4 or 1/8 of its size (cv2's IMREAD_REDUCED_* flags set libjpeg's scale_denom) when
  the reduced image still has at least `image_size` pixels on the side the resize mode measures
  (the shortest for keep_ratio and center_crop, the longest for border and keep_ratio_largest),
  so the final resize still shrinks it: a 6000x4000 photo then costs 1 MB of pixels, not 72 MB.
  The output has the size a full decode gives (computed from the true size, as albumentations
  computes it), and `original_width/height` stay the true size. A reduced decode gives other
  pixels than a full decode followed by INTER_AREA (DCT scaling averages in the frequency
  domain), but both are box-like downsamplings of the same picture. Progressive JPEGs still
  buffer their DCT coefficients at full size inside libjpeg (about 2 bytes per pixel and
  component before chroma subsampling), baseline ones do not.

Everything else (other formats, CMYK JPEGs, damaged JPEGs, resize_mode "no", blurring)
goes to img2dataset's own Resizer unchanged, so those outputs are byte-identical to
img2dataset's too. That Resizer is built on first need: importing img2dataset pulls in torch,
wandb and pandas (about 4 s in each new executor process), which the JPEGs of a usual shard
never need.
"""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

_SHORTEST = ("keep_ratio", "center_crop")
_LONGEST = ("border", "keep_ratio_largest")
# TurboJPEG's colorspace of a JPEG -> what cv2's IMREAD_UNCHANGED decodes it to
_CHANNELS = {"YCbCr": "BGR", "Gray": "GRAY"}
_REDUCED = {  # (colorspace, factor) -> cv2 flag; orientation ignored, as IMREAD_UNCHANGED does
    ("YCbCr", 2): cv2.IMREAD_REDUCED_COLOR_2, ("YCbCr", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("YCbCr", 8): cv2.IMREAD_REDUCED_COLOR_8, ("Gray", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("Gray", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, ("Gray", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def jpeg_header(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, colorspace) of a JPEG from its header alone; None for anything else."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # not a JPEG TurboJPEG reads: img2dataset's path decides
        return None
    return width, height, colorspace


def reduction(width: int, height: int, image_size: int, resize_mode) -> int:
    """The largest JPEG decode factor (8, 4, 2) that keeps the side `resize_mode` measures at
    least `image_size` pixels (libjpeg rounds reduced sides up); 1 when none does."""
    mode = getattr(resize_mode, "name", resize_mode)  # img2dataset's ResizeMode, or its name
    for factor in (8, 4, 2):
        w, h = -(-width // factor), -(-height // factor)
        if mode in _SHORTEST and min(w, h) >= image_size:
            return factor
        if mode in _LONGEST and max(w, h) >= image_size:
            return factor
    return 1


class BoundedResizer:
    """img2dataset's Resizer contract (`__call__(img_stream, blurring_bbox_list)` -> (image,
    width, height, original width, original height, error)) with cheaper JPEG decodes (see the
    module's docstring), at img2dataset's defaults for what it does not set."""

    def __init__(self, image_size, resize_mode, resize_only_if_bigger, encode_quality=95,
                 encode_format="jpg"):
        self.image_size, self.resize_mode = image_size, resize_mode
        self.resize_only_if_bigger = resize_only_if_bigger
        self.encode_quality, self.encode_format = encode_quality, encode_format
        self.encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), encode_quality]
        self._fallback = None

    def fallback(self, img_stream, blurring_bbox_list):
        """img2dataset's own Resizer, built on first use."""
        if self._fallback is None:
            from img2dataset.resizer import Resizer

            self._fallback = Resizer(self.image_size, self.resize_mode,
                                     self.resize_only_if_bigger, encode_quality=self.encode_quality,
                                     encode_format=self.encode_format)
        return self._fallback(img_stream, blurring_bbox_list)

    def _jpeg(self, img_stream, blurring_bbox_list):
        """(data, width, height, colorspace) of a JPEG this class decodes, or None."""
        if (blurring_bbox_list is not None or self.encode_format != "jpg"
                or self.resize_mode not in _SHORTEST + _LONGEST):
            return None
        img_stream.seek(0)
        data = img_stream.read()
        img_stream.seek(0)
        header = jpeg_header(data)
        if header is None or header[2] not in _CHANNELS:
            return None
        return (data, *header)

    def __call__(self, img_stream, blurring_bbox_list=None):
        jpeg = self._jpeg(img_stream, blurring_bbox_list)
        if jpeg is None:
            return self.fallback(img_stream, blurring_bbox_list)
        data, width, height, colorspace = jpeg
        factor = reduction(width, height, self.image_size, self.resize_mode)
        try:
            cv2.setNumThreads(1)  # as img2dataset: one shard, one core
            if factor == 1:
                try:
                    img = simplejpeg.decode_jpeg(data, _CHANNELS[colorspace])
                except ValueError:  # damaged, or libjpeg warned: img2dataset's path decides
                    return self.fallback(img_stream, blurring_bbox_list)
                if colorspace == "Gray":
                    img = img[:, :, 0]  # cv2 gives a grey image as one plane
            else:
                img = cv2.imdecode(np.frombuffer(data, np.uint8),
                                   _REDUCED[colorspace, factor] | cv2.IMREAD_IGNORE_ORIENTATION)
                if img is None:
                    raise ValueError("Image decoding error")
            return self._finish(img, width, height)
        except Exception as err:  # noqa: BLE001 - img2dataset's contract: the error as a string
            return None, None, None, None, None, str(err)

    def _finish(self, img, original_width: int, original_height: int):
        """img2dataset's resize, crop or pad and encoding, on the true size (its size checks
        are off by default, as here)."""
        side = min if self.resize_mode in _SHORTEST else max
        downscale = side(original_width, original_height) > self.image_size
        if downscale or not self.resize_only_if_bigger:
            # the size albumentations' SmallestMaxSize / LongestMaxSize gives the full image
            scale = self.image_size / side(original_height, original_width)
            size = (max(1, round(original_width * scale)), max(1, round(original_height * scale)))
            # img2dataset's defaults: "area" to shrink, "lanczos" to enlarge
            interpolation = cv2.INTER_AREA if downscale else cv2.INTER_LANCZOS4
            img = cv2.resize(img, size, interpolation=interpolation)
            if self.resize_mode == "center_crop":
                import albumentations as A  # img2dataset's crop

                img = A.CenterCrop(height=self.image_size, width=self.image_size)(image=img)["image"]
            elif self.resize_mode == "border":
                import albumentations as A  # img2dataset's pad

                img = A.PadIfNeeded(min_height=self.image_size, min_width=self.image_size,
                                    border_mode=cv2.BORDER_CONSTANT, value=[255, 255, 255],
                                    p=1.0)(image=img)["image"]
        height, width = img.shape[:2]
        img_str = cv2.imencode(f".{self.encode_format}", img, params=self.encode_params)[1].tobytes()
        return img_str, width, height, original_width, original_height, None
