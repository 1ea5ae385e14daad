"""The shared tar reader (shard/tars.py) and the image decoders of finalize, stats, score and
train on hostile inputs (issue 23 #2, #5, #14, #1): every problem is one sample's counted
problem, never a hang, a traceback or gigabytes of memory."""

import gzip
import io
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile_tars import BAD_PAX, END, gzip_bomb_shard, member, pax_shard, sample  # noqa: E402
from image_bombs import scan_bomb  # noqa: E402

from wit_builder.shard.tars import samples_of  # noqa: E402
from wit_builder.images import ImageRefused  # noqa: E402


def _problems(data: bytes) -> list[tuple[str | None, str | None]]:
    return [(key, problem) for key, _, problem in samples_of(io.BytesIO(data))]


@pytest.mark.timeout(20)  # a zero-length pax record once looped forever
@pytest.mark.parametrize("case", sorted(BAD_PAX))
def test_a_malformed_pax_record_is_one_corrupt_member_and_the_shard_goes_on(case):
    data = pax_shard(BAD_PAX[case], before=8, after=8)
    assert len(data) > 40_000
    got = _problems(data)
    assert [k for k, _ in got] == [f"{i:06d}" for i in range(17)]
    assert [p for _, p in got] == [None] * 8 + ["corrupt_member"] + [None] * 8
    # the samples around it are read whole
    samples = list(samples_of(io.BytesIO(data)))
    assert samples[9].files["txt"] == b"a red square" and samples[9].files["jpg"][:2] == b"\xff\xd8"


@pytest.mark.timeout(20)
def test_damaged_structure_is_one_corrupt_shard_after_the_good_samples():
    good = sample("000000") + sample("000001")
    assert _problems(b"") == [(None, "corrupt_shard")]  # a 0-byte file
    assert _problems(b"not a tar at all" * 100) == [(None, "corrupt_shard")]
    whole = good + END
    cut = whole[:len(sample("000000")) + 700]  # inside 000001.jpg
    assert _problems(cut) == [("000000", None), ("000001", "corrupt_shard")]
    garbage_header = good + b"\x01" * 512 + sample("000002") + END
    assert _problems(garbage_header) == [("000000", None), ("000001", "corrupt_shard")]
    # a negative (GNU base-256) size or one past the end of the file
    negative = bytearray(member("000002.jpg", b"x"))
    negative[124:136] = b"\xff" * 12
    negative[148:156] = b"        "
    negative[148:156] = f"{sum(negative[:512]):06o}\0 ".encode()
    assert _problems(good + bytes(negative) + END)[-1] == ("000002", "corrupt_shard")
    assert _problems(gzip.compress(whole)[:-40])[-1][1] == "corrupt_shard"  # cut gzip stream
    # a well-formed tar that ends without its end-of-archive blocks is read as tarfile reads it
    assert _problems(good) == [("000000", None), ("000001", None)]


@pytest.mark.timeout(60)
def test_a_gzip_bomb_member_is_skipped_unread_in_bounded_memory():
    data = gzip_bomb_shard(200_000_000)
    assert len(data) < 2_000_000
    tracemalloc.start()
    try:
        got = list(samples_of(io.BytesIO(data)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(s.key, s.problem) for s in got] == [("000000", None), ("000001", "oversized_member"),
                                                 ("000002", None)]
    assert "jpg" not in got[1].files and got[2].files["txt"] == b"a red square"
    assert peak < 20_000_000, peak  # the 200 MB member was never held


def test_wanted_skips_the_bytes_of_other_samples():
    data = b"".join(sample(f"{i:06d}") for i in range(5)) + END
    got = list(samples_of(io.BytesIO(data), wanted=lambda pos, key: pos == 3))
    assert [s.key for s in got] == [f"{i:06d}" for i in range(5)]
    assert [bool(s.files) for s in got] == [False, False, False, True, False]


# --- images are decoded within bounds wherever shards are read (issue 23 #1, #14) -----------

@pytest.fixture(scope="module")
def bomb() -> bytes:
    return scan_bomb(4000, 4000, 20_000)


@pytest.mark.timeout(30)  # decoding it costs minutes
def test_a_scan_bomb_is_refused_by_every_decoder_before_decoding(bomb):
    from wit_builder.clip.transforms import open_rgb
    from wit_builder.phash import image_facts
    from wit_builder.stats.samples import thumbnail

    started = time.monotonic()
    assert thumbnail(bomb) is None
    for decode in (image_facts, open_rgb):
        with pytest.raises(ImageRefused) as refused:
            decode(bomb)
        assert refused.value.reason == "too_many_scans"
    assert time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_a_huge_png_is_refused_by_every_decoder_before_decoding():
    from wit_builder.clip.transforms import open_rgb
    from wit_builder.phash import image_facts
    from wit_builder.stats.samples import thumbnail

    buf = io.BytesIO()
    Image.new("L", (13_000, 13_000)).save(buf, "PNG")  # 169 Mpx, ~170 KB
    started = time.monotonic()
    assert thumbnail(buf.getvalue()) is None
    for decode in (image_facts, open_rgb):
        with pytest.raises(ImageRefused) as refused:
            decode(buf.getvalue())
        assert refused.value.reason == "too_many_pixels"
    assert time.monotonic() - started < 2


@pytest.mark.timeout(60)
def test_finalize_rows_give_bombs_and_reader_problems_their_reasons(tmp_path, bomb):
    from wit_builder.finalize.hashing import _shard_rows

    data = (sample("000000") + sample("000001", image=bomb)
            + sample("000002", meta=["a", "list"]) + sample("000003", meta={"uid": 5, "entry_ids": [1e30]})
            + member("PaxHeaders/x", BAD_PAX["zero_length"], b"x") + member("000004.jpg", b"x")
            + sample("000005"))[:-300]  # cut inside the last sample
    (tmp_path / "a.tar").write_bytes(data)
    rows = list(_shard_rows(3, str(tmp_path / "a.tar"), 64, 3.0))
    assert [(r["pos"], r["key"], r["drop_reason"]) for r in rows] == [
        (0, "000000", None), (1, "000001", "too_many_scans"), (2, "000002", None), (3, "000003", None),
        (4, "000004", "corrupt_member"), (5, "000005", "corrupt_shard")]
    assert rows[2]["uid"] == "3:2" and rows[3]["uid"] == "5" and rows[3]["entry_ids"] is None
