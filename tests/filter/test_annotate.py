"""The filter's batch work (lid.176 once per distinct text, canonical URLs by Arrow kernels,
rules on what earlier rules kept) gives what the per-row code of before gave
(tests/filter_reference.py), on the shared real alt texts and candidate URLs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder.config import load_config
from wit_builder.filter import dedup, langid
from wit_builder.filter import rules as filters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import filter_reference  # noqa: E402

ODD_URLS = [
    None, "", "http://a.com", "http://a.com?x=1", "HTTP://A.com/x", "http://a.com./x", "http://a.com:80/x",
    "https://a.com:443/x", "http://a.com:8080/x", "http://u:p@a.com/x", "http://[::1]/x", "http://a.com/a/../b",
    "http://a.com/./b", "http://a.com/.well-known/x", "http://a.com/%7e/%2f/%2F/%41/%zz/%", "http://a.com/x?",
    "http://a.com/x?#f", "http://a.com/x#f", "http://a.com/x?a=1&&b=2", "http://a.com/x?&a=1", "http://a.com/x?a=1&",
    "http://a.com/x?utm_source=1", "http://a.com/x?UTM_Medium=1&w=2", "http://a.com/x?w=1&fbclid", "http://a.com/x?_ga=1",
    "http://a.com/x?utm_=1", "http://a.com/x?utm_1=2", "http://a.com/x?a=utm_source", "http://a.com/x?q=a?utm_source=1",
    "http://a.com/a b.jpg", "http://a.com/ä.jpg", "http://bücher.de/x", "http://a.com/x[1].jpg", "http://a.com/x|y",
    "http://a.com//x//y", "http://a.com/x;p=1?q=1", "http://a_b.com/x", "http://a..com/x", "http:///x",
    "ftp://a.com/x", "data:image/png;base64,xx", "/relative.png", " http://a.com/x ", "http://a.com/x\t",
    "http://a.com/%E2%82%AC", "http://a.com/%e2%82%ac", "http://a.com/x?q=%7E", "http://a.com/x?q=%20",
]
ODD_TEXTS = [None, "", " ", "\n", "a\nb", "Bonjour tout le monde,\nje suis ici", "é" * 1500 + " English words here",
             "The old man walks. " * 200, "IMG_1234.jpg", "Site-Logo!", "logo", "x", "ab", "12345 67890",
             "A photo of a dog on the beach", "Ein Hund am Strand", "  spaced   out  text  "]


@pytest.fixture(scope="module")
def real(shared_data):
    pairs = [json.loads(line) for line in open(shared_data / "candidates/alt_text_pairs.jsonl")]
    listing = pq.read_table(shared_data / "candidates/img2dataset_10k.parquet")
    urls = [p["url"] for p in pairs] + [p["page_url"] for p in pairs] + listing.column("URL").to_pylist()
    texts = [p["text"] for p in pairs] + listing.column("TEXT").to_pylist()
    return urls + ODD_URLS, texts + ODD_TEXTS


def test_canonical_urls_batch_equals_canonical_url(real):
    urls = pa.array(real[0], pa.string())
    got = dedup.canonical_urls(urls)
    assert got.type == pa.string()
    assert got.to_pylist() == [None if u is None else dedup.canonical_url(u) for u in real[0]]
    assert got.equals(filter_reference.canonical_urls(urls))


def test_langid_batch_equals_per_text_predict(real):
    texts = pa.array(real[1] * 2, pa.string())  # repeats: predicted once, given to each
    path = langid.default_model_path()
    lang, score = langid.predict(texts, path)
    want_lang, want_score = filter_reference.predict(texts, path)
    assert lang.equals(want_lang) and score.equals(want_score)
    assert score.type == pa.float32() and score.null_count == 0


def _rules(**overrides):
    cfg = load_config(overrides=[f"filter.{k}={v}" for k, v in overrides.items()])
    return filters.Rules.from_config(cfg.filter)


@pytest.mark.parametrize("overrides", [
    {},
    {"languages": "[]", "drop_filenames": "false", "drop_boilerplate": "false", "min_words": 0,
     "min_chars": 0, "blocked_extensions": "[]", "tracker_patterns": "[]"},
    {"languages": '["en", "de", "fr", "ja"]', "min_lang_score": 0.6, "max_chars": 40,
     "blocked_domains": '["wikimedia.org", "staticflickr.com", "com"]', "boilerplate": '["photo by"]'},
])
def test_annotate_batch_equals_per_row_reference(real, tmp_path, overrides):
    urls, texts = real
    n = min(len(urls), len(texts))
    rules = _rules(**overrides)
    if overrides.get("max_chars"):  # and decontamination from a manifest of real rows
        rules.eval_urls = sorted({dedup.canonical_url(u) for u in urls[:300:7] if u})
        rules.eval_texts = sorted(set(dedup.normalize_text(pa.array(texts[:300:5])).to_pylist()) - {None})
    rows = [{"uid": f"{i:016x}", "url": urls[i], "text": texts[(i * 7) % len(texts)]} for i in range(n)]
    rows += [{"uid": f"x{i}", "url": u, "text": t} for i, (u, t) in enumerate(zip(ODD_URLS * 2, ODD_TEXTS * 6))]
    batch = pa.RecordBatch.from_pylist(rows, schema=pa.schema(
        [("uid", pa.string()), ("url", pa.string()), ("text", pa.string())]))
    got = filters.annotate_batch(batch, rules)
    want = filter_reference.annotate_batch(batch, rules)
    assert got.schema == want.schema
    for name in got.schema.names:
        assert got.column(name).equals(want.column(name)), name
    reasons = set(got.column("drop_reason").to_pylist())
    assert len(reasons) >= 4 and None in reasons
    if overrides.get("max_chars"):
        assert {"blocked_domain", "eval_contamination", "language"} <= reasons
