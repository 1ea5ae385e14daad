"""The Arrow-column tabular reader gives the same rows, drops and uids as the per-row reader of
before (tests/tabular_reference.py), on the shared real candidate lists written in every format,
and on damaged and odd variants of them."""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder.config import load_config
from wit_builder.extract import files as extract
from wit_builder.extract import tabular
from wit_builder.extract.records import Row, Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tabular_reference  # noqa: E402

PAGE = tabular.Columns("url", "text", "page_url")


def _pairs(shared_data) -> list[dict]:
    return [json.loads(line) for line in open(shared_data / "candidates/alt_text_pairs.jsonl")]


def _expand(items) -> tuple[list[Row], Counter]:
    rows, other = [], Counter()
    for item in items:
        if isinstance(item, Table):
            assert all(isinstance(c, pa.Array) and c.type == pa.string() for c in item)
            rows += [Row(*v) for v in zip(*(c.to_pylist() for c in item))]
        elif isinstance(item, Row):
            rows.append(item)
        else:
            other[item] += 1
    return rows, other


def _same_items(path: Path, fmt: str, columns: tabular.Columns, batch_rows: int = 1000):
    """Both readers' items: the same rows in the same order, the same corrupt/skip counts."""
    def items(reader):
        return _expand(reader(lambda: open(path, "rb"), fmt, columns, batch_rows))
    new = items(lambda *args: tabular.read(*args, max_line=5_000_000))
    old = items(tabular_reference.read)
    assert new == old
    return new


def _extracted(path: Path, fmt: str, columns: tabular.Columns, monkeypatch, reference: bool):
    cfg = load_config(None, [f"extract.url_column={columns.url}", f"extract.text_column={columns.text}",
                             f"extract.page_url_column={columns.page_url}", "spark.arrow_batch_rows=700"])
    with monkeypatch.context() as m:
        if reference:
            m.setattr(tabular, "read", lambda *args: tabular_reference.read(*args[:-1]))
        batches = list(extract.extract_file(extract.InputFile(str(path), fmt), extract.Options.from_config(cfg)))
    table = pa.Table.from_batches(batches, schema=extract.SCHEMA)
    rows = table.filter(pa.compute.is_null(table["tally"])).select(extract.COLUMNS).to_pylist()
    tally = table.filter(pa.compute.is_valid(table["tally"])).select(["tally", "n"]).to_pylist()
    return rows, {t["tally"]: t["n"] for t in tally}


def _same_output(path, fmt, columns, monkeypatch):
    """extract_file's rows (uids included) and tally (drops by reason) agree."""
    new = _extracted(path, fmt, columns, monkeypatch, reference=False)
    assert new == _extracted(path, fmt, columns, monkeypatch, reference=True)
    return new


def test_real_parquet_list(shared_data, monkeypatch):
    path = shared_data / "candidates/img2dataset_10k.parquet"
    rows, other = _same_items(path, "parquet", tabular.Columns("url", "text", ""))
    assert len(rows) == 10_000 and not other
    out, tally = _same_output(path, "parquet", tabular.Columns("url", "text", ""), monkeypatch)
    assert len(out) == tally["rows_out"] > 9000 and tally["drop:relative_url"] == 1
    assert _same_items(path, "parquet", tabular.Columns("image", "caption", ""))[1] == {tabular.MISSING: 1}


def _odd_lines(pairs: list[dict]) -> list[bytes]:
    """What real JSONL files hold besides clean objects, and what orjson reads differently."""
    return [b"", b"   ", b"\x0c", b"not json", b"[1, 2]", b"null", b"7", b'"text"',
            b'{"url": "http://a.org/1.jpg", "TEXT": "Mixed case key"}',
            b'{"URL": "http://a.org/2.jpg", "Url": "http://b.org/", "text": "first match wins"}',
            b'{"url": 5, "text": 7}', b'{"url": "http://a.org/3.jpg", "text": 1.5e300}',
            b'{"url": "http://a.org/4.jpg", "text": 123456789012345678901234567890}',
            b'{"url": "http://a.org/5.jpg", "text": NaN}', b'{"url": null, "text": ["a", {"b": 1}]}',
            b'{"url": "http://a.org/6.jpg", "text": "lone \\ud800 surrogate"}',
            b'{"url": "http://a.org/6.jpg", "text": "\\udfff", "page_url": 3}',
            b'{"url": "http://a.org/7.jpg", "text": "caf\xe9 latin-1"}',
            b'\xef\xbb\xbf{"url": "http://a.org/8.jpg", "text": "BOM"}',
            b'{"url": "http://a.org/9.jpg", "text": "dup", "text": "duplicate key"}',
            b'{"url": "http://a.org/10.jpg", "text": "x"} trailing', b'{"url": "http://a.org/11.jpg"}',
            b'{"url": "http://a.org/12.jpg", "text": "crlf"}\r',
            json.dumps(pairs[0], ensure_ascii=True).encode(), json.dumps(pairs[1]).encode()]


def test_real_jsonl_list_and_odd_lines(shared_data, tmp_path, monkeypatch):
    path = shared_data / "candidates/alt_text_pairs.jsonl"
    rows, other = _same_items(path, "jsonl", PAGE)
    assert len(rows) == 3073 and not other
    _same_output(path, "jsonl", PAGE, monkeypatch)

    pairs = _pairs(shared_data)
    lines = [json.dumps(p, ensure_ascii=False).encode() for p in pairs]
    odd = _odd_lines(pairs)
    mixed = [x for i, line in enumerate(lines) for x in ([line, odd[i % len(odd)]] if i % 7 == 0 else [line])]
    (tmp_path / "odd.jsonl").write_bytes(b"\n".join(mixed) + b"\n")
    rows, other = _same_items(tmp_path / "odd.jsonl", "jsonl", PAGE, batch_rows=97)
    assert other[tabular.CORRUPT] > 10 and "\ufffd" in "".join(r.text or "" for r in rows)
    _, tally = _same_output(tmp_path / "odd.jsonl", "jsonl", PAGE, monkeypatch)
    assert tally["drop:undecodable"] >= 2 and tally["drop:corrupt_record"] > 10
    for columns in (tabular.Columns("URL", "Text", ""), tabular.Columns("url", "text", "PAGE_URL")):
        _same_output(tmp_path / "odd.jsonl", "jsonl", columns, monkeypatch)

    # a gzipped copy cut short: the rows before the cut, then one corrupt record
    data = gzip.compress(b"\n".join(mixed) + b"\n")
    for cut in (len(data) // 3, len(data) - 30):
        (tmp_path / "cut.jsonl.gz").write_bytes(data[:cut])
        rows, other = _same_items(tmp_path / "cut.jsonl.gz", "jsonl", PAGE, batch_rows=97)
        assert rows and other[tabular.CORRUPT] >= 1
        _same_output(tmp_path / "cut.jsonl.gz", "jsonl", PAGE, monkeypatch)


def _write_delimited(path: Path, pairs: list[dict], delimiter: str, extra: list[bytes]) -> None:
    body = []
    for i, p in enumerate(pairs):
        values = [p[k] or "" for k in ("url", "text", "page_url")]
        if delimiter == ",":
            line = ",".join('"' + v.replace('"', '""') + '"' for v in values)
        else:
            line = "\t".join(v.replace("\t", " ").replace("\n", " ") for v in values)
        body.append(line.encode())
        if i % 11 == 0:
            body.append(extra[i % len(extra)])
    header = delimiter.join(["URL", "Text", "page_url"]).encode()
    path.write_bytes(b"\n".join([header] + body) + b"\n")


def test_real_pairs_as_csv_and_tsv(shared_data, tmp_path, monkeypatch):
    pairs = _pairs(shared_data)
    odd_csv = [b'http://a.org/1.jpg,caf\xe9,http://p.org/', b'http://a.org/2.jpg,b,c,EXTRA',
               b'"http://a.org/3.jpg","multi\nline caption",""', b'http://a.org/4.jpg,\xff\xfe,x',
               b',,']
    _write_delimited(tmp_path / "p.csv", pairs, ",", odd_csv)
    odd_tsv = [b'/i.jpg\t"quoted" start\thttp://p.org/', b'x\ty', b'http://a.org/5.jpg\t\xe9t\xe9\tp',
               b'\t\t']
    _write_delimited(tmp_path / "p.tsv", pairs, "\t", odd_tsv)
    (tmp_path / "p.tsv.gz").write_bytes(gzip.compress((tmp_path / "p.tsv").read_bytes()))
    for name, fmt in (("p.csv", "csv"), ("p.tsv", "tsv"), ("p.tsv.gz", "tsv")):
        rows, other = _same_items(tmp_path / name, fmt, PAGE, batch_rows=300)
        assert len(rows) > 3073 and other[tabular.CORRUPT] >= 1
        _, tally = _same_output(tmp_path / name, fmt, PAGE, monkeypatch)
        assert tally["drop:undecodable"] >= 1
    (tmp_path / "cut.tsv.gz").write_bytes((tmp_path / "p.tsv.gz").read_bytes()[:-40])
    rows, other = _same_items(tmp_path / "cut.tsv.gz", "tsv", PAGE)
    assert other[tabular.CORRUPT] >= 1
    _same_output(tmp_path / "cut.tsv.gz", "tsv", PAGE, monkeypatch)


def test_parquet_column_types_and_damage(shared_data, tmp_path, monkeypatch):
    pairs = _pairs(shared_data)
    n = len(pairs)
    texts = [p["text"] for p in pairs]
    binary = [t.encode() if i % 13 else t.encode("latin-1", "replace") + b"\xff" for i, t in enumerate(texts)]
    table = pa.table({
        "url": pa.array([p["url"] for p in pairs], pa.large_string()),
        "text": pa.array(binary, pa.binary()),
        "page_url": pa.array([p["page_url"] for p in pairs]).dictionary_encode(),
        "n": pa.array(range(n), pa.int64()), "f": pa.array([i / 3 for i in range(n)], pa.float64()),
        "utf8_bytes": pa.array([t.encode() for t in texts], pa.binary()),
        "nothing": pa.nulls(n)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    for columns in (PAGE, tabular.Columns("n", "f", "nothing"), tabular.Columns("url", "utf8_bytes", "n")):
        rows, other = _same_items(tmp_path / "t.parquet", "parquet", columns, batch_rows=400)
        assert len(rows) == n and not other
        _same_output(tmp_path / "t.parquet", "parquet", columns, monkeypatch)
    # strings that are not UTF-8 (Parquet readers do not check): one corrupt record, as before
    bad = pa.StringArray.from_buffers(2, pa.py_buffer(np.array([0, 2, 4], np.int32)), pa.py_buffer(b"ok\xe9x"))
    pq.write_table(pa.table({"url": ["http://a.org/1.jpg", "http://a.org/2.jpg"], "text": bad}),
                   tmp_path / "utf8.parquet")
    assert _same_items(tmp_path / "utf8.parquet", "parquet", PAGE) == ([], {tabular.CORRUPT: 1})
    # cut short, or not Parquet at all: one corrupt record
    data = (tmp_path / "t.parquet").read_bytes()
    for name, content in (("cut.parquet", data[: len(data) // 2]), ("bad.parquet", b"PAR1 junk PAR1")):
        (tmp_path / name).write_bytes(content)
        rows, other = _same_items(tmp_path / name, "parquet", PAGE)
        assert other == {tabular.CORRUPT: 1}
        _same_output(tmp_path / name, "parquet", PAGE, monkeypatch)


def test_uids_are_the_per_row_uid(shared_data, monkeypatch):
    """uid_array (Arrow-joined bytes, one blake2b each) is `uid` of each kept row."""
    from wit_builder.urls import uid, uid_array

    rows, _ = _extracted(shared_data / "candidates/alt_text_pairs.jsonl", "jsonl", PAGE, monkeypatch,
                         reference=False)
    assert len(rows) > 2500 and any(not r["text"].isascii() for r in rows)
    assert [r["uid"] for r in rows] == [uid(r["url"], r["text"]) for r in rows]
    assert uid_array(pa.array([], pa.string()), pa.array([], pa.string())).to_pylist() == []


def test_a_line_nested_too_deep_is_one_corrupt_record(tmp_path, monkeypatch):
    """orjson refuses it (depth), json hits its recursion limit: one drop, the lines after it
    are read (before: the task stopped with RecursionError)."""
    deep = b'{"url": "http://a.org/y.jpg", "text": "a cat", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    lines = [json.dumps({"url": f"http://a.org/{i}.jpg", "text": "a dog"}).encode() for i in range(3)]
    (tmp_path / "deep.jsonl").write_bytes(b"\n".join([lines[0], deep, lines[1], deep, lines[2]]) + b"\n")
    rows, tally = _extracted(tmp_path / "deep.jsonl", "jsonl", PAGE, monkeypatch, reference=False)
    assert [r["url"] for r in rows] == [f"http://a.org/{i}.jpg" for i in range(3)]
    assert tally == {"records_read": 5, "rows_out": 3, "drop:corrupt_record": 2}
