"""The filter stage in Spark on the real multilingual alt texts, shaped as match output."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder import pipeline, stages
from wit_builder.cli import main
from wit_builder.config import load_config
from wit_builder.filter import stage as filters
from wit_builder.filter.rules import Rules

GERMAN = "Das wilde Leben von Uschi Obermaier"
ENGLISH = "Long Island Montauk Surfers Hamptons BeFifty"
FILENAME = "IMG_8299.jpeg"
IANA_LOGO = ("http://www.iana.org/_img/2013.1/iana-logo-header.svg", "Homepage")  # on 14 pages


def uid(url: str, text: str) -> str:
    return hashlib.blake2b(f"{url}\x00{text}".encode(), digest_size=8).hexdigest()


def match_rows(shared_data) -> list[dict]:
    """alt_text_pairs.jsonl as the match stage would hand it over (schema of the brief)."""
    rows = []
    with open(shared_data / "candidates" / "alt_text_pairs.jsonl") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            rows.append({"uid": uid(r["url"], r["text"]), "url": r["url"], "text": r["text"],
                         "page_url": r["page_url"], "source": r["source_file"], "kind": "alt",
                         "entry_ids": [i % 7, 100 + i % 3]})
    return rows


def write_match(rows: list[dict], folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                        ("page_url", pa.string()), ("source", pa.string()), ("kind", pa.string()),
                        ("entry_ids", pa.list_(pa.int32()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")
    return str(folder)


@pytest.fixture(scope="module")
def real_match(shared_data, tmp_path_factory):
    rows = match_rows(shared_data)
    return rows, write_match(rows, tmp_path_factory.mktemp("real") / "match")


def run_filter(spark, inputs, out, overrides=()):
    cfg = load_config(overrides=list(overrides))
    run = pipeline.execute("filter", spark, cfg, inputs, str(out), log=lambda _m: None)
    kept = spark.read.parquet(f"{run.path}/*.parquet").toPandas()
    return run.manifest, kept


def test_real_alt_texts_default_rules_via_cli(spark, real_match, tmp_path):
    rows, match_dir = real_match
    assert main(["filter", "--input", match_dir, "--out", str(tmp_path)]) == 0
    manifest = stages.require_complete(str(tmp_path / "filter"))
    kept = spark.read.parquet(str(tmp_path / "filter" / "*.parquet")).toPandas()
    assert manifest["rows_in"] == len(rows) == 3073
    assert manifest["rows_out"] + sum(manifest["drops"].values()) == manifest["rows_in"]
    assert manifest["rows_out"] == len(kept) > 100
    # most of the pool is not English: language is the biggest reason
    assert max(manifest["drops"], key=manifest["drops"].get) == "language"
    assert {"url_rule", "too_few_words", "boilerplate_text"} <= set(manifest["drops"])
    texts = set(kept["text"])
    assert GERMAN not in texts and FILENAME not in texts
    assert ENGLISH in texts
    english = kept[kept["text"] == ENGLISH].iloc[0]
    assert english["lang"] == "en" and english["lang_score"] >= 0.5
    assert list(english["entry_ids"])  # the match columns travel through
    assert set(kept["lang"]) == {"en"}
    assert kept["url_canonical"].str.match(r"^https?://").all()
    assert kept["uid"].is_unique
    assert not (set(kept.columns) & {"drop_reason", "text_norm"})


def test_duplicates_from_different_pages_collapse(spark, real_match, tmp_path):
    rows, match_dir = real_match
    # relax the rules that would drop the iana logo anyway (an .svg with a one-word alt)
    manifest, kept = run_filter(spark, [match_dir], tmp_path, [
        "filter.languages=", "filter.blocked_extensions=", "filter.min_words=1"])
    logo = [r for r in rows if (r["url"], r["text"]) == IANA_LOGO]
    assert len({r["page_url"] for r in logo}) == 14
    survivors = kept[(kept["url"] == IANA_LOGO[0]) & (kept["text"] == IANA_LOGO[1])]
    assert len(survivors) == 1
    assert survivors.iloc[0]["page_url"] == min(r["page_url"] for r in logo)  # deterministic
    assert manifest["drops"]["duplicate"] >= 13
    assert manifest["rows_out"] + sum(manifest["drops"].values()) == len(rows)
    # no two kept rows share a canonical URL and a normalised text
    key = kept["url_canonical"] + "\x00" + kept["text"].str.lower().str.split().str.join(" ")
    assert key.is_unique


def test_crafted_rows_dedup_cap_decontamination_huge_text(spark, tmp_path):
    def row(url, text):
        return {"uid": uid(url, text), "url": url, "text": text, "page_url": None,
                "source": "t", "kind": "alt", "entry_ids": [1]}

    base = "https://img.example.com/a/photo.jpg"
    same_image = ["HTTPS://IMG.EXAMPLE.COM:443/a/./photo.jpg#top", base + "?utm_source=x", base]
    rows = [row(u, "A brown dog runs on the beach") for u in same_image]
    rows.append(row(base, "a brown  DOG runs on the beach"))  # same normalised text
    rows += [row(base, text) for text in [
        "A small dog sleeping on a red sofa", "Two children playing football in a park",
        "A woman is reading a book in the library", "The old man is walking his dog in the park"]]
    rows.append(row(base, "Ein brauner Hund läuft am Strand"))  # dropped before dedup
    rows.append(row("https://other.example.com/b.jpg", "A brown dog runs on the beach"))
    eval_rows = [row(f"https://e.org/{n}.jpg", f"A dog playing fetch number {n}")
                 for n in ["one", "two", "three"]]
    huge = row("https://e.org/huge.jpg", "word " * 200_000)  # 1 MB
    eval_file = tmp_path / "coco_val.json"
    eval_file.write_text(json.dumps({
        "images": [{"id": 1, "coco_url": "HTTPS://E.ORG/one.jpg#x"}],
        "annotations": [{"image_id": 2, "caption": "a dog playing FETCH number two "}]}))
    manifest, kept = run_filter(
        spark, [write_match(rows + eval_rows + [huge], tmp_path / "m")], tmp_path / "o",
        ["filter.max_texts_per_url=3", f"filter.eval_manifests={eval_file}"])
    assert manifest["drops"] == {"duplicate": 3, "too_many_texts_per_url": 2, "language": 1,
                                 "eval_contamination": 2, "text_too_long": 1}
    assert manifest["eval_manifest_urls"] == 1 and manifest["eval_manifest_texts"] == 1
    assert set(kept["url_canonical"]) == {base, "https://other.example.com/b.jpg",
                                          "https://e.org/three.jpg"}
    # the duplicate kept is the smallest uid; the texts kept under the cap are the ones whose
    # first row has the smallest uids
    dog = min(r["uid"] for r in rows[:4])
    under_cap = sorted([dog] + [r["uid"] for r in rows[4:8]])[:3]
    assert sorted(kept[kept["url_canonical"] == base]["uid"]) == under_cap


def test_bad_inputs_give_one_line_errors(real_match, tmp_path, capsys):
    _rows, match_dir = real_match
    empty = tmp_path / "empty"
    empty.mkdir()
    half = tmp_path / "half"  # a stage folder left half-written: manifest, no _SUCCESS
    half.mkdir()
    (half / "manifest.json").write_text("{}")
    bad_model = tmp_path / "lid.bin"
    bad_model.write_bytes(b"not a model")
    cases = [
        (["--input", str(empty)], "no candidate files"),
        (["--input", str(tmp_path / "missing")], "input not found"),
        (["--input", str(half)], "_SUCCESS"),
        (["--input", match_dir, "--eval-manifests", f"{tmp_path}/nope.txt"], "nope.txt"),
        (["--input", match_dir, "--lid-model", str(tmp_path / "nope.bin")], "nope.bin"),
        (["--input", match_dir, "--lid-model", str(bad_model)], "cannot load language-ID model"),
        (["--input", match_dir, "--set", "filter.tracker_patterns=(unclosed"], "bad regular"),
        (["--input", match_dir, "--set", "filter.max_texts_per_url=-1"], "below the minimum"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["filter", *args, "--out", str(tmp_path / "bad")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "bad" / "filter").exists()


def test_dedup_is_one_shuffle(spark, real_match):
    from wit_builder import runner

    _rows, match_dir = real_match
    cfg = load_config()
    rules = Rules.from_config(cfg.filter)
    rows = runner.Rows(frame=spark.read.parquet(f"{match_dir}/*.parquet"))
    frame = filters.marked(rows, rules, cfg.filter.max_texts_per_url).frame
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange ") == 1, plan  # the shuffle by URL; the dedup sorts in Arrow
