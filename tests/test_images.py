"""The image checks of the fetcher and the drop-reason mapping: no network, no Spark."""

import io
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from wit_builder.download.stage import reason
from wit_builder.images import ImageRefused, check_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_bombs import scan_bomb  # noqa: E402


def _encode(img, fmt, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def _refusal(data, max_pixels=10_000_000):
    with pytest.raises(ImageRefused) as info:
        check_image(data, max_pixels)
    return info.value.reason


def test_whole_images_pass():
    photo = Image.effect_noise((320, 200), 40).convert("RGB")
    for fmt in ("JPEG", "PNG", "WEBP"):
        check_image(_encode(photo, fmt), max_pixels=320 * 200)


def test_pixel_bound_from_the_header():
    photo = Image.new("RGB", (400, 300))
    assert _refusal(_encode(photo, "PNG"), max_pixels=400 * 300 - 1) == "too_many_pixels"
    # a real decompression bomb: 144 Mpx in a few kB, refused before decoding
    bomb = _encode(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 100_000
    assert _refusal(bomb, max_pixels=89_478_485) == "too_many_pixels"


def test_truncated_jpeg_and_non_images():
    data = _encode(Image.effect_noise((640, 480), 60).convert("RGB"), "JPEG", quality=90)
    assert _refusal(data[: len(data) // 2]) == "truncated_image"
    check_image(data + b"trailing junk some encoders leave", 10_000_000)  # whole, then junk
    check_image(data + b"\0" * 64, 10_000_000)
    assert _refusal(b"<html>not an image</html>") == "not_an_image"
    assert _refusal(b"") == "not_an_image"


@pytest.mark.parametrize("status, message, expected", [
    ("failed_to_download", "blocked_address: link-local", "blocked_address"),
    ("failed_to_download", "http_404: Not Found", "http_404"),
    ("failed_to_download", "too_many_redirects: more than 5", "too_many_redirects"),
    ("failed_to_download", "robots_optout: X-Robots-Tag", "robots_optout"),
    ("failed_to_download", "timeout: socket", "timeout"),
    ("failed_to_download", "HTTP Error 404: Not Found", "download_error"),
    ("failed_to_resize", "Image decoding error", "decode_error"),
    ("failed_to_resize", "image too small", "image_too_small"),
    ("failed_to_resize", "OpenCV(4.10) error: something", "resize_error"),
])
def test_reasons(status, message, expected):
    assert reason(status, message) == expected


def test_alpha_counts_for_what_the_resizer_spends_on_it():
    """img2dataset mattes alpha in float64 (~72 bytes a pixel against ~6): a 4 Mpx RGBA PNG
    weighs like 48 Mpx; the same picture opaque passes."""
    from wit_builder.settings import DownloadConfig
    from wit_builder.images import ALPHA_COST

    limit = DownloadConfig().max_pixels
    side = 2000
    assert side * side * ALPHA_COST > limit > side * side
    check_image(_encode(Image.new("RGB", (side, side)), "PNG"), limit)
    for mode in ("RGBA", "LA"):
        assert _refusal(_encode(Image.new(mode, (side, side)), "PNG"), limit) == "too_many_pixels"
    palette = _encode(Image.new("P", (side, side)), "PNG", transparency=0)
    assert _refusal(palette, limit) == "too_many_pixels"
    # the review's 236 kB all-zero 9000x9000 PNG (81 Mpx): refused by the default bound
    assert _refusal(_encode(Image.new("1", (9000, 9000)), "PNG"), limit) == "too_many_pixels"


def test_jpeg_scans_are_counted_before_any_decode():
    """Issue 23 #1: a progressive-JPEG scan bomb is refused from its markers, at once; an
    ordinary progressive JPEG (10 scans) passes."""
    for end_marker in (True, False):  # without its end marker it used to be decoded to check
        bomb = scan_bomb(4000, 4000, 3000, end_marker=end_marker)
        started = time.monotonic()
        with pytest.raises(ImageRefused) as info:
            check_image(bomb, 40_000_000)
        assert info.value.reason == "too_many_scans"
        assert time.monotonic() - started < 0.5  # decoding it costs ~30 s
    progressive = _encode(Image.effect_noise((320, 200), 40).convert("RGB"), "JPEG",
                          progressive=True)
    check_image(progressive, 320 * 200)
