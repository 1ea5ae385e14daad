"""What an image may cost before anything decodes it: pixels and JPEG scans, from the header.

Every stage that decodes image bytes it did not make (download, finalize, stats, score, train)
opens them through here, so a decompression bomb or a progressive-JPEG scan bomb costs a header
read, not minutes of CPU or gigabytes of memory.

Pixels bound memory; scans bound work. A progressive JPEG is a series of scans, and each one
makes the decoder visit every block of the image again: 20,000 scans of ~45 bytes each (a 1.3 MB
file) cost libjpeg minutes on a 40 Mpx frame, though the file is small and its pixels are within
bounds. Encoders write 10 scans (libjpeg's progressive default) to a few dozen (mozjpeg's scan
optimisation); libjpeg-turbo's own tools stop at 500 when asked to limit them. A JPEG's scans are
counted as its SOS markers: entropy-coded data stuffs every 0xFF with 0x00, so `FF DA` occurs
only as a marker (or inside an application segment, which only overcounts).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

# The defaults of `[download] max_pixels` and `max_scans` (settings.py), and the bounds wherever
# an image is decoded outside download (finalize, stats, score, train).
MAX_PIXELS = 40_000_000
MAX_SCANS = 100
# img2dataset's resizer decodes the whole image (OpenCV) and mattes an alpha channel onto white
# in float64: measured on 40 Mpx PNGs, about 6 bytes a pixel when opaque, 72 with alpha. So a
# pixel with alpha counts this many times against `max_pixels`.
ALPHA_COST = 12


class ImageRefused(ValueError):
    """Bytes that must not be decoded. `reason` is a snake_case drop reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds; an upper bound (see the module's docstring)."""
    return data.count(b"\xff\xda")


def _has_alpha(img) -> bool:
    """Whether OpenCV will decode 4 channels (alpha, or PNG/GIF tRNS transparency)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def open_checked(data: bytes, max_pixels: int = MAX_PIXELS,
                 max_scans: int = MAX_SCANS) -> Image.Image:
    """A PIL image of `data`, not yet decoded, whose header is within bounds; or ImageRefused
    (`too_many_pixels`, `too_many_scans`, `not_an_image`). The caller decodes (and closes) it."""
    if data[:2] == b"\xff\xd8" and jpeg_scans(data) > max_scans:
        raise ImageRefused("too_many_scans", "JPEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageRefused("too_many_pixels", "header") from None
    except Exception:  # noqa: BLE001 - PIL's "cannot identify image file" and kin
        raise ImageRefused("not_an_image", "undecodable") from None
    width, height = img.size
    if width * height * (ALPHA_COST if _has_alpha(img) else 1) > max_pixels:
        img.close()
        raise ImageRefused("too_many_pixels", "header")
    return img


def check_image(data: bytes, max_pixels: int = MAX_PIXELS, max_scans: int = MAX_SCANS) -> None:
    """Refuse what is not a whole image within `max_pixels` and `max_scans`.

    The size comes from the header alone (no decoding), so a decompression bomb costs nothing.
    A JPEG must also be whole: OpenCV, which img2dataset decodes with, turns a truncated JPEG
    into a half-grey image without an error. A whole JPEG ends with its EOI marker; only one
    that does not (truncated, or followed by junk) is decoded, at 1/8 scale, to tell which: its
    scans are already bounded, so that decode is too.
    """
    with open_checked(data, max_pixels, max_scans) as img:
        if img.format == "JPEG" and not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
            width, height = img.size
            img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            try:
                img.load()
            except Exception:  # noqa: BLE001 - any decoder error means a damaged stream
                raise ImageRefused("truncated_image", "JPEG") from None


def decode(data: bytes, mode: str, draft: tuple[int, int] | None = None,
           max_pixels: int = MAX_PIXELS, max_scans: int = MAX_SCANS) -> Image.Image:
    """`data` decoded into a PIL image of `mode` (JPEGs at a reduced scale no smaller than
    `draft`, when given), after the header checks; ImageRefused or PIL's errors otherwise."""
    with open_checked(data, max_pixels, max_scans) as img:
        if draft:
            img.draft(mode, draft)
        return img.convert(mode)
