"""Our shards read with the current webdataset release (1.x) and with open_clip's 0.2.86.

img2dataset 1.47 requires `webdataset<0.3`, so our own environment has 0.2.x (constraints.txt:
0.2.111); a user who trains with webdataset 1.x reads the same tars in another environment, and
one who installs `open_clip_torch[training]` (webdataset<=0.2.86) next to us gets 0.2.86. This test writes shards with the
download stage's writer (writer.SampleWriter, our Resizer in
front) and re-shards them with finalize's writer (plus sizes.json), then reads both with the
newest webdataset from PyPI and with 0.2.86, each installed once into a throwaway venv under
pytest's cache folder (`.pytest_cache/d/webdataset-*`, refreshed after a week), in a subprocess
that sees nothing of ours. About 20 s on a fresh cache.

When PyPI cannot be reached the test skips, saying so; under WIT_REQUIRE_SHARED_DATA=1 (CI) it
fails instead. Any other install failure fails.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from pypi_venv import venv_python

# name -> (requirement, what the installed version must be); pillow: training decodes with PIL
RELEASES = {"current": ("webdataset", lambda v: int(v.split(".")[0]) >= 1),
            "open_clip_training": ("webdataset==0.2.86", lambda v: v == "0.2.86")}

READER = r"""
import json, sys
import webdataset as wds

shards, sizes_file = sys.argv[1].split(","), sys.argv[2]
out = {"version": wds.__version__, "shards": {}}
for url in shards:
    ds = (wds.WebDataset(url, shardshuffle=False)
          .decode("pil").to_tuple("__key__", "jpg", "txt", "json"))
    out["shards"][url] = [[key, list(img.size), img.mode, txt, meta["uid"], meta["text"]]
                          for key, img, txt, meta in ds]
if sizes_file:
    with open(sizes_file) as f:
        out["sizes"] = json.load(f)
print(json.dumps(out))
"""


@pytest.fixture(scope="module", params=sorted(RELEASES))
def webdataset_python(request):
    """The python of a venv holding that webdataset release and pillow from the package index,
    and the check of the version it must report."""
    requirement, expected = RELEASES[request.param]
    return venv_python(request, f"webdataset-{request.param}", [requirement, "pillow"]), expected


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _download_shard(shared_data: Path, out: Path) -> list[dict]:
    """One download shard written as the download stage writes it: our Resizer's output through
    writer.SampleWriter, with the meta img2dataset's Downloader gives it. Returns the samples."""
    from wit_builder import storage
    from wit_builder.download.writer import SampleWriter
    from wit_builder.download.shards import EXTRA_COLUMNS
    from wit_builder.download.resize import BoundedResizer

    folder = shared_data / "images" / "coco_mini"
    lines = (folder / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]
    captions = dict(reversed([line.split("\t", 1) for line in lines]))  # first caption per file
    photos = sorted(captions)[:3]
    images = [(p, (folder / p).read_bytes()) for p in photos]
    # a PNG with alpha and a grey JPEG: other decode paths of the same reader
    rgba = Image.open(io.BytesIO(images[0][1])).convert("RGBA")
    rgba.putalpha(128)
    png = io.BytesIO()
    rgba.save(png, "PNG")
    images.append(("alpha.png", png.getvalue()))
    images.append(("grey.jpg", _jpeg(Image.open(io.BytesIO(images[1][1])).convert("L"))))
    big = Image.open(io.BytesIO(images[2][1])).convert("RGB").resize((1600, 1200))
    images.append(("big.jpg", _jpeg(big)))  # decoded at 1/4 of its size by BoundedResizer
    captions.update({"alpha.png": "a half transparent photo", "grey.jpg": "ünïcode grey ✓",
                     "big.jpg": "a photo blown up"})

    resizer = BoundedResizer(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True,
                             encode_quality=95, encode_format="jpg")
    fields = [("url", pa.string()), ("caption", pa.string())]
    fields += [(c, pa.list_(pa.int32()) if c == "entry_ids" else
                pa.list_(pa.string()) if c == "entries" else pa.string()) for c in EXTRA_COLUMNS]
    fields += [(c, pa.string()) for c in ("key", "status", "error_message")]
    fields += [(c, pa.int32()) for c in ("width", "height", "original_width", "original_height")]
    fields += [("sha256", pa.string())]
    writer = SampleWriter(0, str(out), True, storage.SHARD_DIGITS, pa.schema(fields), "jpg")
    samples = []
    for i, (name, data) in enumerate(images):
        img_str, width, height, ow, oh, err = resizer(io.BytesIO(data))
        assert err is None, (name, err)
        key = f"{0:0{storage.SHARD_DIGITS}d}{i:04d}"
        meta = {"url": f"http://images.test/{name}", "caption": captions[name],
                "uid": f"{i:016x}", "entry_ids": [i], "entries": [f"entry {i}"],
                "page_url": None, "source": "test", "lang": "en", "user_id": None, "key": key,
                "status": "success", "error_message": None, "width": width, "height": height,
                "original_width": ow, "original_height": oh, "sha256": None}
        writer.write(img_str, key, captions[name], dict(meta))
        samples.append({"key": key, "size": [width, height], "text": captions[name],
                        "uid": meta["uid"]})
    writer.close()
    return samples


def _final_shards(download: Path, out: Path, n: int) -> None:
    """finalize's writer: every sample kept, two per output shard, then sizes.json."""
    from wit_builder.finalize import reshard

    out.mkdir()
    tars = [str(download / "00000.tar")]
    written = [reshard._write_rows(s, [(0, pos, pos - 2 * s, "0" * 64, 0)
                                       for pos in range(2 * s, min(n, 2 * s + 2))],
                                   tars, str(out), 5, 1)
               for s in range(-(-n // 2))]
    reshard._finish(written, str(out))


def _read(python: Path, shards: list[Path], sizes: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([str(python), "-I", "-c", READER, ",".join(map(str, shards)),
                           str(sizes or "")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_shards_read_with_webdataset_release(shared_data, webdataset_python, tmp_path):
    python, expected = webdataset_python
    download, final = tmp_path / "download", tmp_path / "final"
    download.mkdir()
    samples = _download_shard(shared_data, download)
    _final_shards(download, final, len(samples))

    got = _read(python, [download / "00000.tar"], None)
    assert expected(got["version"]), got["version"]
    rows = got["shards"][str(download / "00000.tar")]
    assert [r[0] for r in rows] == [s["key"] for s in samples]
    assert [r[1] for r in rows] == [s["size"] for s in samples]
    assert [r[2] for r in rows] == ["RGB"] * len(samples)
    assert [r[3] for r in rows] == [r[5] for r in rows] == [s["text"] for s in samples]
    assert [r[4] for r in rows] == [s["uid"] for s in samples]

    tars = sorted(final.glob("*.tar"))
    got = _read(python, tars, final / "sizes.json")
    assert got["sizes"] == {t.name: len(got["shards"][str(t)]) for t in tars}
    rows = [r for t in tars for r in got["shards"][str(t)]]
    assert [r[0] for r in rows] == [f"{s:05d}{p}" for s in range(len(tars)) for p in range(2)][:len(samples)]
    assert [(r[1], r[3], r[4]) for r in rows] == [(s["size"], s["text"], s["uid"]) for s in samples]
