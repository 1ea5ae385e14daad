"""Finalize's fast paths agree with the simple references: the banded search (as one call and
bucket by bucket, as the stage runs it) with all-pairs Hamming, the connected components on the
driver and on Spark with union-find, the bit-exact pHash with imagehash.phash on the shared real
photos, and the decisions with the rules, on the driver and on Spark (the whole stage both ways
is compared in tests/integration/test_finalize.py)."""

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from wit_builder.finalize.hashing import sample_schema
from wit_builder.phash import image_facts, image_facts_reference, phash_of_gray
from wit_builder import graph, runner
from wit_builder.finalize.neardup import bucket_rows, close_pairs, pairs_in_buckets
from wit_builder.finalize.stage import decide


def _planted(n, seed, max_distance):
    """n random signed 64-bit hashes, every fifth followed by a copy with 0..max_distance + 2
    bits flipped (some within reach, some just out), plus a few repeated values."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 5):
        bits = rng.choice(64, size=rng.integers(0, max_distance + 3), replace=False)
        h[i + 1] = h[i] ^ np.uint64(sum(1 << int(b) for b in bits))
    h[n - 3:] = h[:3]
    return h.view(np.int64)


def _all_pairs(a, b, max_distance):
    a, b = np.unique(a), np.unique(b)
    d = np.bitwise_count(a.view(np.uint64)[:, None] ^ b.view(np.uint64)[None, :])
    i, j = np.nonzero(d <= max_distance)
    return {(int(a[x]), int(b[y])) for x, y in zip(i, j)}


@pytest.mark.parametrize("max_distance,bands", [(0, 1), (2, 3), (4, 5), (4, 8), (6, 7)])
def test_banded_search_finds_exactly_the_all_pairs_pairs(max_distance, bands):
    h = _planted(3000, max_distance, max_distance)
    got = close_pairs(h, None, max_distance, bands)
    want = {(x, y) for x, y in _all_pairs(h, h, max_distance) if x < y}
    assert {tuple(p) for p in got.tolist()} == want
    assert len(got) == len(want) and (len(want) > 0 or max_distance == 0)  # each pair once
    # bucket by bucket: the hashes split into batches, their buckets cut into groups of whole
    # buckets (as Spark partitions them), every pair found
    buckets = pa.Table.from_batches([bucket_rows(part, bands) for part in np.array_split(h, 3)])
    bucket = buckets.column("bucket").to_numpy()
    found = [pairs_in_buckets(buckets.filter(pa.array(bucket % 4 == k)), max_distance)
             for k in range(4)]
    assert {(a, b) for t in found for a, b in zip(t.column("a").to_pylist(),
                                                   t.column("b").to_pylist())} == want
    # left against right (decontamination): left values first
    left, right = h[:2000], h[1000:] ^ 1
    cross = close_pairs(left, right, max_distance, bands)
    assert {tuple(p) for p in cross.tolist()} == _all_pairs(left, right, max_distance)


def test_components_are_union_find_with_the_smallest_hash(spark):
    h = np.unique(_planted(2000, 7, 4))
    pairs = close_pairs(h, None, 4, 5)
    # chain a few clusters together through extra edges
    pairs = np.concatenate([pairs, np.array([[h[0], h[1]], [h[1], h[2]], [h[5], h[9]]])])
    parent = {int(v): int(v) for v in h}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    want = {int(v): find(int(v)) for v in np.unique(pairs)}
    assert len({v for v in want.values()}) < len(want)  # some components have several nodes
    edges = pa.table({"a": pairs[:, 0], "b": pairs[:, 1]})
    on_driver = graph.components(runner.Rows(table=edges)).table
    on_spark = graph.components(runner.Rows(frame=spark.createDataFrame(edges.to_pandas()))).frame
    for labels in (on_driver.to_pylist(), [r.asDict() for r in on_spark.collect()]):
        assert {r["node"]: r["label"] for r in labels} == want
        assert len(labels) == len(want)


def test_fast_phash_is_imagehash_bit_for_bit_on_the_shared_photos(shared_data):
    files = sorted((shared_data / "images").rglob("*.jpg")) + sorted((shared_data / "images").rglob("*.png"))
    assert len(files) >= 1000
    differ = [f.name for f in files if image_facts(f.read_bytes()) != image_facts_reference(f.read_bytes())]
    assert differ == []


def test_fast_phash_ties_take_imagehash_path():
    # flat and nearly flat images: all AC coefficients (almost) equal the median
    for img in (Image.new("L", (100, 80), 128), Image.new("L", (64, 64), 0),
                Image.linear_gradient("L").resize((40, 300))):
        bits = np.packbits(imagehash.phash(img).hash.flatten())
        assert phash_of_gray(img) == int.from_bytes(bits.tobytes(), "big", signed=True)


def _table(rows):
    base = {"shard": 0, "key": "k", "entry_ids": None, "width": 100, "height": 100, "drop_reason": None}
    full = [{**base, "rid": i, "pos": i, **r} for i, r in enumerate(rows)]
    return pa.Table.from_pylist(full, schema=sample_schema())


def test_decisions_follow_the_rules(spark):
    sha = lambda c: c * 64
    rows = [
        {"uid": "b", "sha256": sha("1"), "phash": 2**20 | 0b1111, "entry_ids": [1]},        # near a (1 bit), a has the smaller uid
        {"uid": "a", "sha256": sha("2"), "phash": 2**20 | 0b1110, "entry_ids": [1]},        # smallest uid: kept
        {"uid": "c", "sha256": sha("2"), "phash": 2**20 | 0b1110, "entry_ids": [2]},        # same bytes as a
        {"uid": "d", "sha256": sha("3"), "phash": 2**40, "entry_ids": [2]},         # eval hit
        {"uid": "e", "sha256": sha("4"), "phash": 2**50, "drop_reason": "too_small"},
        {"uid": "f", "sha256": sha("5"), "phash": -1, "entry_ids": []},
        {"uid": "g", "sha256": sha("6"), "phash": 2**30 | 2**31 | 2**32},
    ]
    want = ["near_duplicate", None, "duplicate_image", "eval_contamination", "too_small", None, None]
    table = _table(rows)
    on_driver = runner.Rows(table=table)
    on_spark = runner.Rows(frame=spark.createDataFrame(table.to_pandas(), schema=_spark_schema()))
    for samples in (on_driver, on_spark):
        judged, counts = decide(samples, np.array([2**40 | 1]), 4, 5, t=10, seed=0)
        got = runner.table(judged).sort_by("rid")
        assert got.column("drop_reason").to_pylist() == want
        assert counts.to_pylist() == [{"entry_id": 1, "count_before": 1, "count_after": 1}]


def test_balance_cuts_to_t_the_same_on_both_sides(spark):
    hashes = np.random.default_rng(0).integers(-2**63, 2**63 - 1, 300)  # ~32 bits apart
    rows = [{"uid": f"{i:016x}", "sha256": f"{i:064x}", "phash": int(h),
             "entry_ids": [1] if i % 3 else [1, 2]} for i, h in enumerate(hashes)]
    table = _table(rows)
    results = []
    for samples in (runner.Rows(table=table),
                    runner.Rows(frame=spark.createDataFrame(table.to_pandas(), schema=_spark_schema()))):
        judged, counts = decide(samples, None, 4, 5, t=50, seed=3)
        results.append((runner.table(judged).sort_by("rid").column("drop_reason").to_pylist(),
                        counts.to_pylist()))
    assert results[0] == results[1]
    reasons, counts = results[0]
    assert counts[0]["count_before"] == 300 and 20 < counts[0]["count_after"] < 150
    assert reasons.count("balanced_out") == 300 - counts[0]["count_after"]


def _spark_schema():
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(sample_schema())




def _tarfile_files(data: bytes):
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def test_tar_reader_reads_what_tarfile_reads(tmp_path, shared_data):
    import io
    import tarfile

    from shard_maker import sample, write_shards
    from wit_builder.shard.tars import MAX_MEMBER_BYTES, _members

    def tar_files(raw):
        return [(member.name, member.read()) for member in _members(raw, MAX_MEMBER_BYTES)]

    photo = (shared_data / "images" / "flickr8k_dev" / "train" / "1000268201_693b08cb0e.jpg").read_bytes()
    (shard,) = write_shards(tmp_path, [sample("a.jpg", photo, "é first", [1]),
                                       sample("b.jpg", None, "x", [], "404"), sample("c.jpg", photo, "c", [])], 10)
    cases = [shard.read_bytes()]
    names = ["short.jpg", "d" * 120 + "/" + "e" * 80 + ".json", "ünï/çødé.txt", "p" * 99 + ".txt",
             "dir/", "x" * 150 + ".jpg"]
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for i, name in enumerate(names):
                if fmt == tarfile.USTAR_FORMAT and (len(name) > 200 or not name.isascii()
                                                    or len(name.rsplit("/", 1)[-1]) > 100):
                    continue
                info = tarfile.TarInfo(name)
                if name.endswith("/"):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                    continue
                body = bytes(range(256)) * i + b"end"
                info.size, info.mtime = len(body), 1.5 + i
                tar.addfile(info, io.BytesIO(body))
        cases.append(buf.getvalue())
    for data in cases:
        want = _tarfile_files(data)
        assert tar_files(io.BytesIO(data)) == want and want
    # compressed shards are read as a stream
    import bz2
    import gzip
    import lzma

    for compress in (gzip.compress, bz2.compress, lzma.compress):
        assert tar_files(io.BytesIO(compress(cases[1]))) == _tarfile_files(cases[1])


def test_tar_writer_writes_webdataset_members():
    import io
    import tarfile

    from webdataset import TarWriter

    from wit_builder.shard.tars import TarWriter as OurTarWriter

    def members(cls):
        buf = io.BytesIO()
        writer = cls(buf)
        writer.write({"__key__": "000001", "jpg": b"\xff\xd8" * 300, "txt": b"hi", "json": '{"a": "é"}'})
        writer.write({"__key__": "000002", "jpg": b"x", "txt": b"", "json": "{}"})
        writer.close()
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
            return len(buf.getvalue()), [(m.name, m.size, m.mode, m.uname, m.gname, m.type,
                                          tar.extractfile(m).read(), bool(m.pax_headers))
                                         for m in tar.getmembers()]

    (ours, our_members), (theirs, their_members) = members(OurTarWriter), members(TarWriter)
    # the same members; plain ustar headers, as img2dataset's shards (webdataset's PAX headers
    # cost each member an extended header for its float mtime)
    assert [m[:-1] for m in our_members] == [m[:-1] for m in their_members]
    assert not any(m[-1] for m in our_members) and all(m[-1] for m in their_members)
    assert ours < theirs
