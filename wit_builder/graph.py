"""Connected components of an undirected graph given as edge rows, on the driver or on Spark.

Finalize clusters near-duplicate images with it: the nodes are pHash values, the edges the
close pairs. The driver's rows go to scipy's `connected_components` (union-find speed, all in
memory); Spark's are labelled by min-label propagation, one round of joins per step of the
longest shortest path in a component (near-duplicate chains are short: a few rounds).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from wit_builder.runner import Rows, release


def components(edges: Rows) -> Rows:
    """(node, label) for every node of the undirected edges (a, b) (int64 columns): label =
    the smallest node of its connected component."""
    if edges.on_driver:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = edges.table.column("a").to_numpy(zero_copy_only=False)
        b = edges.table.column("b").to_numpy(zero_copy_only=False)
        nodes = np.unique(np.r_[a, b]).astype(np.int64)
        graph = coo_matrix((np.ones(len(a), np.int8),
                            (np.searchsorted(nodes, a), np.searchsorted(nodes, b))),
                           shape=(len(nodes), len(nodes)))
        _, comp = connected_components(graph, directed=False)
        smallest = np.full(comp.max() + 1 if len(comp) else 0, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(smallest, comp, nodes)
        return Rows(table=pa.table({"node": nodes, "label": smallest[comp]}))
    from pyspark.sql import functions as F

    # min-label propagation: one round per step of the longest shortest path
    frame = edges.frame.select("a", "b").localCheckpoint()
    labels = frame.select(F.col("a").alias("node")).union(frame.select(F.col("b").alias("node"))) \
        .distinct().withColumn("label", F.col("node")).localCheckpoint()
    while True:
        to_b = frame.join(labels.withColumnRenamed("node", "a"), "a").select(F.col("b").alias("node"), "label")
        to_a = frame.join(labels.withColumnRenamed("node", "b"), "b").select(F.col("a").alias("node"), "label")
        new = labels.union(to_b).union(to_a).groupBy("node").agg(F.min("label").alias("label")) \
            .localCheckpoint()
        changed = new.alias("n").join(labels.alias("o"), "node") \
            .where(F.col("n.label") != F.col("o.label")).count()
        labels = new
        if changed == 0:
            release(edges)
            return Rows(frame=labels)
