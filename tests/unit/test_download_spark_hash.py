"""spark_hash.py against what Spark 4's `hash()` gave for these strings (the integration test of
the driver's preparation also compares whole files with Spark's)."""

from wit_builder.download.spark_hash import partition_of, string_hash

# SELECT hash(v): 4-byte rounds, 1-3 byte tails, non-ASCII UTF-8
SPARK = {"": 142593372, "a": 1485273170, "ab": -97053317, "abc": 1322437556,
         "abcd": -396302900, "abcde": 814637928, "0123456789abcdef": -1729524877,
         "é": 2119106806, "ä 3": -1927169686, "日本語": -1143049834}


def test_known_spark_hashes():
    for value, expected in SPARK.items():
        assert string_hash(value) == expected, value


def test_partition_is_pmod():
    for value, h in SPARK.items():
        assert partition_of(value, 7) == ((h % 7) + 7) % 7
