"""The one reader of a stage's inputs: finished stage folders and/or plain candidate files (rows),
or shard folders (`input_tars`).

A stage folder is read by its Parquet files once its `_SUCCESS` says it is whole. Plain files
(Parquet, CSV, TSV, JSON lines; the text ones gzipped or not, which Spark tells from the name)
are read by the format their name says. Several inputs become one frame, columns unioned by
name. Everything here is a user error when it cannot be read: a stage never starts on a guess.
"""

from __future__ import annotations

from functools import reduce

from wit_builder import stages, storage
from wit_builder.errors import UserError

FORMATS = {"parquet": "parquet", "csv": "csv", "tsv": "tsv", "jsonl": "json", "ndjson": "json",
           "json": "json"}


def format_of(path: str) -> str | None:
    """parquet | csv | tsv | json, from a file name (a trailing .gz ignored)."""
    name = path.lower().removesuffix(".gz")
    return FORMATS.get(name.rsplit(".", 1)[-1]) if "." in name else None


def read_rows(spark, inputs: list[str], hint: str):
    """All rows of `inputs` as one DataFrame; `hint` says what to give instead (in errors)."""
    _require_some(inputs, hint)
    frames = [_read_one(spark, path, hint) for path in inputs]
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def read_small(inputs: list[str], hint: str, limit: int):
    """All rows of `inputs` as one Arrow table when every input is local Parquet (a stage folder
    or plain files) with at most `limit` rows in all (`[spark] driver_rows`); None otherwise
    (Spark reads them then).

    Small inputs are where Spark's fixed cost (a job is ~0.2 s, a cached aggregate more) is most
    of a stage's time; a stage that runs them on the driver must give what its Spark path gives.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _require_some(inputs, hint)
    if limit <= 0:
        return None
    files = []
    for path in inputs:
        if storage.is_remote(path):
            return None
        by_format = _files_by_format(path, hint)
        if by_format is None:  # a stage folder: its top-level part files, as read_stage reads
            files += stages.stage_parts(path)
        elif set(by_format) == {"parquet"}:
            files += storage.list_files(path)
        else:
            return None
    if sum(pq.read_metadata(f).num_rows for f in files) > limit:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def require_columns(df, columns, inputs: list[str], hint: str) -> None:
    """`df`: a Spark DataFrame or an Arrow table."""
    names = df.column_names if hasattr(df, "column_names") else df.columns
    missing = [c for c in columns if c not in names]
    if missing:
        raise UserError(f"{', '.join(inputs)} lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(names)}; {hint})")


def check(inputs: list[str], hint: str) -> None:
    """Fail before Spark starts when an input is missing, unfinished or of an unknown format
    (the readers below fail the same way as they go: they need not call this first)."""
    _require_some(inputs, hint)
    for path in inputs:
        _files_by_format(path, hint)


def _require_some(inputs: list[str], hint: str) -> None:
    if not inputs:
        raise UserError(f"no input given ({hint})")


def _files_by_format(path: str, hint: str) -> dict[str, list[str]] | None:
    """{format: Spark paths} of a plain input; None for a (finished) stage folder."""
    if storage.exists(storage.join(path, stages.MANIFEST)):
        stages.require_complete(path)
        return None
    by_format: dict[str, list[str]] = {}
    files = storage.list_files(path)
    for f in files:
        fmt = format_of(f)
        if fmt is None:
            raise UserError(f"{f}: unknown candidate file format (give a stage folder or "
                            ".parquet, .csv, .tsv or .jsonl files, gzipped or not)")
        by_format.setdefault(fmt, []).append(storage.spark_path(f))
    if not by_format:
        raise UserError(f"no candidate files in {path} ({hint})")
    check_parquet([f for f in files if format_of(f) == "parquet"])  # else: a JVM trace
    return by_format


def _read_one(spark, path: str, hint: str):
    by_format = _files_by_format(path, hint)
    if by_format is None:
        return stages.read_stage(spark, path)
    frames = [_read_files(spark, fmt, paths) for fmt, paths in sorted(by_format.items())]
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def _read_files(spark, fmt: str, paths: list[str]):
    if fmt == "parquet":
        return spark.read.parquet(*paths)
    if fmt in ("csv", "tsv"):
        return spark.read.csv(paths, header=True, sep="\t" if fmt == "tsv" else ",",
                              multiLine=True, escape='"')
    return spark.read.json(paths)


def check_parquet(files: list[str]) -> None:
    """UserError naming the first file whose Parquet footer cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            with storage.open_file(path) as handle:
                pq.read_metadata(handle)
        except (pa.ArrowException, OSError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{path}: not a readable Parquet file ({why})") from None


def input_tars(inputs: list[str], hint: str) -> list[str]:
    """The WebDataset shards (.tar) of finished stage folders or plain shard folders."""
    tars = []
    for path in inputs:
        if storage.exists(storage.join(path, stages.MANIFEST)):
            stages.require_complete(path)
        tars += storage.list_files(path, suffixes=(".tar",))
    if not tars:
        raise UserError(f"no .tar shards found in {', '.join(inputs)} ({hint})")
    return tars
