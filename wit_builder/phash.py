"""An image's 64-bit perceptual hash (pHash, imagehash's, bit for bit) and size, from its encoded
bytes: one implementation for finalize's near-duplicates and screen's hash lists.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as _Image

from wit_builder import images

_LANCZOS = _Image.Resampling.LANCZOS  # imagehash's ANTIALIAS


def phash_hex(value: int) -> str:
    """The 16-hex-digit form imagehash prints (`str(imagehash.phash(img))`)."""
    return format(value & 0xFFFF_FFFF_FFFF_FFFF, "016x")


# The first 8 rows of scipy.fftpack's unnormalised 32-point DCT-II matrix.
_DCT8 = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)
_TIE = 1e-6  # a low-frequency coefficient this close to the median takes imagehash's own path


def phash_of_gray(gray) -> int:
    """imagehash.phash of a grayscale PIL image as a signed 64-bit int, bit for bit.

    Same 32x32 LANCZOS thumbnail and 2-D DCT-II as imagehash; only the 8x8 low frequencies are
    computed (two small matrix products instead of two full FFT-based DCTs). Products and FFT
    round differently in the last bits, so when a coefficient lies within _TIE of the median
    (where a rounding difference could flip its bit) the hash is computed with scipy.fftpack
    exactly as imagehash does."""
    pixels = np.asarray(gray.resize((32, 32), _LANCZOS), dtype=np.float64)
    c = _DCT8
    low = c @ pixels @ c.T
    middle = np.partition(low.ravel(), (31, 32))  # np.median's two middle values, its mean
    med = (middle[31] + middle[32]) / 2
    if np.min(np.abs(low - med)) < _TIE:
        import scipy.fftpack

        dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
        low = dct[:8, :8]
        med = np.median(low)
    bits = np.packbits((low > med).flatten())
    return int.from_bytes(bits.tobytes(), "big", signed=True)


def _gray_thumbnail_source(data: bytes):
    """((width, height), the image decoded to grayscale in draft mode) of an encoded image, or
    None if it does not decode; ImageRefused when it is over `images`' bounds (pixels, scans),
    before anything is decoded.

    pHash looks at a 32x32 thumbnail: the JPEG decoder may scale down by up to 8x in the DCT (a
    no-op for other formats). The whole stream is still decoded, so a truncated file fails here
    as it should."""
    try:
        img = images.open_checked(data)
    except images.ImageRefused as e:
        if e.reason == "not_an_image":
            return None
        raise
    try:
        with img:
            size = img.size
            img.draft("L", (64, 64))
            return size, img.convert("L")
    except Exception:  # any decoder error is bad data: the caller counts it as a drop
        return None


def image_facts(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, pHash as a signed 64-bit int) of an encoded image; None if it does not
    decode, ImageRefused if it is too big to decode (images.open_checked).

    The pHash is imagehash.phash of the image decoded in draft mode, bit for bit."""
    decoded = _gray_thumbnail_source(data)
    if decoded is None:
        return None
    (width, height), gray = decoded
    return width, height, phash_of_gray(gray)


def image_facts_reference(data: bytes) -> tuple[int, int, int] | None:
    """image_facts through imagehash.phash itself (the reference the fast path is tested on)."""
    import imagehash

    decoded = _gray_thumbnail_source(data)
    if decoded is None:
        return None
    (width, height), gray = decoded
    bits = np.packbits(imagehash.phash(gray).hash.flatten())
    return width, height, int.from_bytes(bits.tobytes(), "big", signed=True)
