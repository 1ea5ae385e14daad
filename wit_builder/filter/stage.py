"""The filter stage: language, caption, domain and URL rules, decontamination, then dedup.

Reads OUT/match rows (uid, url, text, page_url, source, kind, entry_ids), adds `lang`,
`lang_score` and `url_canonical`, writes the kept rows to OUT/filter and counts every other row
under exactly one reason: the first rule that fires, in this order (cheap and specific first
within each group; the groups in the order CLIP's pipeline applies them):

1. `language`: lid.176's top language not in `languages`, or its probability < `min_lang_score`
   (rows with an empty text get no language and fall to the caption rules);
2. caption rules: `text_too_long` (> `max_chars`), `filename_text` (`IMG_1234.jpg`, `DSC0001`,
   a URL, a `snake_case_slug`, a hex hash), `boilerplate_text` (`logo`, `spacer`, `site logo`,
   `click to enlarge`, ... plus `boilerplate`), `too_few_words` (< `min_words` runs of
   non-space), `too_few_chars` (< `min_chars`), `too_few_letters` (letters / non-space
   characters < `min_letter_fraction`);
3. domain and URL rules: `url_rule` (not an absolute http(s) URL, or a path ending in one of
   `blocked_extensions`), `blocked_domain` (the host or a parent domain is in
   `blocked_domains` / `blocked_domains_file`), `tracker` (the URL matches one of
   `tracker_patterns`: counters and pixels such as `/pixel.gif?...`, a query on the site root);
4. `eval_contamination`: canonical URL or normalised caption listed in an `eval_manifests` file;
5. dedup (dedup.py): `duplicate`, `too_many_texts_per_url`.

Rules 1-4 (rules.py) run per Arrow batch in `annotate_batch`, as pyarrow.compute kernels: rules 1-2
(`caption_rules`) once per distinct text of the batch, rules 3-4 (`url_rules`) on the rows those
kept, each rule only on what the rules before it kept (`first_reasons`). Only lid.176 (once per
distinct text) and the canonicalisation of URLs that are not canonical already (once per
distinct URL) loop in Python. Dedup is one shuffle over the canonical URL.
"""

from __future__ import annotations

import pyarrow as pa

from wit_builder import inputs as stage_inputs
from wit_builder import stages
from wit_builder.filter import dedup, langid
from wit_builder.filter.rules import REQUIRED_COLUMNS, Rules, annotate_batch


def extra_inputs(cfg) -> list[str]:
    """Files besides the data that the output depends on (their changes redo the stage)."""
    fc = cfg.filter
    return [p for p in [fc.lid_model, fc.blocked_domains_file, *fc.eval_manifests] if p]


def marked_frame(spark, rules: Rules, inputs: list[str], max_texts_per_url: int):
    """The input rows plus lang, lang_score, url_canonical and drop_reason (null: kept)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    hint = "give OUT/match, the match stage's output"
    df = stage_inputs.read_rows(spark, inputs, hint)
    stage_inputs.require_columns(df, REQUIRED_COLUMNS, inputs, hint)
    schema = StructType(df.schema.fields + [
        StructField("lang", StringType()), StructField("lang_score", FloatType()),
        StructField("url_canonical", StringType()), StructField("text_norm", StringType()),
        StructField("drop_reason", StringType())])
    shared = spark.sparkContext.broadcast(rules)
    annotated = df.mapInArrow(lambda batches: (annotate_batch(b, shared.value) for b in batches),
                              schema)
    # Dropped rows only need counting: blank their payload so the dedup shuffle stays small.
    alive = F.col("drop_reason").isNull()
    keep_whole = {"uid", "url_canonical", "drop_reason"}
    slim = annotated.select([F.col(c) if c in keep_whole else F.when(alive, F.col(c)).alias(c)
                             for c in annotated.columns])
    # The dedup's one shuffle, sized like the input or the cores (not spark.sql.shuffle.
    # partitions' 200: the result is cached, and Spark keeps a cached plan's partitions as is).
    parts = max(df.rdd.getNumPartitions(), spark.sparkContext.defaultParallelism)
    slim = slim.repartition(parts, "url_canonical")
    return dedup.dedup_reasons(slim, max_texts_per_url).drop("text_norm")


def marked_table(rows: pa.Table, rules: Rules, max_texts_per_url: int) -> pa.Table:
    """`marked_frame` for a small Arrow table on the driver: the same marks, no Spark jobs."""
    batches = rows.to_batches() or [pa.RecordBatch.from_pylist([], schema=rows.schema)]
    annotated = pa.Table.from_batches([annotate_batch(b, rules) for b in batches])
    return dedup.dedup_reasons_local(annotated, max_texts_per_url).drop_columns(["text_norm"])


def run(spark, cfg, inputs: list[str], out_dir: str) -> stages.StageResult:
    rules = Rules.from_config(cfg.filter)
    langid.load_model(rules.model_path)  # a bad model file fails here, not inside a task
    model_name = rules.model_path.rsplit("/", 1)[-1]
    hint = "give OUT/match, the match stage's output"
    rows = stage_inputs.read_small(inputs, hint, cfg.spark.driver_rows)
    if rows is not None:  # small: on the driver, without Spark jobs' fixed cost
        stage_inputs.require_columns(rows, REQUIRED_COLUMNS, inputs, hint)
        result = stages.write_with_drops_local(
            marked_table(rows, rules, cfg.filter.max_texts_per_url), out_dir)
    else:
        rules.model_path = langid.ship(spark, rules.model_path)  # executors may not share our disk
        result = stages.write_with_drops(
            marked_frame(spark, rules, inputs, cfg.filter.max_texts_per_url), out_dir)
    result.extra = {"lid_model": model_name,
                    "eval_manifest_urls": len(rules.eval_urls),
                    "eval_manifest_texts": len(rules.eval_texts),
                    "blocked_domains": len(rules.blocked_domains)}
    return result
