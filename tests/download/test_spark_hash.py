"""spark_hash.py against what Spark 4's `hash()` gave for these strings (the integration test of
the driver's preparation also compares whole files with Spark's)."""

import pyarrow as pa

from wit_builder.download.spark_hash import partitions_of, string_hashes

# SELECT hash(v): 4-byte rounds, 1-3 byte tails, non-ASCII UTF-8
SPARK = {"": 142593372, "a": 1485273170, "ab": -97053317, "abc": 1322437556,
         "abcd": -396302900, "abcde": 814637928, "0123456789abcdef": -1729524877,
         "é": 2119106806, "ä 3": -1927169686, "日本語": -1143049834}


def test_known_spark_hashes():
    values = pa.array(list(SPARK), pa.string())
    assert string_hashes(values).tolist() == list(SPARK.values())
    assert string_hashes(values.slice(3, 4)).tolist() == list(SPARK.values())[3:7]  # offsets


def test_partition_is_pmod():
    assert partitions_of(pa.array(list(SPARK)), 7).tolist() == [((h % 7) + 7) % 7 for h in SPARK.values()]
