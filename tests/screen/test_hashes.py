"""Hash lists: their format, PDQ and pHash distances, and which list a hash is found in."""

import io

import numpy as np
import pytest
from PIL import Image

from wit_builder.errors import UserError
from wit_builder.phash import image_facts, phash_hex
from wit_builder.screen import hashes

PDQ = "f" * 32 + "0" * 32
PHASH = "0123456789abcdef"


def test_a_list_holds_pdq_and_phash_hashes_with_comments_and_blank_lines():
    listed = hashes.parse_list("kids.txt", f"# a comment\n{PDQ}\n\n{PHASH.upper()}  # pHash\n")
    assert listed.pdq.shape == (1, 4) and listed.phash.shape == (1, 1)
    assert int(listed.phash[0, 0]) == int(PHASH, 16)
    assert [int(w) for w in listed.pdq[0]] == [2**64 - 1, 2**64 - 1, 0, 0]


@pytest.mark.parametrize("line", ["abc", "g" * 16, "0" * 63, "0" * 65, "0x" + "0" * 14])
def test_anything_else_on_a_line_fails_naming_the_list_and_line(line):
    with pytest.raises(UserError, match=r"hash list bad.txt line 2: expected 64 hex digits"):
        hashes.parse_list("bad.txt", f"{PHASH}\n{line}\n")


def test_a_missing_list_fails_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="hash list not found"):
        hashes.load_lists([str(tmp_path / "nope.txt")])


def test_distances_count_differing_bits():
    listed = hashes.words([PDQ, "0" * 64], 4)
    value = hashes.words(["f" * 31 + "e" + "0" * 31 + "1"], 4)[0]
    assert hashes.distances(listed, value).tolist() == [2, 128]


def test_the_first_list_within_distance_names_the_hit():
    a = hashes.parse_list("a.txt", PHASH + "\n")
    b = hashes.parse_list("b.txt", PDQ + "\n")
    near_phash = format(int(PHASH, 16) ^ 0b111, "016x")  # 3 bits away
    near_pdq = "f" * 31 + "0" + "0" * 32  # 4 bits away
    assert hashes.listed_in([a, b], None, near_phash, 31, 3) == "a.txt"
    assert hashes.listed_in([a, b], None, near_phash, 31, 2) is None
    assert hashes.listed_in([a, b], near_pdq, None, 4, 10) == "b.txt"
    assert hashes.listed_in([a, b], near_pdq, None, 3, 10) is None


def test_hashes_of_a_real_photo_are_the_packages_and_finalizes(shared_data):
    """PDQ: the pdqhash package's 256 bits, most significant first; pHash: finalize's own."""
    import pdqhash

    path = sorted((shared_data / "images" / "flickr8k_dev" / "train").glob("*.jpg"))[0]
    data = path.read_bytes()
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    bits, _ = pdqhash.compute(rgb)
    pdq = hashes.pdq_of(rgb)
    assert len(pdq) == 64 and int(pdq, 16) == int("".join(map(str, bits)), 2)
    assert hashes.phash_of(data) == phash_hex(image_facts(data)[2])
