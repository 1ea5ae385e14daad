"""Extract against hostile or damaged inputs (issue 23): charsets, bounded records, listings."""

import io
import json
import subprocess
import sys
import zlib

import pytest

from crawl_helpers import write_warc
from wit_builder.extract import html
from wit_builder.extract import files as extract
from wit_builder.extract.tabular import Columns, _bounded_lines, _cut

COLUMNS = Columns("url", "text", "")


def _extract_file(path, fmt, **options):
    """(rows, tally) of one input file through the extract task, without Spark."""
    settings = dict(max_text_chars=1000, max_url_chars=2000, max_page_bytes=5_000_000,
                    include_title=True, columns=COLUMNS, batch_rows=1000,
                    max_record_bytes=5_000_000, networks=())
    opts = extract.Options(**{**settings, **options})
    batches = list(extract.extract_file(extract.InputFile(str(path), fmt), opts))
    rows = [r for b in batches[:-1] for r in b.to_pylist()]
    tally = dict(zip(batches[-1].column("tally").to_pylist(), batches[-1].column("n").to_pylist()))
    return rows, tally


# --- #6: a charset the HTTP header declares ------------------------------------------------------

def test_http_utf8_with_one_accent_and_one_stray_byte_stays_utf8(tmp_path):
    """One `é` and one stray byte elsewhere on a mostly-ASCII page: the "few errors" rule
    counted 1 error against 2 non-ASCII characters and let charset_normalizer guess:
    `a cafĂŠ photo`."""
    body = b'<p>price: 5 \xff</p><img src="x.jpg" alt="a caf\xc3\xa9 photo">'
    path = write_warc(tmp_path / "p.warc.gz", [("http://e.com/page", body)],
                      "text/html; charset=utf-8")
    rows, tally = _extract_file(path, "warc")
    assert [(r["url"], r["text"]) for r in rows] == [("http://e.com/x.jpg", "a café photo")]
    assert html.decode(body, "UTF-8").endswith('alt="a café photo">')
    assert "\ufffd" in html.decode(body, "utf-8")  # the stray byte, where it is


def test_http_utf8_does_not_hide_a_page_in_another_encoding():
    page = '<html lang="ru"><p>\u2116 5</p><img alt="кошка на фото">'
    assert html.decode(page.encode("cp1251"), "utf-8") == page
    latin = '<p>Übersicht für Straße</p><img alt="café">'
    assert html.decode(latin.encode("cp1252"), "utf-8") == latin


def test_shared_pages_read_the_same_under_an_http_utf8_header(shared_data):
    """The 84 shared pages (their texts pinned by tests/extract/test_readers.py) decode as they do
    saved, when a server says `charset=utf-8` for each: the pages in a legacy charset that
    declare UTF-8 keep their legacy reading."""
    pages = sorted((shared_data / "crawl/html").glob("*.html"))
    assert len(pages) == 84
    for page in pages:
        body = page.read_bytes()
        assert html.decode(body, "utf-8") == html.decode(body), page.name


# --- #3: every record and line bounded -----------------------------------------------------------

BIG = 300_000_000  # bytes of one record or line: a few hundred kilobytes gzipped
CAT = {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": "http://e.com/"},
                    "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [
                        {"path": "IMG@/src", "url": "a.jpg", "alt": "a cat"}]}}}}}


def _spaces(n: int):
    while n > 0:
        yield b" " * min(n, 1 << 20)
        n -= 1 << 20


def _gzip(parts) -> bytes:
    """One gzip member of the concatenated parts, made without holding them."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([c.compress(p) for p in parts] + [c.flush()])


def _wat_record(payload_length: int, parts) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
            f"Content-Length: {payload_length}\r\n\r\n").encode()
    return _gzip([head, *parts, b"\r\n\r\n"])


def _wat_with_a_big_record(path, last: bool):
    cat = json.dumps(CAT).encode()
    big = [b'{"Envelope": {"x": "', *_spaces(BIG - 23), b'"}}']
    records = [_wat_record(len(cat), [cat]), _wat_record(BIG, big)]
    path.write_bytes(b"".join(records if last else records + records[:1]))
    return path


def _warc_with_a_big_header(path, where: str):
    """Three responses; the second has a header line of BIG bytes in its WARC or HTTP header."""
    body = b'<img src="a.jpg" alt="a cat">'

    def record(junk: bool):
        http = [b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"]
        warc_junk, http_junk = ([b"X-Junk: ", *_spaces(BIG), b"\r\n"] if junk and where == w
                                else [] for w in ("warc", "http"))
        http += [*http_junk, b"\r\n", body]
        length = sum(map(len, http)) + (BIG + 10 if http_junk else 0)
        head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
                f"WARC-Target-URI: http://e.com/\r\nContent-Type: application/http; msgtype=response"
                f"\r\nContent-Length: {length}\r\n").encode()
        return _gzip([head, *warc_junk, b"\r\n", *http, b"\r\n\r\n"])
    path.write_bytes(record(False) + record(True) + record(False))
    return path


def _jsonl_with_a_big_line(path):
    line = json.dumps({"url": "http://e.com/a.jpg", "text": "a cat"}).encode() + b"\n"
    path.write_bytes(_gzip([line, b'{"url": "http://e.com/b.jpg", "text": "', *_spaces(BIG),
                            b'"}\n', line]))
    return path


def _extract_in_a_process(path, fmt):
    """(tally, peak memory growth in MB) of extract_file on one file, in a fresh process."""
    script = f"""
import json, resource
from wit_builder.extract import files as extract
from wit_builder.config import load_config
opts = extract.Options.from_config(load_config(None, ["extract.max_record_bytes=1000000"]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
batches = list(extract.extract_file(extract.InputFile({str(path)!r}, {fmt!r}), opts))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
tally = dict(zip(batches[-1].column("tally").to_pylist(), batches[-1].column("n").to_pylist()))
print(json.dumps([tally, grown]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("last", [False, True])
def test_a_wat_record_is_never_read_whole(tmp_path, last):
    """A 300 MB WAT record (300 kB gzipped) was read whole before max_page_bytes applied
    (a 2.9 MB .wat.gz drove extract to 5.8 GB); as the file's last record, the check of the
    file's end inflated it whole again."""
    path = _wat_with_a_big_record(tmp_path / "big.wat.gz", last)
    assert path.stat().st_size < 2_000_000
    tally, grown = _extract_in_a_process(path, "wat")
    assert grown < 100, f"{grown} MB"
    drops = {k: v for k, v in tally.items() if k.startswith("drop:")}
    assert drops == {"drop:record_too_long": 1} and tally["rows_out"] == (1 if last else 2)


@pytest.mark.parametrize("where", ["warc", "http"])
def test_a_warc_header_line_is_never_read_whole(tmp_path, where):
    """warcio reads a header line whole: a 300 MB one (gzipped to 300 kB) cost 600 MB."""
    path = _warc_with_a_big_header(tmp_path / "big.warc.gz", where)
    tally, grown = _extract_in_a_process(path, "warc")
    assert grown < 100, f"{grown} MB"
    # the record and the file end there (no reliable boundary after it), counted
    assert tally["drop:record_too_long"] == 1 and tally["rows_out"] == 1


def test_a_jsonl_line_is_never_read_whole(tmp_path):
    """A 500 MB JSONL line took 2.1 GB; now it is skipped in chunks, counted, and the lines
    after it are read."""
    path = _jsonl_with_a_big_line(tmp_path / "big.jsonl.gz")
    tally, grown = _extract_in_a_process(path, "jsonl")
    assert grown < 100, f"{grown} MB"
    assert tally["drop:record_too_long"] == 1 and tally["rows_out"] == 2
    assert tally["records_read"] == 3  # the skipped line is a record read, as a corrupt one is


def test_lines_up_to_the_bound_are_read():
    data = b"a" * 10 + b"\n" + b"b" * 11 + b"\n" + b"c" * 9 + b"\n" + b"d" * 10
    f = io.BytesIO(data)
    assert [line if len(line) <= 10 or not _cut(line, f) else None
            for line in _bounded_lines(f, 10)] == [b"a" * 10 + b"\n", None, b"c" * 9 + b"\n", b"d" * 10]
    f = io.BytesIO(b"e" * 11)
    assert [_cut(line, f) for line in _bounded_lines(f, 10)] == [True]
