"""A download shard's per-image work after the fetch: resize (decode, resize, re-encode) and the
webdataset write, CPU per image: ours (resize.BoundedResizer + writer.SampleWriter) against
img2dataset's own Resizer and WebDatasetSampleWriter, in the same process, alternating A B B A,
at two sizes (the shared Flickr8k photos, train and val, repeated to the size).

Both sides get the same settings as the download stage's defaults (256 px, keep_ratio, only if
bigger, JPEG quality 95). The JSON says whether every resized image is byte-identical between the
two (it must be: no photo here is big enough for a reduced decode) and how big each side's tars are.

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python tests/benchmarks/bench_image_path.py [--sizes 1000,5000] [--out F]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))

import pyarrow as pa  # noqa: E402
from bench_output import emit  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402
from img2dataset.writer import WebDatasetSampleWriter  # noqa: E402

from wit_builder.download.writer import SampleWriter  # noqa: E402
from wit_builder.download.resize import BoundedResizer  # noqa: E402

SETTINGS = dict(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True,
                encode_quality=95, encode_format="jpg")
SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()),
                    ("status", pa.string()), ("width", pa.int32()), ("height", pa.int32())])


def shard(resizer, writer_class, photos: list[bytes], folder: str) -> tuple[float, list[bytes]]:
    """CPU seconds to resize and write `photos` as one shard, and the resized images."""
    cpu = time.process_time()
    writer = writer_class(0, folder, True, 5, SCHEMA, "jpg")
    resized = []
    for i, data in enumerate(photos):
        img, width, height, _, _, error = resizer(io.BytesIO(data))
        assert error is None, error
        key = f"{i:09d}"
        writer.write(img, key, f"photo {i}", {"url": f"http://127.0.0.1/{i}.jpg",
                                              "caption": f"photo {i}", "key": key,
                                              "status": "success", "width": width,
                                              "height": height})
        resized.append(img)
    writer.close()
    return time.process_time() - cpu, resized


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--out")
    a = ap.parse_args()
    folder = SHARED / "images" / "flickr8k_dev"
    files = sorted(folder.glob("*/*.jpg"))
    result = {"benchmark": "resize + webdataset write per image (CPU, best of 2 A B B A rounds)",
              "photos": f"{len(files)} shared Flickr8k photos ({folder.relative_to(SHARED)}), repeated",
              "settings": {k: v for k, v in SETTINGS.items() if k != "encode_format"},
              "ours": "resize.BoundedResizer + writer.SampleWriter",
              "baseline": "img2dataset Resizer + WebDatasetSampleWriter",
              "load_average_at_start": os.getloadavg(), "runs": []}
    ours = (BoundedResizer(**SETTINGS), SampleWriter)
    plain = (Resizer(**SETTINGS), WebDatasetSampleWriter)
    tmp = tempfile.mkdtemp()
    try:
        for size in [int(s) for s in a.sizes.split(",")]:
            photos = [files[i % len(files)].read_bytes() for i in range(size)]
            best = {"ours": None, "img2dataset": None}
            for name in ("img2dataset", "ours", "ours", "img2dataset"):
                out = os.path.join(tmp, f"{name}-{size}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                cpu, resized = shard(*(ours if name == "ours" else plain), photos, out)
                tar = os.path.getsize(os.path.join(out, "00000.tar"))
                if best[name] is None or cpu < best[name][0]:
                    best[name] = (cpu, resized, tar)
            same = best["ours"][1] == best["img2dataset"][1]
            result["runs"].append({
                "images": size,
                "ours": {"cpu_s": round(best["ours"][0], 3),
                         "ms_per_image": round(best["ours"][0] / size * 1e3, 3),
                         "tar_bytes": best["ours"][2]},
                "img2dataset": {"cpu_s": round(best["img2dataset"][0], 3),
                                "ms_per_image": round(best["img2dataset"][0] / size * 1e3, 3),
                                "tar_bytes": best["img2dataset"][2]},
                "resized_images_identical": same,
                "ratio_ours_over_img2dataset": round(best["img2dataset"][0] / best["ours"][0], 2)})
            print(size, result["runs"][-1]["ratio_ours_over_img2dataset"], file=sys.stderr)
    finally:
        shutil.rmtree(tmp)
    emit(result, a.out)


if __name__ == "__main__":
    main()
