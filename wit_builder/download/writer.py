"""A download shard's files, as img2dataset's WebDatasetSampleWriter writes them, without
importing img2dataset: NNNNN.tar (KEY.jpg, KEY.json, KEY.txt for each image) and NNNNN.parquet
(one row per attempted URL, failures included), in the one shard schema of every stage
(shard/samples.py: img2dataset's columns, then `phash` and `source_shard`, null here).

img2dataset's writer goes through webdataset's TarWriter, whose import pulls in torch (about 4
s in each new executor process, before its first image); shard/tars.py's TarWriter writes the
same members without it. The Parquet file is written in row groups of 100, as its
BufferedParquetWriter does. The caption is stored under our column name `text` in
KEY.json and the Parquet (KEY.txt is the same text).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder import storage
from wit_builder.shard.samples import SHARD_COLUMNS, parquet_schema, read_stats, shard_stats
from wit_builder.shard.tars import TarWriter, read_samples

PARQUET_ROWS = 100  # rows per row group, as img2dataset's BufferedParquetWriter
COUNTS = ["count", "successes", "failed_to_download", "failed_to_resize", "host_backoffs"]


class SampleWriter:
    """img2dataset's `sample_writer_class` contract: write(image, key, caption, meta), close().
    Its `schema` (the columns img2dataset would write) gives way to the shard schema."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema,
                 encode_format):
        self.schema = parquet_schema()
        self.save_caption, self.encode_format = save_caption, encode_format
        name = f"{output_folder.rstrip('/')}/{storage.shard_name(shard_id, oom_shard_count)}"
        self.tar_file = storage.open_file(f"{name}.tar", "wb")
        self.tar = TarWriter(self.tar_file)
        self.parquet_file = storage.open_file(f"{name}.parquet", "wb")
        self.parquet = pq.ParquetWriter(self.parquet_file, self.schema)
        self.rows: list[dict] = []

    def write(self, img_str, key, caption, meta):
        meta = {("text" if k == "caption" else k): v for k, v in meta.items()}
        meta = {name: meta.get(name) for name, _ in SHARD_COLUMNS}
        if img_str is not None:
            members = {"__key__": key, self.encode_format: img_str,
                       "json": json.dumps(meta, indent=4)}
            if self.save_caption:
                members["txt"] = str(caption) if caption is not None else ""
            self.tar.write(members)
        self.rows.append(meta)
        if len(self.rows) >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.parquet.write_table(pa.Table.from_pylist(self.rows, self.schema))
            self.rows = []

    def close(self):
        self._flush()
        self.parquet.close()
        self.parquet_file.close()
        self.tar.close()
        self.tar_file.close()


def join(folders: list, out_dir: str, shard_id: int) -> None:
    """One shard from its parts (each written by a SampleWriter into its own folder, with its
    `_stats.json`): the tar members and Parquet rows of each part in turn, the counts summed,
    `_stats.json` written last as for any shard; then the parts are removed."""
    name = storage.shard_name(shard_id)
    stats = [read_stats(f"{folder.rstrip('/')}/{name}_stats.json") for folder in folders]
    base = f"{out_dir.rstrip('/')}/{name}"
    with storage.open_file(f"{base}.tar", "wb") as tar_file:
        tar = TarWriter(tar_file)
        for folder in folders:
            for sample in read_samples(f"{folder.rstrip('/')}/{name}.tar"):
                tar.write({"__key__": sample.key, **sample.files})
        tar.close()
    tables = []
    for folder in folders:
        with storage.open_file(f"{folder.rstrip('/')}/{name}.parquet", "rb") as handle:
            tables.append(pq.read_table(handle))
    with storage.open_file(f"{base}.parquet", "wb") as handle:
        pq.write_table(pa.concat_tables(tables), handle, row_group_size=PARQUET_ROWS)
    status: dict = {}
    for s in stats:
        for message, n in s["status_dict"].items():
            status[message] = status.get(message, 0) + n
    write_stats(base, {k: sum(s.get(k, 0) for s in stats) for k in COUNTS}, status,
                min(s["start_time"] for s in stats), max(s["end_time"] for s in stats))
    for folder in folders:
        for suffix in (".tar", ".parquet", "_stats.json"):
            storage.remove(f"{folder.rstrip('/')}/{name}{suffix}")


def write_stats(base: str, counts: dict, status: dict, start: float, end: float) -> None:
    """`BASE_stats.json` (shard/samples.py's schema, `host_backoffs` added); written last and
    atomically: a shard is finished when this file parses."""
    storage.write_json_atomic(f"{base}_stats.json", shard_stats(
        counts["count"], counts["successes"], start, end, status,
        counts["failed_to_download"], counts["failed_to_resize"],
        host_backoffs=counts["host_backoffs"]))
