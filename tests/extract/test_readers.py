"""Format readers and input planning of the extract stage, without Spark, on the real crawl files."""

import gzip
import io
import json
import random
import shutil

import pytest
from warcio.warcwriter import WARCWriter

from wit_builder.extract import stage as extract
from wit_builder.extract import files, html, tabular, warc, wat
from wit_builder.extract.records import CORRUPT, WRONG_FORMAT, Image, Page, Row, Skip, Table
from wit_builder.errors import UserError
from crawl_helpers import write_warc

COLUMNS = tabular.Columns("url", "text", "")


def _warc(fileobj, max_bytes):
    return warc.read(fileobj, max_bytes, max_header=max_bytes)


def _items(path, reader=_warc):
    with open(path, "rb") as f:
        return list(reader(f, 5_000_000))


# --- html ---------------------------------------------------------------------------------------

def test_parse_page_base_srcset_and_attributes():
    base, images = html.parse_page(
        '<html><head><base href="/cdn/"></head><body>'
        '<img src="a.jpg" alt=" A &amp; B\n cat " title="T">'
        '<img src="" srcset=" s1.jpg 1x, s2.jpg 2x" alt="srcset">'
        '<img alt><IMG SRC="up.png" ALT="Upper">'
        '<noscript><img src="ns.jpg" alt="noscript"></noscript></body></html>')
    assert base == "/cdn/"
    assert images == [Image("a.jpg", " A & B\n cat ", "T"), Image("s1.jpg", "srcset", None),
                      Image(None, None, None), Image("up.png", "Upper", None),
                      Image("ns.jpg", "noscript", None)]


def test_first_srcset_url_follows_the_spec():
    assert html.first_srcset_url("a.jpg 1x, b.jpg 2x") == "a.jpg"
    assert html.first_srcset_url("https://c.org/w_100,h_100/x.jpg 100w") == "https://c.org/w_100,h_100/x.jpg"
    assert html.first_srcset_url("a.jpg, b.jpg 2x") == "a.jpg"
    assert html.first_srcset_url("  ") is None
    assert html.first_srcset_url(None) is None


def test_texts_alt_always_title_when_different():
    assert list(html.texts(Image("x", " a  b ", "c"), True)) == [("alt", "a b"), ("title", "c")]
    assert list(html.texts(Image("x", "a", " a "), True)) == [("alt", "a")]
    assert list(html.texts(Image("x", None, ""), True)) == [("alt", "")]
    assert list(html.texts(Image("x", "a", "c"), False)) == [("alt", "a")]


@pytest.mark.parametrize("name, expected, broken", [
    ("Unijne-fundusze-coraz-blizej.-Sejm-zagosowa-za-Polityka-rp.pl.html", "Michał", 0),  # cp1250
    # says UTF-8, is UTF-8 but for one cut character: stays UTF-8, that character lost
    ("Sprzeciw-wobec-atakow-na-Fundacje-Lux-Veritatis-RadioMaryja.pl.html", "Fundację", 1),
    # says UTF-8, is ISO-8859-2: the legacy encoding of <html lang="pl">
    ("Ziemniaki-na-szostej-surowka-na-dziesiatej-.-Jak-pomagac-zeby-nie-zasz.html", "szóstej", 0),
    ("archive.org.he.xinhuanet.com.25340717.html", "新华社", 0),  # says gb2312: GB18030
    ("cdu-fraktion-erfurt.de.waldorfschule.html", "Übersicht", 0),  # ISO-8859-1
    ("nmb-media.de.ebay.html", "Auswählen", 0),  # no declaration, not UTF-8
])
def test_decode_charset_quirks(shared_data, name, expected, broken):
    text = html.decode((shared_data / "crawl/html" / name).read_bytes())
    assert expected in text
    assert text.count("\ufffd") == broken


def test_decode_prefers_http_charset_and_replaces_only_the_hopeless():
    assert html.decode("café".encode("cp1252"), "iso-8859-1") == "café"
    assert html.decode("<meta charset=utf-8>café".encode()) == "<meta charset=utf-8>café"
    assert html.charset_from_content_type('text/html; charset="UTF-8"') == '"UTF-8"'
    assert html.decode("naïve".encode("utf-16")) == "naïve"


def test_read_listing_skips_header_and_pages_without_url():
    urls = html.read_listing(["file\toriginal_url\tlanguage\n", "a.html\thttp://a.org/\ten\n",
                              "b.html\t\tde\n", "sub/c.html\thttps://c.org/x\n"])
    assert urls == {"a.html": "http://a.org/", "c.html": "https://c.org/x"}


# --- warc ---------------------------------------------------------------------------------------

def test_warc_pages_of_real_common_crawl_record(shared_data):
    items = _items(shared_data / "crawl/warc/cc_whirlwind.warc.gz")
    pages = [i for i in items if isinstance(i, Page)]
    assert [i.reason for i in items if isinstance(i, Skip)] == ["not_response"] * 3
    assert len(pages) == 1 and pages[0].page_url == "https://an.wikipedia.org/wiki/Escopete"
    srcs = [image.src for image in pages[0].images]
    assert any(s.startswith("//upload.wikimedia.org/") for s in srcs)
    assert any(s.startswith("/static/") for s in srcs)


def test_warc_truncated_gzip_member_is_one_corrupt_record(shared_data):
    items = _items(shared_data / "crawl/warc/truncated_pywb_iana.warc.gz")
    assert items[-1] == CORRUPT and items.count(CORRUPT) == 1
    assert len(items) == 64  # warcio's 64 records, the cut one counted as corrupt
    assert all(p.page_url != "http://www.iana.org/protocols" for p in items if isinstance(p, Page))


def test_warc_flipped_bytes_are_one_corrupt_record(shared_data):
    items = _items(shared_data / "crawl/warc/corrupt_warcat_at.warc.gz")
    assert items[-1] == CORRUPT and len(items) == 5


def test_warc_cut_inside_gzip_trailer_or_plain_record_is_detected(shared_data, tmp_path):
    data = (shared_data / "crawl/warc/cc_whirlwind.warc.gz").read_bytes()
    (tmp_path / "a.warc.gz").write_bytes(data[:-4])  # the last member's gzip footer cut
    assert _items(tmp_path / "a.warc.gz")[-1] == CORRUPT
    plain = (shared_data / "crawl/warc/warcat_at.warc").read_bytes()
    (tmp_path / "b.warc").write_bytes(plain[:-3000])  # inside the last record's block
    items = _items(tmp_path / "b.warc")
    assert items[-1] == CORRUPT and items.count(CORRUPT) == 1
    intact = _items(shared_data / "crawl/warc/warcat_at.warc")
    assert CORRUPT not in intact and len(intact) == 8


def test_warc_wget_target_uri_brackets_are_stripped(shared_data):
    pages = [i for i in _items(shared_data / "crawl/warc/warcio_example-wget-bad-target-uri.warc.gz")
             if isinstance(i, Page)]
    assert pages and all(p.page_url.startswith("http") for p in pages)


# --- wat ----------------------------------------------------------------------------------------

def test_wat_real_common_crawl_file_holds_no_candidates(shared_data):
    items = _items(shared_data / "crawl/commoncrawl/whirlwind.warc.wat.gz", wat.read)
    assert items == [Skip("not_metadata"), Skip("not_response")]


def _wat_file(path, payloads):
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for data in payloads:
            writer.write_record(writer.create_warc_record(
                "http://a.org/", "metadata", payload=io.BytesIO(data),
                warc_content_type="application/json"))
    return path


def test_wat_layout_and_bad_json(tmp_path):
    envelope = {"Envelope": {
        "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": "http://a.org/p"},
        "Payload-Metadata": {"HTTP-Response-Metadata": {
            "Response-Message": {"Status": "200"},
            "HTML-Metadata": {"Head": {"Base": "/b/"}, "Links": [
                {"path": "A@/href", "url": "/x"},
                {"path": "IMG@/src", "url": "i.jpg", "alt": "cat", "title": "t"},
                {"path": "IMG@/src", "url": "j.jpg"}]}}}}}
    redirect = json.loads(json.dumps(envelope))
    redirect["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["Response-Message"]["Status"] = "301"
    path = _wat_file(tmp_path / "x.wat.gz", [json.dumps(envelope).encode(), b"{not json",
                                             json.dumps(redirect).encode(), b'{"Envelope": 3}'])
    items = _items(path, wat.read)
    assert items == [Page("http://a.org/p", "/b/", [Image("i.jpg", "cat", "t")], textless=1),
                     CORRUPT, Skip("not_ok"), CORRUPT]


# --- tabular ------------------------------------------------------------------------------------

def _rows(path, fmt, columns=COLUMNS):
    """The reader's items, its `Table`s (at most batch_rows records each) written out as `Row`s."""
    items = []
    for item in tabular.read(lambda: open(path, "rb"), fmt, columns, batch_rows=2,
                             max_line=5_000_000):
        if isinstance(item, Table):
            assert 0 < len(item.url) <= 2
            items += [Row(*values) for values in zip(*(c.to_pylist() for c in item))]
        else:
            items.append(item)
    return items


def test_csv_malformed_and_undecodable_rows(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b'URL,Text,other\nhttp://a/1.jpg,"a, quoted",x\nhttp://a/2.jpg,b,x,EXTRA\n'
                     b'http://a/3.jpg,caf\xe9,x\nhttp://a/4.jpg,d,x\n')
    items = _rows(path, "csv")
    assert items.count(CORRUPT) == 1
    rows = [i for i in items if isinstance(i, Row)]
    assert [r.text for r in rows] == ["a, quoted", "caf\ufffd", "d"]
    assert rows[0] == Row("http://a/1.jpg", "a, quoted", None)


def test_tsv_gz_keeps_quotes_and_reads_page_column(tmp_path):
    path = tmp_path / "t.tsv.gz"
    path.write_bytes(gzip.compress(b'url\ttext\tpage\n/i.jpg\t"quoted" start\thttp://p.org/\n'))
    rows = _rows(path, "tsv", tabular.Columns("url", "text", "page"))
    assert rows == [Row("/i.jpg", '"quoted" start', "http://p.org/")]


def test_jsonl_bad_lines_and_truncated_gzip(tmp_path):
    lines = (b'{"url": "http://a/1.jpg", "TEXT": "one"}\n\nnot json\n[1]\n{"url": 5, "text": 7}\n'
             b'{"url": "http://a/2.jpg", "text": "x\\ud800"}\n')
    path = tmp_path / "j.jsonl.gz"
    path.write_bytes(gzip.compress(lines * 50)[:-30])
    items = _rows(path, "jsonl")
    rows = [item for item in items if isinstance(item, Row)]
    assert rows[:2] == [Row("http://a/1.jpg", "one", None), Row("5", "7", None)]
    assert rows[2].text.startswith("x\ufffd")  # a lone surrogate: valid UTF-8, later undecodable
    # two bad lines in each whole copy, then one for the cut gzip tail, after the rows before it
    assert items.count(CORRUPT) >= 2 * (len(rows) // 3) + 1 and items[-1] == CORRUPT


def test_parquet_case_insensitive_and_missing_columns(shared_data, tmp_path):
    items = _rows(shared_data / "candidates/img2dataset_10k.parquet", "parquet")
    assert len(items) == 10_000 and items[4674].url == "UNLIKELY"  # pandas index 4758
    assert _rows(shared_data / "candidates/img2dataset_10k.parquet", "parquet",
                 tabular.Columns("image", "caption", "")) == [tabular.MISSING]
    assert tabular.match_columns(["url", "URL", "Text"], COLUMNS) == ["url", "Text", None]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    assert _rows(tmp_path / "bad.parquet", "parquet") == [CORRUPT]


def test_problem_reads_the_first_bytes_and_the_header_only(shared_data, tmp_path):
    parquet = shared_data / "candidates/img2dataset_10k.parquet"
    jsonl = shared_data / "candidates/alt_text_pairs.jsonl"

    def problem(path, fmt, columns=COLUMNS):
        return tabular.problem(lambda: open(path, "rb"), fmt, columns)

    assert problem(parquet, "parquet") is None
    assert problem(parquet, "parquet", tabular.Columns("image", "caption", "")) == tabular.MISSING
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress(b"Image\tCaption\nx\ty\n"))
    assert problem(tmp_path / "a.tsv.gz", "tsv", tabular.Columns("image", "caption", "")) is None
    # another format altogether: the user's mistake
    assert problem(jsonl, "parquet") == problem(parquet, "jsonl") == WRONG_FORMAT
    assert problem(parquet, "csv") == problem(parquet, "tsv") == WRONG_FORMAT
    (tmp_path / "array.jsonl").write_text('[{"url": "u", "text": "t"}]\n')
    assert problem(tmp_path / "array.jsonl", "jsonl") == WRONG_FORMAT
    # damaged or empty files of the right format: left to the task to count
    (tmp_path / "bad.parquet").write_bytes(parquet.read_bytes()[:100_000])
    (tmp_path / "bad.jsonl").write_bytes(b'\xef\xbb\xbf {"url": "u", "te\n{"url"')
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert problem(tmp_path / "bad.parquet", "parquet") is None
    assert problem(tmp_path / "bad.jsonl", "jsonl") is None
    assert problem(tmp_path / "empty.parquet", "parquet") is None
    assert _rows(tmp_path / "bad.parquet", "parquet") == [CORRUPT]
    assert _rows(jsonl, "parquet") == [WRONG_FORMAT]


def test_real_warc_and_wat_files_damaged_ones_too_start_as_warc_and_lists_do_not(shared_data):
    archives = sorted((shared_data / "crawl/warc").iterdir()) + [
        shared_data / "crawl/commoncrawl/whirlwind.warc.wat.gz"]
    assert len(archives) > 10 and any("truncated" in p.name for p in archives)
    assert all(warc.in_format(files.archive_head(str(p))) for p in archives)
    for listing in ("alt_text_pairs.jsonl", "img2dataset_10k.parquet"):
        assert not warc.in_format(files.archive_head(str(shared_data / "candidates" / listing)))


# --- planning -----------------------------------------------------------------------------------

def test_plan_folder_of_saved_pages_with_listing(shared_data):
    files = extract.plan_files([str(shared_data / "crawl/html")])
    assert len(files) == 84 and {f.format for f in files} == {"html"}
    with_url = [f for f in files if f.page_url]
    assert len(with_url) == 80
    assert extract.plan_files([str(shared_data / "crawl/html")], "html") == files


def test_plan_formats_globs_and_listings(shared_data, tmp_path):
    crawl = shared_data / "crawl"
    files = extract.plan_files([str(crawl)])  # PROVENANCE.md, make_damaged.sh ignored
    assert {f.format for f in files} == {"warc", "wat", "html"}
    assert len([f for f in files if f.format == "warc"]) == 12
    assert len(extract.plan_files([str(crawl / "warc/*.warc")])) == 4
    (tmp_path / "sub").mkdir()
    shutil.copy(crawl / "warc/pywb_example.warc.gz", tmp_path / "sub/x.warc.gz")
    (tmp_path / "warc.paths").write_text("sub/x.warc.gz\n")
    assert extract.plan_files([str(tmp_path / "warc.paths")]) == [
        extract.InputFile(str(tmp_path / "sub/x.warc.gz"), "warc")]
    with gzip.open(tmp_path / "wat.paths.gz", "wt") as f:
        f.write("crawl-data/CC-MAIN-2024-22/segments/1/wat/a.warc.wat.gz\n")
    assert extract.plan_files([str(tmp_path / "wat.paths.gz")], listing_prefix="s3://commoncrawl/") == [
        extract.InputFile("s3://commoncrawl/crawl-data/CC-MAIN-2024-22/segments/1/wat/a.warc.wat.gz", "wat")]


def test_plan_user_errors(shared_data, tmp_path):
    with pytest.raises(UserError, match="input not found"):
        extract.plan_files([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="cannot tell the format"):
        extract.plan_files([str(shared_data / "crawl/PROVENANCE.md")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no input files of a known format"):
        extract.plan_files([str(tmp_path)])


# --- issue 13: counted, never silently lost ------------------------------------------------------

def _extract_file(path, fmt="warc", max_page_bytes=5_000_000):
    """(rows, tally) of one input file through the extract task, without Spark."""
    opts = files.Options(1000, 2000, max_page_bytes, True, COLUMNS, 1000, 5_000_000, ())
    batches = list(files.extract_file(extract.InputFile(str(path), fmt), opts))
    rows = [r for b in batches[:-1] for r in b.to_pylist()]
    tally = dict(zip(batches[-1].column("tally").to_pylist(), batches[-1].column("n").to_pylist()))
    return rows, tally


STRAY = '<!-- \xff --><img src="http://e.com/画像.jpg" alt="a café photo of a cat">'


@pytest.mark.parametrize("content_type, head", [
    ("text/html; charset=utf-8", ""),  # declared by the HTTP header
    ("text/html", '<meta charset="utf-8">'),  # declared by the page
])
def test_declared_utf8_with_a_stray_byte_stays_utf8(tmp_path, content_type, head):
    body = head.encode() + STRAY.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff")
    path = write_warc(tmp_path / "p.warc.gz", [("http://e.com/page", body)], content_type)
    rows, tally = _extract_file(path)
    assert [(r["url"], r["text"]) for r in rows] == [
        ("http://e.com/%E7%94%BB%E5%83%8F.jpg", "a café photo of a cat")]
    assert tally["rows_out"] == 1 and not [k for k in tally if k.startswith("drop:")]


def test_decode_keeps_a_declared_charset_with_few_errors():
    body = "ok <b>é ü ł</b> \xff end".encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    assert html.decode(body, "utf-8") == "ok <b>é ü ł</b> \ufffd end"
    # a legacy page declared UTF-8: (nearly) every non-ASCII byte is broken, so it is re-decoded
    page = '<html lang="ru"><img alt="кошка на фото">'
    assert html.decode(page.encode("cp1251"), "utf-8") == page


def _cat_pages(n):
    return [(f"http://e.com/{i}", f'<img src="a{i}.jpg" alt="cat {i}"><img src="b{i}.jpg" alt="dog {i}">'
             .encode()) for i in range(n)]


def test_warc_gzipped_as_one_whole_file_is_read_fully(tmp_path):
    path = write_warc(tmp_path / "whole.warc.gz", _cat_pages(5), whole_file_gzip=True)
    rows, tally = _extract_file(path)
    assert len(rows) == tally["rows_out"] == 10
    assert tally["records_read"] == 10 and tally["skip:not_response"] == 5
    assert not [k for k in tally if k.startswith("drop:")]


def test_warc_gzipped_as_one_whole_file_and_cut_is_counted(tmp_path):
    path = write_warc(tmp_path / "whole.warc.gz", _cat_pages(50), whole_file_gzip=True)
    path.write_bytes(path.read_bytes()[:-100])  # the last records and the gzip trailer
    items = _items(path)
    assert items[-1] == CORRUPT and items.count(CORRUPT) == 1
    pages = [i.page_url for i in items if isinstance(i, Page)]
    assert 20 < len(pages) < 50 and pages == [f"http://e.com/{i}" for i in range(len(pages))]


def test_warc_gzipped_as_one_whole_file_with_a_bad_crc_is_counted(tmp_path):
    """gzip raises BadGzipFile (not zlib.error) for a bad CRC: one corrupt record, no crash."""
    # big enough that warcio's first pass stops before the trailer
    path = write_warc(tmp_path / "whole.warc.gz", _cat_pages(500), whole_file_gzip=True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    items = _items(path)
    assert items[-1] == CORRUPT and items.count(CORRUPT) == 1
    pages = [i.page_url for i in items if isinstance(i, Page)]
    assert pages == [f"http://e.com/{i}" for i in range(len(pages))]


def test_warc_damaged_anywhere_never_raises(shared_data):
    """64 flipped bytes at 200 places in each real WARC: warcio raises many things on damage
    (a bad gzip CRC, a header that lost its target URI, ...); each must be one corrupt record
    that ends the file, never an exception that fails the task."""
    for name in ("pywb_iana.warc.gz", "warcat_at.warc.gz", "cc_whirlwind.warc.gz"):
        data = (shared_data / "crawl/warc" / name).read_bytes()
        rng = random.Random(0)
        for _ in range(200):
            damaged, at = bytearray(data), rng.randrange(len(data) - 64)
            damaged[at:at + 64] = bytes(b ^ 0xFF for b in damaged[at:at + 64])
            items = list(_warc(io.BytesIO(bytes(damaged)), 1 << 20))
            assert CORRUPT not in items[:-1], (name, at)


def _big_page(n_images: int) -> bytes:
    return "".join(f'<p>{"text " * 50}</p><img src="http://e.com/i{i}.jpg" alt="cat {i}" title="t{i}">'
                   for i in range(n_images)).encode()


@pytest.mark.parametrize("fmt", ["warc", "html"])
def test_images_after_max_page_bytes_are_counted(tmp_path, fmt):
    body = _big_page(40)
    cap = len(body) // 4 + 7  # inside some tag, not at a boundary
    if fmt == "warc":
        path = write_warc(tmp_path / "p.warc.gz",
                          [("http://e.com/p", body), ("http://e.com/q", b"<img src=/x.jpg alt=x>")])
    else:
        path = tmp_path / "p.html"
        path.write_bytes(body)
    rows, tally = _extract_file(path, fmt, max_page_bytes=cap)
    kept = [r for r in rows if r["text"].startswith("cat")]
    assert 5 < len(kept) < 15 and len(rows) == tally["rows_out"] == 2 * len(kept) + (fmt == "warc")
    drops = {k: v for k, v in tally.items() if k.startswith("drop:")}
    assert drops == {"drop:page_truncated": 40 - len(kept)}  # one (its alt) per image cut off
    assert tally["pages_truncated"] == 1
    assert "pages_truncated" not in _extract_file(path, fmt)[1]


def test_read_page_counts_img_tags_across_chunks():
    body = b"<p>x</p>" * 3 + b"<IMG src=a><img\nsrc=b><imgx><img/>" * 5
    for chunk in (1, 3, 4, 5, 7, 1000):
        assert html.read_page(io.BytesIO(body), 24, chunk) == (body[:24], 15)
    assert html.read_page(io.BytesIO(body), 26, 4) == (body[:24], 15)  # "<I" goes with the rest
    assert html.read_page(io.BytesIO(body), len(body), 4) == (body, None)


def test_the_old_module_path_still_imports_with_a_warning():
    """Scripts written against the layout before the stage packages (the shared peer tool
    imports `wit_builder.candidates.extract`) keep working."""
    import importlib
    import sys

    sys.modules.pop("wit_builder.candidates.extract", None)
    with pytest.warns(DeprecationWarning, match="wit_builder.extract.stage"):
        old = importlib.import_module("wit_builder.candidates.extract")
    assert old.extract_file is files.extract_file and old.InputFile is extract.InputFile


def test_files_are_dealt_out_to_tasks_once_each():
    files = [extract.InputFile(f"f{i}.warc.gz", "warc") for i in range(10)]
    for partitions, cores, tasks in ((0, 2, 8), (0, 8, 10), (3, 2, 3), (20, 1, 10)):
        dealt = extract._tasks(files, partitions, cores)
        assert len(dealt) == tasks and all(dealt)
        assert sorted(f.path for task in dealt for f in task) == sorted(f.path for f in files)
