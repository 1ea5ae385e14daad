"""Integration fixtures: the local image server (one per test session).

`image_server` serves, on 127.0.0.1, the real photos of ../shared/data/images under
/flickr/ (flickr8k_dev: train/ and val/) and /coco/ (coco_mini), files made for the tests under
/gen/, and special routes. `image_server.catalog` names the special cases (URL per name):

  missing            404                     not_an_image      text served as a .jpg
  truncated_jpeg     first half of a JPEG    bomb_png          12000x12000 PNG (144 Mpx, 20 kB)
  noai               X-Robots-Tag: noai      noai_other_bot    X-Robots-Tag naming another bot
  redirect_metadata  302 -> 169.254.169.254  redirect_private  302 -> 10.0.0.1
  redirect_ok        302 -> a good photo     redirect_loop     302 -> itself
  duplicate_a/_b     one photo, two URLs     original, variant_small (60%, q85), variant_lowq
                                             (q30): near-duplicates of one photo
`image_server.photo_urls`: the other flickr8k_dev/train photos (one URL each);
`image_server.near_dup_photo`: the file behind original, duplicate_*, noai*, redirect_ok.

Tests that need more routes add them with `image_server.route(...)` under their own paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from image_server import ImageServer  # noqa: E402

NEAR_DUP_PHOTO = "1000268201_693b08cb0e.jpg"  # a flickr8k_dev/train photo


def _make_files(folder: Path, photo: Path) -> None:
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "not_an_image.jpg").write_bytes(b"<html><body>Not an image</body></html>\n" * 20)
    Image.new("1", (12000, 12000)).save(folder / "bomb.png")
    with Image.open(photo) as img:
        img = img.convert("RGB")
        img.resize((img.width * 3 // 5, img.height * 3 // 5), Image.LANCZOS).save(
            folder / "variant_small.jpg", quality=85)
        img.save(folder / "variant_lowq.jpg", quality=30)


@pytest.fixture(scope="session")
def image_server(shared_data, tmp_path_factory):
    images = shared_data / "images"
    generated = tmp_path_factory.mktemp("served")
    photo = images / "flickr8k_dev" / "train" / NEAR_DUP_PHOTO
    _make_files(generated, photo)
    server = ImageServer({"/flickr/": images / "flickr8k_dev", "/coco/": images / "coco_mini",
                          "/gen/": generated}).start()
    jpeg = {"Content-Type": "image/jpeg"}
    photo_bytes = photo.read_bytes()
    good = server.url(f"/flickr/train/{NEAR_DUP_PHOTO}")
    server.catalog = {
        "missing": server.url("/flickr/train/no-such-photo.jpg"),
        "not_an_image": server.url("/gen/not_an_image.jpg"),
        "truncated_jpeg": server.url("/gen/truncated.jpg"),
        "bomb_png": server.url("/gen/bomb.png"),
        "noai": server.route("/special/noai.jpg", headers={**jpeg, "X-Robots-Tag": "noai"},
                             body=photo_bytes),
        "noai_other_bot": server.route("/special/noai-other.jpg",
                                       headers={**jpeg, "X-Robots-Tag": "otherbot: noai"},
                                       body=photo_bytes),
        "redirect_metadata": server.route(
            "/special/to-metadata.jpg", status=302,
            headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
        "redirect_private": server.route("/special/to-private.jpg", status=302,
                                         headers={"Location": "http://10.0.0.1/image.jpg"}),
        "redirect_ok": server.route("/special/to-photo.jpg", status=302,
                                    headers={"Location": f"/flickr/train/{NEAR_DUP_PHOTO}"}),
        "redirect_loop": server.route("/special/loop.jpg", status=302,
                                      headers={"Location": "/special/loop.jpg"}),
        "duplicate_a": server.route("/special/same-a.jpg", headers=jpeg, body=photo_bytes),
        "duplicate_b": server.route("/special/same-b.jpg", headers=jpeg, body=photo_bytes),
        "original": good,
        "variant_small": server.url("/gen/variant_small.jpg"),
        "variant_lowq": server.url("/gen/variant_lowq.jpg"),
    }
    server.near_dup_photo = photo  # the photo behind original, variants, duplicates, noai...
    # the other flickr8k_dev/train photos, each under its own URL
    server.photo_urls = [server.url(f"/flickr/train/{p.name}") for p in
                         sorted((images / "flickr8k_dev" / "train").glob("*.jpg")) if p != photo]
    yield server
    server.stop()


@pytest.fixture
def connections(monkeypatch):
    """Addresses the fetcher opened sockets to (only loopback ones are really connected).

    Recorded where aiohttp makes every socket it connects, after our address check
    (safety.CheckedResolver.socket_for): a refusal raises before this records anything."""
    from wit_builder.safety import CheckedResolver

    seen = []
    real = CheckedResolver.socket_for

    def record(self, addr_info):
        sock = real(self, addr_info)
        seen.append(addr_info[4][0])
        if not addr_info[4][0].startswith("127."):
            sock.close()
            raise AssertionError(f"connection attempted to {addr_info[4][0]}")
        return sock

    monkeypatch.setattr(CheckedResolver, "socket_for", record)
    return seen
