"""Near-duplicate search on 64-bit perceptual hashes with banded hashing, in Spark.

Split the 64 bits into `bands` bands. Two hashes within Hamming distance d differ in at most d
bits, so when bands > d at least one band is bit-for-bit equal (pigeonhole): joining on
(band index, band value) finds every close pair while comparing only hashes that share a band,
never all pairs. Fewer, wider bands give smaller buckets; `bands = d + 1` is the widest choice
that still finds every pair.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wit_builder.errors import UserError

HASH_BITS = 64


def band_layout(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: `bands` contiguous bit ranges covering all 64 bits."""
    if not 1 <= bands <= HASH_BITS:
        raise UserError(f"finalize.bands = {bands}: must be between 1 and {HASH_BITS}")
    edges = [i * HASH_BITS // bands for i in range(bands + 1)]
    return [(lo, hi - lo) for lo, hi in zip(edges, edges[1:])]


def check_bands(bands: int, max_distance: int) -> None:
    if bands <= max_distance:
        raise UserError(f"finalize.bands = {bands} cannot find every pair within Hamming distance "
                        f"{max_distance} (set bands to at least {max_distance + 1})")
    band_layout(bands)


def band_values(phash: int, bands: int) -> list[int]:
    """The band values of one hash (the Python twin of `_banded`, for tests and baselines)."""
    unsigned = phash & (2**HASH_BITS - 1)
    return [(unsigned >> shift) & ((1 << width) - 1) for shift, width in band_layout(bands)]


def _banded(df: DataFrame, bands: int) -> DataFrame:
    """One row per (row of df, band): adds `band` and `value` columns."""
    parts = []
    for i, (shift, width) in enumerate(band_layout(bands)):
        mask = F.lit(-1 if width == HASH_BITS else (1 << width) - 1).cast("long")
        value = F.shiftrightunsigned(F.col("phash"), shift).bitwiseAND(mask)
        parts.append(F.struct(F.lit(i).alias("band"), value.alias("value")))
    return df.withColumn("_b", F.explode(F.array(*parts))).select("*", "_b.band", "_b.value").drop("_b")


def close_pairs(left: DataFrame, right: DataFrame | None, max_distance: int, bands: int) -> DataFrame:
    """Distinct pairs (a, b) of hash values within `max_distance` bits.

    `left` and `right` are frames with a non-null `phash` column. Without `right`, pairs are
    within `left` and each unordered pair appears once, with a < b.
    """
    check_bands(bands, max_distance)
    a = _banded(left.select(F.col("phash")).distinct(), bands).withColumnRenamed("phash", "a")
    b = _banded((right if right is not None else left).select(F.col("phash")).distinct(), bands) \
        .withColumnRenamed("phash", "b")
    pairs = a.join(b, ["band", "value"])
    close = F.bit_count(F.col("a").bitwiseXOR(F.col("b"))) <= max_distance
    if right is None:
        close = close & (F.col("a") < F.col("b"))
    return pairs.where(close).select("a", "b").distinct()


def components(edges: DataFrame) -> DataFrame:
    """(node, label) for every node of an undirected edge list (a, b): label = smallest node
    of its connected component (min-label propagation; one round per step of the diameter)."""
    labels = edges.select(F.col("a").alias("node")).union(edges.select(F.col("b").alias("node"))) \
        .distinct().withColumn("label", F.col("node")).localCheckpoint()
    while True:
        to_b = edges.join(labels.withColumnRenamed("node", "a"), "a").select(F.col("b").alias("node"), "label")
        to_a = edges.join(labels.withColumnRenamed("node", "b"), "b").select(F.col("a").alias("node"), "label")
        new = labels.union(to_b).union(to_a).groupBy("node").agg(F.min("label").alias("label")) \
            .localCheckpoint()
        changed = new.alias("n").join(labels.alias("o"), "node") \
            .where(F.col("n.label") != F.col("o.label")).count()
        labels = new
        if changed == 0:
            return labels


def cluster_ids(rows: DataFrame, max_distance: int, bands: int) -> DataFrame:
    """`rows` (with `phash`) plus `cluster`: rows whose hashes chain within `max_distance`
    bits share a cluster id (the smallest hash of the chain)."""
    labels = components(close_pairs(rows, None, max_distance, bands))
    return rows.join(labels.withColumnRenamed("node", "phash"), "phash", "left") \
        .withColumn("cluster", F.coalesce(F.col("label"), F.col("phash"))).drop("label")


# --- the same search on the driver, in numpy (small and medium inputs) -------------------------
#
# The stage decides on the driver when the metadata is small (`[spark] driver_rows`); these are
# the numpy twins of close_pairs and components, with the same results: the same pigeonhole
# bands, every hash sharing a band value compared, pairs checked by popcount.


def _band_column(unsigned, shift: int, width: int):
    import numpy as np

    mask = np.uint64((1 << width) - 1) if width < HASH_BITS else np.uint64(2**HASH_BITS - 1)
    return (unsigned >> np.uint64(shift)) & mask


def _bucket_pairs(values, tags, max_distance: int, hashes, cross: bool):
    """(i, j) index pairs of `hashes` sharing a bucket value within `max_distance` bits.

    Sorts by bucket value and compares each element with the ones after it in its bucket:
    step k pairs i with i + k, for the elements whose bucket has more than k left. Memory is
    O(n) per step plus the pairs kept. `cross`: only pairs with tags[i] != tags[j]."""
    import numpy as np

    order = np.argsort(values, kind="stable")
    v = values[order]
    n = len(v)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    ends = np.r_[starts[1:], n]
    end_of = np.repeat(ends, ends - starts)  # one past the last element of each one's bucket
    h = hashes[order]
    t = tags[order] if cross else None
    active = np.flatnonzero(end_of - np.arange(n) > 1)
    found = []
    k = 1
    while len(active):
        j = active + k
        close = np.bitwise_count(h[active] ^ h[j]) <= max_distance
        if cross:
            close &= t[active] != t[j]
        if close.any():
            found.append(np.stack([order[active[close]], order[j[close]]], axis=1))
        k += 1
        active = active[end_of[active] - active > k]
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def close_pairs_np(left, right=None, max_distance: int = 4, bands: int = 5):
    """numpy twin of `close_pairs`: int64 array (k, 2) of distinct hash-value pairs (a, b)
    within `max_distance` bits, a from `left` and b from `right`; without `right`, pairs within
    `left`, each unordered pair once with a < b. Inputs: int64 arrays (signed pHash values)."""
    import numpy as np

    check_bands(bands, max_distance)
    a = np.unique(np.asarray(left, np.int64))
    cross = right is not None
    b = np.unique(np.asarray(right, np.int64)) if cross else np.zeros(0, np.int64)
    hashes = np.concatenate([a, b]).view(np.uint64)
    tags = np.r_[np.zeros(len(a), np.int8), np.ones(len(b), np.int8)]
    found = [_bucket_pairs(_band_column(hashes, shift, width), tags, max_distance, hashes, cross)
             for shift, width in band_layout(bands)]
    pairs = np.concatenate(found)
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    signed = hashes.view(np.int64)
    if cross:  # orient (left, right)
        pairs = np.where((tags[pairs[:, 0]] == 0)[:, None], pairs, pairs[:, ::-1])
    else:  # a < b as signed values
        pairs = np.sort(pairs, axis=1)  # indices into the sorted unique a: index order = value order
    pairs = np.unique(pairs, axis=0)
    return signed[pairs]


def components_np(nodes, pairs):
    """numpy twin of `components`: for each of `nodes` (int64 hash values, unique), the smallest
    node of its connected component under the edges `pairs` (k, 2); isolated nodes get themselves."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.asarray(nodes, np.int64)
    order = np.argsort(nodes, kind="stable")
    sorted_nodes = nodes[order]
    if len(pairs) == 0:
        return nodes.copy()
    i = order[np.searchsorted(sorted_nodes, pairs[:, 0])]
    j = order[np.searchsorted(sorted_nodes, pairs[:, 1])]
    n = len(nodes)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, comp, nodes)
    return smallest[comp]
