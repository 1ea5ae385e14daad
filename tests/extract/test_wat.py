"""The fastwarc + orjson WAT reader reads what the warcio + json reader reads, damaged files too."""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path

import pytest

from wit_builder.extract import wat
from wit_builder.extract.records import CORRUPT, Page, Skip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crawl_helpers import write_wat  # noqa: E402


def _items(data: bytes, read) -> list:
    return [(it.page_url, it.base_href, [tuple(i) for i in it.images], it.textless) if isinstance(it, Page)
            else it for it in read(io.BytesIO(data), 1 << 20)]


def _agree(data: bytes) -> None:
    fast, ref = _items(data, wat.read), _items(data, wat.read_warcio)
    if fast == ref:
        return
    # The one documented difference, at the damage: warcio reads a record header cut short (or
    # a file of junk) as a `not_metadata` record, as nothing, or as a `not_metadata` record
    # before its corrupt_record, and a damaged gzip member as a record of bad JSON and then a
    # corrupt_record (two); the fast reader counts one corrupt_record there. Pages (the rows)
    # never differ, and nothing follows the damage on either side. (The test WATs get new
    # record ids and dates each run, so the damage falls on different bytes each time.)
    assert fast and fast[-1] == CORRUPT, fast[-3:]
    head = fast[:-1]
    ref_rest = [item for item in ref[len(head):] if item != Skip("not_metadata")]
    assert ref[:len(head)] == head and ref_rest in ([], [CORRUPT], [CORRUPT, CORRUPT]), (len(fast), len(ref))


@pytest.fixture(scope="module")
def wats(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wat")
    return [write_wat(shared_data / "crawl/warc" / name, tmp / (name + ".wat.gz")).read_bytes()
            for name in ("pywb_iana.warc.gz", "warcat_at.warc.gz", "cc_whirlwind.warc.gz")]


def test_intact_files_read_the_same(wats, shared_data):
    for data in wats + [(shared_data / "crawl/commoncrawl/whirlwind.warc.wat.gz").read_bytes()]:
        assert _items(data, wat.read) == _items(data, wat.read_warcio)
        plain = gzip.decompress(data)
        assert _items(plain, wat.read) == _items(plain, wat.read_warcio)


def test_damaged_files_read_the_same(wats):
    rng = random.Random(12)
    for data in wats:
        plain = gzip.decompress(data)
        cases = [data + b"garbage\n", data[:-3], b"", plain[:-5]]
        cases += [data[:rng.randrange(len(data))] for _ in range(25)]
        cases += [plain[:rng.randrange(len(plain))] for _ in range(10)]
        for _ in range(10):
            damaged, at = bytearray(data), rng.randrange(len(data) - 64)
            damaged[at:at + 64] = bytes(b ^ 0xFF for b in damaged[at:at + 64])
            cases.append(bytes(damaged))
        for case in cases:
            _agree(case)


def test_json_that_orjson_rejects_reads_like_json(tmp_path):
    """Lone surrogates, NaN, huge numbers: parsed again with json, scrubbed like before."""
    from warcio.warcwriter import WARCWriter

    link = {"path": "IMG@/src", "url": "http://a.com/x.jpg", "alt": "\ud800 dog", "title": "cat"}
    envelope = {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response",
                                                      "WARC-Target-URI": "http://a.com/"},
                             "Payload-Metadata": {"HTTP-Response-Metadata": {
                                 "Response-Message": {"Status": 200, "n": 10 ** 30},
                                 "HTML-Metadata": {"Links": [link]}}}}}
    payloads = [json.dumps(envelope).encode(), json.dumps({"x": float("nan"), **envelope}).encode(),
                b"{not json", b"[1]"]
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for data in payloads:
        writer.write_record(writer.create_warc_record("http://a.com/", "metadata",
                                                      payload=io.BytesIO(data),
                                                      warc_content_type="application/json"))
    items = _items(out.getvalue(), wat.read)
    assert items == _items(out.getvalue(), wat.read_warcio)
    assert items[0][2] == [("http://a.com/x.jpg", "\ufffd" * 3 + " dog", "cat")]
    assert items[2:] == [CORRUPT, CORRUPT]


def _reference_page(data: bytes):
    try:
        return wat.page_of(json.loads(data)["Envelope"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return CORRUPT


def _envelope(response=None, header=None, **envelope) -> dict:
    header = {"WARC-Type": "response", "WARC-Target-URI": "http://a.org/p"} if header is None else header
    return {"Envelope": {"WARC-Header-Metadata": header, **envelope,
                         "Payload-Metadata": {"HTTP-Response-Metadata": response}}}


def test_typed_records_read_like_json():
    """msgspec's typed decode (most records) gives what json + page_of give; a record it cannot
    type, or that is not valid UTF-8, takes the general path, and no record stops the file."""
    img = {"path": "IMG@/src", "url": "i.jpg", "alt": "cat", "title": "t"}
    html = {"Head": {"Base": "/b/"}, "Links": [{"path": "A@/href", "url": "/x", "text": "x"}, img,
                                                {"path": "IMG@/src", "url": "j.jpg"},
                                                {"path": "IMG@/src", "url": "k.jpg", "alt": ""}]}
    typed = [  # msgspec decodes these itself
        _envelope({"Response-Message": {"Status": "200"}, "HTML-Metadata": html}),
        _envelope({"Response-Message": {"Status": 200}, "HTML-Metadata": html}),
        _envelope({"Response-Message": {"Status": None}, "HTML-Metadata": html}),  # "None": not_ok
        _envelope({"Response-Message": {}, "HTML-Metadata": html}),
        _envelope({"Response-Message": None, "HTML-Metadata": {"Links": None, "Head": None}}),
        _envelope({"HTML-Metadata": {}}),
        _envelope({"Response-Message": {"Status": "404"}, "HTML-Metadata": html}),
        _envelope({}), _envelope(None), _envelope({"HTML-Metadata": None}),
        _envelope({"HTML-Metadata": html}, header={"WARC-Type": "request"}),
        _envelope({"HTML-Metadata": html}, header={}),
        {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response"}}},
        {"Envelope": {"WARC-Header-Metadata": None, "Payload-Metadata": None}},
    ]
    general = [  # types page_of reads another way, or fails on
        _envelope({"HTML-Metadata": {"Links": [{"path": 5, "url": "x"}, img]}}),
        _envelope({"HTML-Metadata": {"Links": [{"path": "IMG@/src", "url": 5}]}}),
        _envelope({"HTML-Metadata": {"Links": ["IMG@/src"]}}),
        _envelope({"HTML-Metadata": {"Links": {}}}), _envelope({"HTML-Metadata": {"Links": "ab"}}),
        _envelope({"HTML-Metadata": []}), _envelope({"HTML-Metadata": "x"}), _envelope("x"),
        _envelope({"Response-Message": "", "HTML-Metadata": html}),
        _envelope({"Response-Message": [1], "HTML-Metadata": html}),
        _envelope({"HTML-Metadata": {"Head": {"Base": 3}, "Links": [img]}}),
        _envelope({"HTML-Metadata": html}, header={"WARC-Type": 7}),
        _envelope({"HTML-Metadata": html}, header=[1]),
        {"Envelope": {"Payload-Metadata": []}}, {"Envelope": 3}, {"x": 1}, [1],
    ]
    raw_general = [
        json.dumps(typed[0]).replace('"x"', '"\xff"').encode("latin-1"),  # bad UTF-8, skipped field
        json.dumps(typed[0]).encode()[:-1] + b', "n": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        json.dumps(typed[0]).encode()[:-1] + b', "n": NaN}',
        json.dumps(typed[0]).encode()[:-1] + b', "n": "\\ud800"}',
        b'{"Envelope": {"a": 1, "Envelope": 2}', b"", b"{}",
    ]
    for record in typed:
        data = json.dumps(record).encode()
        wat._RECORD.decode(data)  # the typed path reads it
        assert wat._page(data) == _reference_page(data), record
    for data in [json.dumps(r).encode() for r in general] + raw_general:
        with pytest.raises((ValueError, RecursionError)):  # msgspec's errors are ValueErrors
            wat._RECORD.decode(data) if wat._utf8(data) else data.decode()
        assert wat._page(data) == _reference_page(data), data[:200]
    page = wat._page(json.dumps(typed[0]).encode())
    assert page == Page("http://a.org/p", "/b/", [("i.jpg", "cat", "t")], textless=2)
    assert [wat._page(json.dumps(r).encode()) for r in typed[1:4]] == [page, Skip("not_ok"), page]
    assert wat._page(json.dumps(general[1]).encode()) == CORRUPT
    assert wat._page(raw_general[0]) == CORRUPT and wat._page(raw_general[1]) == CORRUPT


def test_a_bad_record_is_one_drop_and_the_file_goes_on(tmp_path):
    """A record nested deeper than json's recursion limit used to end the file (the records
    after it were lost), and a link whose url is a number stopped the task in Arrow."""
    from warcio.warcwriter import WARCWriter

    from wit_builder.config import load_config
    from wit_builder.extract.plan import InputFile
    from wit_builder.extract.stage import Options, extract_file

    good = _envelope({"HTML-Metadata": {"Links": [{"path": "IMG@/src", "url": "/x.jpg", "alt": "a dog"}]}})
    bad_url = _envelope({"HTML-Metadata": {"Links": [{"path": "IMG@/src", "url": 5, "alt": "a cat"}]}})
    deep = b'{"Envelope": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    path = tmp_path / "bad.wat.gz"
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for data in (deep, json.dumps(good).encode(), json.dumps(bad_url).encode(), json.dumps(good).encode()):
            writer.write_record(writer.create_warc_record("http://a.org/", "metadata", payload=io.BytesIO(data),
                                                          warc_content_type="application/json"))
    page = Page("http://a.org/p", None, [("/x.jpg", "a dog", None)])
    assert list(wat.read(open(path, "rb"), 1 << 20)) == [CORRUPT, page, CORRUPT, page]
    tally, rows = {}, []
    for batch in extract_file(InputFile(str(path), "wat"), Options.from_config(load_config(None))):
        if batch.column("tally").null_count == batch.num_rows:
            rows += batch.column("url").to_pylist()
        else:
            tally.update(zip(batch.column("tally").to_pylist(), batch.column("n").to_pylist()))
    assert rows == ["http://a.org/x.jpg"] * 2
    assert tally == {"records_read": 4, "rows_out": 2, "drop:corrupt_record": 2}
