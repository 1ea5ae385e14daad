"""The per-row filter annotation of before issue 12 (wit_builder/filter at 5e12195), kept as the
reference the batch version must agree with: lid.176 through fastText's Python wrapper, one text
at a time; `canonical_url` per URL; every rule over the whole batch, eagerly. Shared by
tests/filter/test_annotate.py and tests/benchmarks/bench_filter.py. Also the dedup as Spark
windows (`dedup_reasons_by_windows`).
"""

from __future__ import annotations

import re
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder.filter import dedup, langid
from wit_builder.filter.rules import BOILERPLATE_PATTERN, FILENAME_PATTERN, Rules, _suffixes_in


def predict(texts: pa.Array, model_path: str) -> tuple[pa.Array, pa.Array]:
    model = langid.load_model(model_path)
    langs: list[str | None] = []
    scores = np.zeros(len(texts), dtype=np.float32)
    for i, text in enumerate(texts.to_pylist()):
        if not text:
            langs.append(None)
            continue
        labels, probs = model.predict(text[:langid.MAX_CHARS].replace("\n", " "), k=1)
        langs.append(labels[0][len(langid.LABEL_PREFIX):] if labels else None)
        scores[i] = probs[0] if len(probs) else 0.0
    return pa.array(langs, pa.string()), pa.array(scores, pa.float32())


def canonical_urls(urls: pa.Array) -> pa.Array:
    return pa.array([None if u is None else dedup.canonical_url(u) for u in urls.to_pylist()], pa.string())


def _boilerplate_key(texts: pa.Array) -> pa.Array:
    key = pc.replace_substring_regex(dedup.normalize_text(texts), r"[^\pL\pN]+", " ")
    return pc.utf8_trim_whitespace(key)


def _count(texts: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.count_substring_regex(texts, pattern), 0)


def caption_and_url_rules(text, lang, score, canonical, text_norm, rules: Rules):
    length = pc.utf8_length(pc.utf8_trim_whitespace(text))
    nonspace = pc.subtract(length, _count(text, r"\s"))
    checks = []
    if rules.languages:
        wrong = pc.or_(pc.invert(pc.is_in(lang, value_set=pa.array(rules.languages, pa.string()))),
                       pc.less(score, rules.min_lang_score))
        checks.append(("language", pc.and_(pc.is_valid(lang), wrong)))
    checks.append(("text_too_long", pc.greater(length, rules.max_chars)))
    if rules.drop_filenames:
        checks.append(("filename_text", pc.match_substring_regex(text, FILENAME_PATTERN)))
    if rules.drop_boilerplate:
        key = _boilerplate_key(text)
        checks.append(("boilerplate_text", pc.or_(
            pc.is_in(key, value_set=pa.array(rules.boilerplate, pa.string())),
            pc.match_substring_regex(key, BOILERPLATE_PATTERN))))
    checks.append(("too_few_words", pc.less(_count(text, r"\S+"), rules.min_words)))
    checks.append(("too_few_chars", pc.less(pc.fill_null(length, 0), rules.min_chars)))
    checks.append(("too_few_letters", pc.less(
        pc.cast(_count(text, r"\pL"), pa.float64()),
        pc.multiply(pc.cast(pc.fill_null(nonspace, 0), pa.float64()), rules.min_letter_fraction))))

    absolute = pc.match_substring_regex(canonical, r"^https?://[^/?#]+")
    url_bad = pc.invert(pc.fill_null(absolute, False))
    if rules.blocked_extensions:
        ext = "|".join(re.escape(e) for e in rules.blocked_extensions)
        url_bad = pc.or_(url_bad, pc.match_substring_regex(
            canonical, rf"(?i)^https?://[^/?#]*/[^?#]*\.({ext})(\?.*)?$"))
    checks.append(("url_rule", url_bad))
    if rules.blocked_domains:
        hosts = pc.replace_substring_regex(canonical, r"^https?://([^@/]*@)?([^/:?#]+).*$", r"\2")
        checks.append(("blocked_domain", _suffixes_in(hosts, rules.blocked_domains)))
    if rules.tracker_patterns:
        lowered = pc.utf8_lower(canonical)
        hit = reduce(pc.or_, [pc.match_substring_regex(lowered, p) for p in rules.tracker_patterns])
        checks.append(("tracker", hit))
    if rules.eval_urls or rules.eval_texts:
        checks.append(("eval_contamination", pc.or_(
            pc.is_in(canonical, value_set=pa.array(rules.eval_urls, pa.string())),
            pc.is_in(text_norm, value_set=pa.array(rules.eval_texts, pa.string())))))
    return checks


def annotate_batch(batch: pa.RecordBatch, rules: Rules) -> pa.RecordBatch:
    text = batch.column("text")
    lang, score = predict(text, rules.model_path)
    canonical = canonical_urls(batch.column("url"))
    text_norm = dedup.normalize_text(text)
    reason = pa.nulls(len(batch), pa.string())
    for name, mask in caption_and_url_rules(text, lang, score, canonical, text_norm, rules):
        fires = pc.and_(pc.is_null(reason), pc.fill_null(mask, False))
        reason = pc.if_else(fires, pa.scalar(name, pa.string()), reason)
    columns = batch.columns + [lang, score, canonical, text_norm, reason]
    names = batch.schema.names + ["lang", "lang_score", "url_canonical", "text_norm", "drop_reason"]
    return pa.RecordBatch.from_arrays(columns, names=names)


def dedup_reasons_by_windows(df, max_texts_per_url: int, reason_col: str = "drop_reason",
                  url_col: str = "url_canonical", text_col: str = "text_norm"):
    """`df` with `reason_col` filled with `duplicate` / `too_many_texts_per_url`: the dedup as
    Spark SQL windows (the filter stage's Spark path before issue 22), the reference that
    dedup.dedup_reasons (Arrow sorts, on the driver or per shuffled partition) must agree with."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    alive = F.col(reason_col).isNull()
    # Within an image URL: texts in order, and for each text its live rows first, smallest uid
    # first. A live row is a duplicate when the row before it is live with the same text.
    # The same (url, text) on two pages has one uid: page_url and source break that tie.
    ties = [c for c in ("page_url", "source") if c in df.columns]
    by_text = Window.partitionBy(url_col).orderBy(text_col, F.col(reason_col).isNotNull(), "uid",
                                                  *ties)
    prev_alive = F.lag(F.col(reason_col).isNull(), 1, False).over(by_text)
    prev_text = F.lag(text_col, 1).over(by_text)
    df = df.withColumn("_dup", alive & prev_alive & (prev_text == F.col(text_col)))
    reason = F.when(F.col("_dup"), F.lit("duplicate"))
    if max_texts_per_url:
        # Same partitioning, another order: Spark sorts again but does not shuffle again.
        first_of_text = alive & ~F.col("_dup")
        by_uid = (Window.partitionBy(url_col).orderBy("uid")
                  .rowsBetween(Window.unboundedPreceding, Window.currentRow))
        texts_so_far = F.sum(first_of_text.cast("int")).over(by_uid)
        reason = reason.when(first_of_text & (texts_so_far > max_texts_per_url),
                             F.lit("too_many_texts_per_url"))
    return df.withColumn(reason_col, F.coalesce(F.col(reason_col), reason)).drop("_dup")
