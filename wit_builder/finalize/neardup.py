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
