"""pHash and banding, without Spark: hashes of real photos, the pigeonhole guarantee, tar reading."""

import io
import random

import imagehash
from PIL import Image

from shard_maker import jpeg, sample, variant, write_shards
from wit_builder.finalize.hashing import judge
from wit_builder.phash import image_facts, phash_hex
from wit_builder.shard.tars import read_samples
from wit_builder.finalize.neardup import band_layout, band_values


def _distance(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def test_band_layout_covers_all_bits():
    for bands in (1, 2, 5, 8, 13, 64):
        layout = band_layout(bands)
        assert len(layout) == bands
        assert sum(w for _, w in layout) == 64
        assert [s for s, _ in layout] == sorted(s for s, _ in layout)
        assert layout[0][0] == 0 and layout[-1][0] + layout[-1][1] == 64


def test_close_hashes_always_share_a_band():
    rng = random.Random(0)
    for d in range(0, 7):
        bands = d + 1
        for _ in range(300):
            a = rng.getrandbits(64) - 2**63
            flipped = a
            for bit in rng.sample(range(64), d):
                flipped ^= 1 << bit
            b = (flipped + 2**63) % 2**64 - 2**63  # back to a signed 64-bit value
            assert _distance(a, b) == d
            assert any(x == y for x, y in zip(band_values(a, bands), band_values(b, bands)))


def test_far_hashes_mostly_share_no_band():
    rng = random.Random(1)
    shared = sum(any(x == y for x, y in zip(band_values(rng.getrandbits(64), 5),
                                                band_values(rng.getrandbits(64), 5)))
                 for _ in range(2000))
    assert shared < 20  # ~5 * 2**-12.8 per pair: banding prunes almost every far pair


def test_phash_is_imagehash_phash(shared_data):
    # PNG: no JPEG draft scaling, so the value is exactly imagehash's
    path = shared_data / "images" / "coco_mini" / "skimage_astronaut.png"
    width, height, value = image_facts(path.read_bytes())
    img = Image.open(path)
    assert (width, height) == img.size
    assert phash_hex(value) == str(imagehash.phash(img.convert("L")))
    assert -2**63 <= value < 2**63


def test_resized_recompressed_and_rescaled_photos_are_close(shared_data):
    images = shared_data / "images"
    photo = (images / "flickr8k_dev" / "train" / "1000268201_693b08cb0e.jpg").read_bytes()
    h = image_facts(photo)[2]
    assert _distance(h, image_facts(variant(photo, 0.7, 40))[2]) <= 4
    assert _distance(h, image_facts(variant(photo, 1.6, 70))[2]) <= 4
    # the same Flickr photo at another size in coco_mini
    assert _distance(h, image_facts((images / "coco_mini" / "1000268201_693b08cb0e.jpg").read_bytes())[2]) <= 4
    other = (images / "flickr8k_dev" / "train" / "1001773457_577c3a7d70.jpg").read_bytes()
    assert _distance(h, image_facts(other)[2]) > 10


def test_undecodable_and_filters(shared_data):
    photo = (shared_data / "images" / "flickr8k_dev" / "train" / "1000268201_693b08cb0e.jpg").read_bytes()
    assert image_facts(photo[: len(photo) // 2]) is None
    assert image_facts(b"<html>not an image</html>") is None
    assert judge(None, 64, 3.0) == "undecodable_image"
    assert judge((63, 500, 0), 64, 3.0) == "too_small"
    assert judge((400, 100, 0), 64, 3.0) == "bad_aspect"
    assert judge((300, 100, 0), 64, 3.0) is None
    assert judge(image_facts(jpeg(Image.new("RGB", (640, 100)))), 64, 3.0) == "bad_aspect"


def test_read_samples_groups_members_by_key(tmp_path, shared_data):
    photo = (shared_data / "images" / "flickr8k_dev" / "train" / "1000268201_693b08cb0e.jpg").read_bytes()
    items = [sample("a.jpg", photo, "first", [1]), sample("b.jpg", None, "failed", [2], "HTTP Error 404"),
             sample("c.jpg", photo, "third", [])]
    (tar,) = write_shards(tmp_path, items, per_shard=10)
    got = list(read_samples(str(tar)))
    assert [(k, problem) for k, _, problem in got] == [("000000000", None), ("000000002", None)]
    assert all(set(files) == {"jpg", "txt", "json"} for _, files, _ in got)
    assert got[1][1]["txt"] == b"third" and got[0][1]["jpg"] == photo
    assert Image.open(io.BytesIO(got[0][1]["jpg"])).size == Image.open(io.BytesIO(photo)).size
