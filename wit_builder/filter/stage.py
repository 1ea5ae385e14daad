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
distinct URL) loop in Python. Dedup is one shuffle over the canonical URL (runner.by_key), then
Arrow sorts over each partition's rows.
"""

from __future__ import annotations

from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import inputs as stage_inputs
from wit_builder import runner, stages
from wit_builder.filter import dedup, langid
from wit_builder.filter.rules import REQUIRED_COLUMNS, Rules, annotate_batch

HINT = "give OUT/match, the match stage's output"


def check(cfg, inputs: list[str]) -> stages.Plan:
    """The inputs, and the files besides the data that the output depends on (their changes
    redo the stage)."""
    stage_inputs.check(inputs, HINT)
    fc = cfg.filter
    return stages.Plan(inputs, extra=[p for p in [fc.lid_model, fc.blocked_domains_file,
                                                  *fc.eval_manifests] if p])


ADDED = [("lang", pa.string()), ("lang_score", pa.float32()), ("url_canonical", pa.string()),
         ("text_norm", pa.string()), (runner.REASON, pa.string())]
# Dropped rows only need counting: their other columns are blanked before the dedup's shuffle.
_KEPT_WHOLE = {"uid", "url_canonical", runner.REASON}


def marked(rows: runner.Rows, rules: Rules, max_texts_per_url: int) -> runner.Rows:
    """The rows plus lang, lang_score, url_canonical and drop_reason (null: kept): rules 1-4
    per batch, then the dedup over whole canonical URLs (on Spark: its one shuffle)."""
    annotated = runner.map_batches(rows, _annotated, runner.with_columns(rows.schema, ADDED),
                                   shared=rules)
    return runner.by_key(annotated, "url_canonical", partial(_deduped, max_texts_per_url),
                         pa.schema([f for f in annotated.schema if f.name != "text_norm"]))


def _annotated(batch: pa.RecordBatch, rules: Rules) -> pa.RecordBatch:
    batch = annotate_batch(batch, rules)
    alive = pc.is_null(batch.column(runner.REASON))
    return pa.RecordBatch.from_arrays(
        [c if name in _KEPT_WHOLE else pc.if_else(alive, c, pa.scalar(None, c.type))
         for name, c in zip(batch.schema.names, batch.columns)], schema=batch.schema)


def _deduped(max_texts_per_url: int, table: pa.Table) -> pa.Table:
    return dedup.dedup_reasons(table, max_texts_per_url).drop_columns(["text_norm"])


def run(ctx: stages.Context, plan: stages.Plan) -> stages.StageResult:
    cfg = ctx.cfg
    rules = Rules.from_config(cfg.filter)
    langid.load_model(rules.model_path)  # a bad model file fails here, not inside a task
    model_name = rules.model_path.rsplit("/", 1)[-1]
    rows = runner.read(ctx, plan.inputs, HINT, REQUIRED_COLUMNS)
    if not rows.on_driver:  # executors may not share our disk
        rules.model_path = langid.ship(ctx.spark, rules.model_path)
    result, _ = runner.write_with_drops(ctx, marked(rows, rules, cfg.filter.max_texts_per_url))
    result.extra = {"lid_model": model_name,
                    "eval_manifest_urls": len(rules.eval_urls),
                    "eval_manifest_texts": len(rules.eval_texts),
                    "blocked_domains": len(rules.blocked_domains)}
    return result
