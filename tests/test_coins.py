"""Balance coins: uniform, keyed only by (uid, entry, seed); head entries cut to ~t, tail kept."""

import hashlib
import math

import numpy as np
import pyarrow as pa

from wit_builder.balance.stage import summary
from wit_builder.coins import coins, keep_mask, uid_hash


def _uids(n: int, salt: str = "") -> pa.Array:
    return pa.array([hashlib.blake2b(f"{salt}{i}".encode(), digest_size=8).hexdigest() for i in range(n)])


def test_uid_hash_reads_hex_uids_and_hashes_the_rest():
    uids = pa.array(["0123456789abcdef", "ffffffffffffffff", "0000000000000001"])
    assert uid_hash(uids).tolist() == [int(u, 16) for u in uids.to_pylist()]
    assert uid_hash(uids.slice(1)).tolist() == [2**64 - 1, 1]
    assert uid_hash(uids.cast(pa.large_string())).tolist() == uid_hash(uids).tolist()
    other = uid_hash(pa.array(["not-hex", "ABCDEF0123456789"]))
    assert other.tolist() == [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "big")
                              for u in ("not-hex", "ABCDEF0123456789")]
    assert uid_hash(pa.array([], pa.string())).tolist() == []


def test_coins_are_uniform_and_keyed_by_uid_entry_seed():
    h = uid_hash(_uids(100_000))
    c = coins(h, np.zeros(len(h), np.int64), 0)
    assert 0 <= c.min() and c.max() < 1
    counts, _ = np.histogram(c, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - 10_000) < 5 * math.sqrt(10_000 * 0.9))  # 5 sigma per decile
    assert not np.array_equal(c, coins(h, np.ones(len(h), np.int64), 0))  # another entry
    assert not np.array_equal(c, coins(h, np.zeros(len(h), np.int64), 1))  # another seed
    order = np.random.default_rng(0).permutation(len(h))
    assert np.array_equal(coins(h[order], np.zeros(len(h), np.int64), 0), c[order])
    other = coins(h, np.ones(len(h), np.int64), 0)
    assert abs(np.corrcoef(c, other)[0, 1]) < 0.02  # entries' coins are independent


def test_head_entry_keeps_about_t_and_tail_keeps_everything():
    n, t = 200_000, 2_000
    uids = _uids(n)
    # every row matches the head entry 0; every 100th row also matches tail entry 1
    ids = pa.array([[0, 1] if i % 100 == 0 else [0] for i in range(n)], pa.list_(pa.int32()))
    counts = np.array([n, n // 100])
    kept = keep_mask(uids, ids, counts, t, seed=0)
    tail = np.arange(n) % 100 == 0
    assert kept[tail].all()  # count 2,000 <= t: p = 1
    head_only = kept[~tail].sum()
    p = t / n
    mean, sd = (n - tail.sum()) * p, math.sqrt((n - tail.sum()) * p * (1 - p))
    assert abs(head_only - mean) < 5 * sd  # binomial bound
    total_head = kept.sum()  # pairs kept that match entry 0
    assert abs(total_head - (tail.sum() + mean)) < 5 * sd


def test_any_coin_keeps_the_pair():
    n = 50_000
    uids = _uids(n)
    ids = pa.array([[0, 1]] * n, pa.list_(pa.int32()))
    kept = keep_mask(uids, ids, np.array([10 * n, 10 * n]), n // 10, seed=3)
    p = 0.01
    expected = n * (1 - (1 - p) ** 2)
    assert abs(kept.sum() - expected) < 5 * math.sqrt(expected)


def test_keep_mask_does_not_depend_on_batching():
    n = 20_000
    uids = _uids(n, "b")
    ids = pa.array([[i % 7, 7 + i % 3] for i in range(n)], pa.list_(pa.int32()))
    counts = np.full(10, 5_000)
    whole = keep_mask(uids, ids, counts, 300, seed=1)
    parts = np.concatenate([keep_mask(uids.slice(a, 1234), ids.slice(a, 1234), counts, 300, seed=1)
                            for a in range(0, n, 1234)])
    assert np.array_equal(whole, parts) and 0 < whole.sum() < n
    chunked = keep_mask(pa.chunked_array([uids.slice(0, 5), uids.slice(5)]),
                        pa.chunked_array([ids.slice(0, 5), ids.slice(5)]), counts, 300, seed=1)
    assert np.array_equal(whole, chunked)


def test_rows_without_entries_are_not_kept():
    kept = keep_mask(pa.array(["0000000000000001", "0000000000000002"]),
                     pa.array([[], [0]], pa.list_(pa.int32())), np.array([1]), 10, 0)
    assert kept.tolist() == [False, True]


def test_summary_head_and_tail():
    table = pa.table({"entry_id": [0, 1, 2], "count_before": [1000, 50, 10],
                      "count_after": [100, 50, 10]})
    s = summary(table, 100)
    assert s["head_entries"] == 1 and s["pairs_before"] == 1060 and s["pairs_after"] == 160
    assert s["head_share_before"] == round(1000 / 1060, 6) and s["head_share_after"] == round(100 / 160, 6)
