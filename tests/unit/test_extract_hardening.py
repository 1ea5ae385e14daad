"""Extract against hostile or damaged inputs (issue 23): charsets, bounded records, listings."""

import pytest

from crawl_helpers import write_warc
from wit_builder.extract import html
from wit_builder.extract import stage as extract
from wit_builder.extract.tabular import Columns

COLUMNS = Columns("url", "text", "")


def _extract_file(path, fmt, **options):
    """(rows, tally) of one input file through the extract task, without Spark."""
    settings = dict(max_text_chars=1000, max_url_chars=2000, max_page_bytes=5_000_000,
                    include_title=True, columns=COLUMNS, batch_rows=1000)
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
    """The 84 shared pages (their texts pinned by test_extract_readers) decode as they do
    saved, when a server says `charset=utf-8` for each: the pages in a legacy charset that
    declare UTF-8 keep their legacy reading."""
    pages = sorted((shared_data / "crawl/html").glob("*.html"))
    assert len(pages) == 84
    for page in pages:
        body = page.read_bytes()
        assert html.decode(body, "utf-8") == html.decode(body), page.name
