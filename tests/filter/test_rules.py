"""Filter rules, language ID and URL canonicalisation on Arrow batches (no Spark)."""

import gzip
import json

import pyarrow as pa
import pytest

from wit_builder.config import load_config
from wit_builder.filter import dedup, langid
from wit_builder.filter import rules as filters
from wit_builder.errors import UserError

REASONS = {"language", "text_too_long", "filename_text", "boilerplate_text", "too_few_words",
           "too_few_chars", "too_few_letters", "url_rule", "blocked_domain", "tracker",
           "eval_contamination"}


def rules(**overrides) -> filters.Rules:
    cfg = load_config(overrides=[f"filter.{k}={v}" for k, v in overrides.items()])
    return filters.Rules.from_config(cfg.filter)


def annotate(rows, r=None):
    batch = pa.RecordBatch.from_pylist(
        [{"uid": f"{i:016x}", "url": url, "text": text} for i, (url, text) in enumerate(rows)],
        schema=pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string())]))
    return filters.annotate_batch(batch, r or rules()).to_pylist()


@pytest.fixture(scope="module")
def real_rows(shared_data):
    with open(shared_data / "candidates" / "alt_text_pairs.jsonl") as f:
        return [json.loads(line) for line in f]


def test_real_alt_texts_one_reason_each(real_rows):
    out = annotate([(r["url"], r["text"]) for r in real_rows])
    assert len(out) == len(real_rows)
    assert {o["drop_reason"] for o in out} - {None} <= REASONS
    by_text = {r["text"]: o for r, o in zip(real_rows, out)}
    german = by_text["Das wilde Leben von Uschi Obermaier"]
    assert (german["lang"], german["drop_reason"]) == ("de", "language")
    english = by_text["Long Island Montauk Surfers Hamptons BeFifty"]
    assert english["lang"] == "en" and english["drop_reason"] is None
    # the German pages are the largest group: most of their rows go for language
    german_rows = [o for r, o in zip(real_rows, out) if r["lang_hint"] == "de"]
    assert sum(o["drop_reason"] == "language" for o in german_rows) > 0.8 * len(german_rows)
    assert all(o["lang"] is None or not o["lang"].startswith("__label__") for o in out)


def test_real_file_name_alt_texts_are_dropped(real_rows):
    out = annotate([(r["url"], r["text"]) for r in real_rows], rules(languages=""))
    reasons = {r["text"]: o["drop_reason"] for r, o in zip(real_rows, out)}
    for name in ["IMG_8299.jpeg", "IMG_0009_a", "10_dollar02", "https://twitter.com/LaLigaEN"]:
        assert reasons[name] == "filename_text", name


@pytest.mark.parametrize("text,reason", [
    ("The old man is walking his dog in the park", None),
    ("Der alte Mann geht mit seinem Hund im Park spazieren", "language"),
    ("word " * 300, "text_too_long"),
    ("DSC00123", "filename_text"),
    ("holiday_beach_2019_final", "filename_text"),
    ("Site Logo", "boilerplate_text"),
    ("click to enlarge", "boilerplate_text"),
    ("Panorama", "too_few_words"),
    ("a b", "too_few_chars"),
    ("12 345 678 / 90 -- 11", "too_few_letters"),
])
def test_caption_rules(text, reason):
    [out] = annotate([("https://e.org/a.jpg", text)], rules(languages="", min_words=2)
                     if reason not in (None, "language") else None)
    assert out["drop_reason"] == reason


@pytest.mark.parametrize("url,reason", [
    ("https://img.example.org/photos/dog.jpg", None),
    ("data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==", "url_rule"),
    ("/relative/dog.jpg", "url_rule"),
    ("", "url_rule"),
    ("https://example.org/icons/dog.SVG?v=2", "url_rule"),
    ("https://cdn.ads.blocked.example/dog.jpg", "blocked_domain"),
    ("https://www.facebook.com/tr?id=1&ev=PageView&noscript=1", "tracker"),
    ("https://c.bigmir.net/?v94567&s94567&t2", "tracker"),
    ("https://example.org/res/img/pixel.png", "tracker"),
])
def test_url_rules(url, reason):
    r = rules(languages="", blocked_domains="blocked.example")
    [out] = annotate([(url, "The old man is walking his dog in the park")], r)
    assert out["drop_reason"] == reason


def test_first_rule_wins():
    # German, a file name and a data: URL at once: language comes first
    [out] = annotate([("data:image/png;base64,xx", "Der alte Mann geht mit seinem Hund spazieren")])
    assert out["drop_reason"] == "language"


def test_megabyte_text_is_dropped_not_fatal():
    [out] = annotate([("https://e.org/a.jpg", "The old man walks. " * 55_000)])
    assert out["drop_reason"] == "text_too_long" and out["lang"] == "en"


@pytest.mark.parametrize("url,canonical", [
    ("HTTP://Example.COM:80/a/./b/../c?b=1#frag", "http://example.com/a/c?b=1"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("https://example.com/%7euser/%2f%e2%82%ac", "https://example.com/~user/%2F%E2%82%AC"),
    ("https://example.com/a b/ä.jpg", "https://example.com/a%20b/%C3%A4.jpg"),
    ("https://example.com/x.jpg?utm_source=t&w=300&fbclid=1", "https://example.com/x.jpg?w=300"),
    ("https://bücher.de./x.jpg", "https://xn--bcher-kva.de/x.jpg"),
    ("data:image/png;base64,xx", "data:image/png;base64,xx"),
    ("/relative.png", "/relative.png"),
    ("http://a.com:bad/x", "http://a.com:bad/x"),
])
def test_canonical_url(url, canonical):
    assert dedup.canonical_url(url) == canonical


def test_normalize_text():
    texts = pa.array(["  A  Brown\tDOG ", "ﬁne Ｔｅｘｔ", None])
    assert dedup.normalize_text(texts).to_pylist() == ["a brown dog", "fine text", None]


def test_langid_model_and_errors(tmp_path):
    path = langid.default_model_path()
    assert path.endswith("lid.176.ftz")
    lang, score = langid.predict(pa.array(["Bonjour tout le monde,\nje suis ici", "", None]), path)
    assert lang.to_pylist() == ["fr", None, None]
    assert score.type == pa.float32() and score[0].as_py() > 0.5
    with pytest.raises(UserError, match="not found"):
        langid.resolve_model_path(str(tmp_path / "missing.bin"))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load"):
        langid.load_model(str(bad))


def test_eval_manifests(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nhttps://E.org/x.jpg#f\tA Dog  on the beach\n\n")
    (tmp_path / "b.jsonl").write_text('{"url": "https://e.org/y.jpg", "captions": ["Two cats"]}\n')
    (tmp_path / "c.json").write_text('["https://e.org/z.jpg", "Red car"]')
    urls, texts = filters.load_eval_manifests([str(tmp_path / n) for n in ["a.txt", "b.jsonl", "c.json"]])
    assert urls == ["https://e.org/x.jpg", "https://e.org/y.jpg", "https://e.org/z.jpg"]
    assert texts == ["a dog on the beach", "red car", "two cats"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        filters.load_eval_manifests([str(tmp_path / "bad.json")])
    with pytest.raises(UserError, match="not found"):
        filters.load_eval_manifests([str(tmp_path / "missing.txt")])
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"a caption\n" * 100)[:20])
    with pytest.raises(UserError, match="not a valid gzip"):
        filters.load_eval_manifests([str(tmp_path / "cut.txt.gz")])
    # COCO-style: captions and image URLs are collected, file names and ids are not
    (tmp_path / "coco.json.gz").write_bytes(gzip.compress(json.dumps({
        "images": [{"id": 7, "file_name": "1.jpg", "coco_url": "http://images.cocodataset.org/val/1.jpg"}],
        "annotations": [{"image_id": 7, "caption": "A man riding a wave."}]}).encode()))
    assert filters.load_eval_manifests([str(tmp_path / "coco.json.gz")]) == (
        ["http://images.cocodataset.org/val/1.jpg"], ["a man riding a wave."])


def test_blocked_domains_file(tmp_path):
    (tmp_path / "blocked.txt").write_text("# ads\n*.Tracker.example\nbad.example\n")
    r = rules(blocked_domains_file=str(tmp_path / "blocked.txt"), languages="")
    out = annotate([("https://a.b.tracker.example/x.jpg", "The old man is walking his dog"),
                    ("https://notbad.example/x.jpg", "The old man is walking his dog"),
                    ("https://bad.example/x.jpg", "The old man is walking his dog")], r)
    assert [o["drop_reason"] for o in out] == ["blocked_domain", None, "blocked_domain"]


def test_local_dedup_sorts_nulls_first_without_a_pyarrow_warning():
    """pyarrow 25 deprecated SortOptions' table-wide null_placement: every filter run printed a
    FutureWarning. Null URLs still sort first and form one group, as in Spark's window."""
    import warnings

    table = pa.Table.from_pylist([
        {"uid": "1", "url_canonical": None, "text_norm": "a", "drop_reason": None},
        {"uid": "2", "url_canonical": None, "text_norm": "a", "drop_reason": None},
        {"uid": "3", "url_canonical": None, "text_norm": "b", "drop_reason": None},
        {"uid": "4", "url_canonical": "u", "text_norm": "c", "drop_reason": None}],
        schema=pa.schema([(c, pa.string()) for c in ("uid", "url_canonical", "text_norm", "drop_reason")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reasons = dedup.dedup_reasons(table, 1).column("drop_reason").to_pylist()
    assert reasons == [None, "duplicate", "too_many_texts_per_url", None]
