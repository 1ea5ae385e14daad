"""BoundedResizer: JPEGs decoded by TurboJPEG (byte-identical output) or, big ones, at a reduced
size; everything else as img2dataset does."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from img2dataset.resizer import Resizer
from PIL import Image

from wit_builder.download import resize
from wit_builder.download.resize import BoundedResizer, reduction

MODES = ["keep_ratio", "center_crop", "border", "keep_ratio_largest"]


def _resizers(mode="keep_ratio", size=256, only_if_bigger=True):
    kwargs = dict(image_size=size, resize_mode=mode, resize_only_if_bigger=only_if_bigger,
                  encode_quality=95, encode_format="jpg")
    return Resizer(**kwargs), BoundedResizer(**kwargs)


def _picture(width, height, mode="RGB", seed=0) -> Image.Image:
    """Smooth random blocks scaled up: a photo-like picture of any size, made fast."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (max(2, height // 100), max(2, width // 100), 3),
                                         dtype=np.uint8))
    return small.resize((width, height), Image.BILINEAR).convert(mode)


def _encode(img: Image.Image, fmt="JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_reduction_keeps_the_measured_side_at_least_the_target():
    assert reduction(6000, 4000, 256, Resizer(256, "keep_ratio", True).resize_mode) == 8  # 500
    assert reduction(2048, 1024, 256, Resizer(256, "keep_ratio", True).resize_mode) == 4  # 256
    assert reduction(2048, 1023, 256, Resizer(256, "keep_ratio", True).resize_mode) == 4  # ceil
    assert reduction(2048, 1020, 256, Resizer(256, "keep_ratio", True).resize_mode) == 2  # 510
    assert reduction(1000, 510, 256, Resizer(256, "keep_ratio", True).resize_mode) == 1
    assert reduction(4000, 300, 256, Resizer(256, "border", True).resize_mode) == 8  # 500 long
    assert reduction(6000, 4000, 256, Resizer(256, "no", True).resize_mode) == 1


def _same_cases(shared_data):
    """Images no reduction applies to: (name, bytes, resize mode)."""
    photos = sorted((shared_data / "images" / "coco_mini").glob("*.jpg"))[:3]
    cases = [(p.name, p.read_bytes(), "keep_ratio") for p in photos]  # ~500x375: min < 512
    rgba = _picture(1200, 900, "RGBA")
    rgba.putalpha(100)
    cases += [
        ("png_big", _encode(_picture(1600, 1200), "PNG"), "keep_ratio"),
        ("png_alpha", _encode(rgba, "PNG"), "keep_ratio"),
        ("cmyk_big", _encode(_picture(1600, 1200, "CMYK")), "keep_ratio"),
        ("grey_small", _encode(_picture(700, 400, "L")), "keep_ratio"),
        ("mode_no", _encode(_picture(1200, 800)), "no"),
        ("small_longest", _encode(_picture(500, 300)), "border"),
        ("upscale", _encode(_picture(200, 100)), "keep_ratio"),
        ("corrupt", photos[0].read_bytes()[:500], "keep_ratio"),
        ("not_an_image", b"<html>no</html>" * 50, "keep_ratio"),
    ]
    return cases


def test_unreduced_images_are_byte_identical_to_img2dataset(shared_data):
    for name, data, mode in _same_cases(shared_data):
        plain, bounded = _resizers(mode)
        want, got = plain(io.BytesIO(data)), bounded(io.BytesIO(data))
        assert got == want, name
        if name in ("png_big", "cmyk_big", "mode_no"):
            assert want[0] is not None and want[3] >= 1200, name  # really decoded


def _jpeg_cases(shared_data):
    """JPEGs the TurboJPEG path decodes at full size (at most 500x375: no reduction at a target
    of 200 px or more): real photos, and encodings a photo may come in (progressive, 4:4:4 and
    4:2:2 chroma, grey, EXIF-rotated)."""
    photos = sorted((shared_data / "images" / "flickr8k_dev" / "train").glob("*.jpg"))[:40]
    cases = [(p.name, p.read_bytes()) for p in photos]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: img2dataset ignores the orientation, so must we
    picture = _picture(420, 300)
    cases += [
        ("progressive", _encode(picture, quality=85, progressive=True)),
        ("chroma_444", _encode(picture, quality=90, subsampling=0)),
        ("chroma_422", _encode(picture, quality=90, subsampling=1)),
        ("grey", _encode(_picture(300, 420, "L"))),
        ("exif_rotated", _encode(picture, exif=exif.tobytes())),
        ("tiny", _encode(_picture(40, 30))),
    ]
    return cases


@pytest.mark.parametrize("mode,size,only_if_bigger", [
    ("keep_ratio", 256, True), ("keep_ratio", 256, False), ("keep_ratio", 200, True),
    ("center_crop", 256, False), ("center_crop", 200, True), ("border", 256, True),
    ("keep_ratio_largest", 300, False)])
def test_turbojpeg_decodes_give_img2dataset_bytes(shared_data, monkeypatch, mode, size,
                                                  only_if_bigger):
    decoded = []
    decode = resize.simplejpeg.decode_jpeg
    monkeypatch.setattr(resize.simplejpeg, "decode_jpeg",
                        lambda *a, **k: decoded.append(1) or decode(*a, **k))
    cases = _jpeg_cases(shared_data)
    for name, data in cases:
        plain, bounded = _resizers(mode, size, only_if_bigger)
        want, got = plain(io.BytesIO(data)), bounded(io.BytesIO(data))
        assert want[0] is not None, name
        assert got == want, name
    assert len(decoded) == len(cases)  # every case took the TurboJPEG path, none fell back


def test_a_damaged_jpeg_goes_to_img2dataset(shared_data):
    """A JPEG libjpeg only warns about (bytes of its scan overwritten) is decoded by cv2, as
    img2dataset does, warnings silenced: the same (partly grey) picture, or the same error."""
    data = bytearray(sorted((shared_data / "images" / "flickr8k_dev" / "train").glob("*.jpg"))[0]
                     .read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff\x00" * 32
    with pytest.raises(ValueError):
        resize.simplejpeg.decode_jpeg(bytes(data), "BGR")
    plain, bounded = _resizers("keep_ratio", 256, False)
    want, got = plain(io.BytesIO(bytes(data))), bounded(io.BytesIO(bytes(data)))
    assert got == want


@pytest.mark.parametrize("mode", MODES)
def test_big_jpegs_reduced_give_the_full_decode_size_and_true_original(mode):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: img2dataset ignores the orientation, so must we
    cases = [_encode(_picture(3001, 2001), quality=90),
             _encode(_picture(2001, 3001, "L"), quality=90),
             _encode(_picture(4096, 1100), quality=90, progressive=True),
             _encode(_picture(2600, 1800), quality=90, exif=exif.tobytes())]
    for data in cases:
        plain, bounded = _resizers(mode)
        want, got = plain(io.BytesIO(data)), bounded(io.BytesIO(data))
        assert got[0] is not None and got[5] is None
        assert got[1:] == want[1:]  # width, height, original_width, original_height, no error
        assert got[0] != want[0]  # really another (reduced) decode
        a, b = _decode(got[0]), _decode(want[0])
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 4.0  # the same picture, downsampled another way


_MEASURE = textwrap.dedent("""
    import io, json, re, sys, time
    from img2dataset.resizer import Resizer
    from wit_builder.download.resize import BoundedResizer
    cls = {"plain": Resizer, "bounded": BoundedResizer}[sys.argv[2]]
    r = cls(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True,
            encode_quality=95, encode_format="jpg")
    data = open(sys.argv[1], "rb").read()

    def peak_kb():  # VmHWM: the peak resident size since the last reset
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = peak_kb()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = r(io.BytesIO(data))
        times.append(time.perf_counter() - t)
    grown = peak_kb() - before
    print(json.dumps({"out": list(out[1:]), "grown_kb": grown, "seconds": min(times)}))
""")


def _measure(path, which):
    """Peak resident growth (kB) and best time of 3 resizes in a fresh process (Linux)."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path), which], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_6000x4000_jpeg_decodes_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_encode(_picture(6000, 4000), quality=90))
    plain, bounded = _measure(path, "plain"), _measure(path, "bounded")
    assert plain["out"] == bounded["out"] == [384, 256, 6000, 4000, None]
    # a full decode holds 72 MB of pixels (the measurement sees it); 1/8 of each side: ~1 MB
    assert plain["grown_kb"] > 60_000, plain
    assert bounded["grown_kb"] < 16_000, bounded  # (its time is a benchmark's business)
