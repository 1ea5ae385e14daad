"""Candidate checks shared by every input format: text cleaning, URL resolution, uid."""

import hashlib

import pytest

from wit_builder import urls

PAGE = "https://an.wikipedia.org/wiki/Escopete"


def test_clean_text_collapses_all_whitespace():
    assert urls.clean_text("  a\tb\n\n c\u00a0d\u2003 ") == "a b c d"
    assert urls.clean_text(None) == ""
    assert urls.clean_text(" \n ") == ""


def test_uid_is_blake2b_64_of_url_nul_text():
    expected = hashlib.blake2b("http://x/a.jpg\x00a cat".encode(), digest_size=8).hexdigest()
    assert urls.uid("http://x/a.jpg", "a cat") == expected
    assert len(expected) == 16
    assert urls.uid("http://x/a.jpg", "a dog") != expected
    # the separator matters: moving a character across it changes the uid
    assert urls.uid("http://x/a.jpga", " cat") != urls.uid("http://x/a.jpg", "a cat")


@pytest.mark.parametrize("raw, base, expected", [
    ("//upload.wikimedia.org/a.png", PAGE, "https://upload.wikimedia.org/a.png"),
    ("/static/images/logo.png", PAGE, "https://an.wikipedia.org/static/images/logo.png"),
    ("img/x.jpg", PAGE, "https://an.wikipedia.org/wiki/img/x.jpg"),
    ("../x.jpg", "http://a.org/b/c/", "http://a.org/b/x.jpg"),
    ("  HTTP://A.org/x.jpg ", None, "http://A.org/x.jpg"),
    ("http://[::1]:8080/x.jpg", None, "http://[::1]:8080/x.jpg"),
    ("//cdn.org/x.jpg", None, "https://cdn.org/x.jpg"),
    ("http://a.org/my photo.jpg", None, "http://a.org/my%20photo.jpg"),
    ("http://a.org/x%20y.jpg", None, "http://a.org/x%20y.jpg"),  # never double-escaped
    ("http://a.org/\u00e4.jpg", None, "http://a.org/%C3%A4.jpg"),
    ("http://a.org/x\n.jpg", None, "http://a.org/x.jpg"),
    ("http://b\u00fccher.de/x.jpg?q=\u00e9#f", None, "http://xn--bcher-kva.de/x.jpg?q=%C3%A9#f"),
])
def test_resolve_keeps_absolute_http(raw, base, expected):
    assert urls.resolve(raw, base) == (expected, None)


@pytest.mark.parametrize("raw, base, reason", [
    ("", PAGE, "empty_url"),
    (None, PAGE, "empty_url"),
    ("   ", PAGE, "empty_url"),
    ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", PAGE, "non_http"),
    ("javascript:void(0)", PAGE, "non_http"),
    ("ftp://a.org/x.jpg", PAGE, "non_http"),
    ("x.jpg", "ftp://a.org/", "non_http"),
    ("UNLIKELY", None, "relative_url"),
    ("/a.jpg", None, "relative_url"),
    ("http://[::1/x.jpg", None, "bad_url"),
    ("http://a.org:99999/x.jpg", None, "bad_url"),
    ("http:///x.jpg", None, "bad_url"),
    ("http://a b.org/x.jpg", None, "bad_url"),
    ("http://a%20b.org/x.jpg", None, "bad_url"),
    ("http://a.org/" + "x" * 3000, None, "url_too_long"),
    ("http://a.org/caf\ufffd.jpg", None, "undecodable"),
])
def test_resolve_drop_reasons(raw, base, reason):
    assert urls.resolve(raw, base) == (None, reason)


def test_base_url_prefers_base_href_resolved_against_page():
    assert urls.base_url(PAGE, "/cdn/") == "https://an.wikipedia.org/cdn/"
    assert urls.base_url(PAGE, "http://other.org/") == "http://other.org/"
    assert urls.base_url(PAGE, None) == PAGE
    assert urls.base_url(PAGE, "  ") == PAGE
    assert urls.base_url(None, "/rel/") is None  # nothing to resolve a relative base against
    assert urls.base_url(None, "https://b.org/") == "https://b.org/"
    assert urls.base_url(PAGE, "javascript:x") == PAGE


def test_page_url_of_strips_wget_brackets():
    assert urls.page_url_of("<http://example.com/>") == "http://example.com/"
    assert urls.page_url_of(" http://a.org/ ") == "http://a.org/"
    assert urls.page_url_of(None) is None


@pytest.mark.parametrize("text, reason", [
    ("a cat", None), ("", "empty_text"), ("caf\ufffd", "undecodable"), ("x" * 11, "text_too_long"),
    ("x" * 10, None),
])
def test_check_text(text, reason):
    assert urls.check_text(text, max_chars=10) == reason


def test_scrub_makes_lone_surrogates_replacement_characters():
    assert urls.scrub("ok \u00e9") == "ok \u00e9"
    assert urls.scrub(None) is None
    scrubbed = urls.scrub("a\ud83db")
    assert scrubbed.startswith("a") and scrubbed.endswith("b") and "\ufffd" in scrubbed
    scrubbed.encode("utf-8")  # valid now
    assert urls.check_text(urls.clean_text(scrubbed), 100) == "undecodable"
