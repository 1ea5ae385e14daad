"""Our fetcher against the local image server, in this process: what it connects to.

Every connection goes through `socket.create_connection`, which these tests replace with a
recorder that refuses (without connecting) anything outside 127.0.0.0/8. So "no connection to
169.254.169.254 or 10.0.0.1" is proved by the record, never by trying one.
"""

import hashlib
import socket
import time

import pytest

from wit_builder.download.fetch import Policy, download_image
from wit_builder.download.safety import parse_networks

DIRECTIVES = {"noai", "noimageai"}


def _policy(**changes):
    values = dict(timeout=5.0, total_timeout=10.0, max_bytes=20_000_000, max_pixels=89_478_485,
                  max_redirects=3, allowed=parse_networks(["127.0.0.0/8"]),
                  user_agent="wit-builder/0.1 (+https://example.org/wit-builder)")
    values.update(changes)
    return Policy(**values)


@pytest.fixture
def connections(monkeypatch):
    """Addresses the fetcher connected to (only loopback ones are really connected)."""
    seen = []
    real = socket.create_connection

    def record(address, *args, **kwargs):
        seen.append(address[0])
        if not address[0].startswith("127."):
            raise AssertionError(f"connection attempted to {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", record)
    return seen


def _get(url, policy=None):
    key, stream, error = download_image((7, url), 5, "wit-builder", DIRECTIVES,
                                        policy=policy or _policy())
    assert key == 7
    return (stream.getvalue() if stream else None), error


@pytest.mark.parametrize("case, error", [("redirect_metadata", "blocked_address: link-local"),
                                         ("redirect_private", "blocked_address: private")])
def test_redirect_to_internal_address_is_refused_before_connecting(image_server, connections,
                                                                   case, error):
    data, message = _get(image_server.catalog[case])
    assert (data, message) == (None, error)
    assert connections == ["127.0.0.1"]  # the first hop only; never 169.254.169.254 / 10.0.0.1


def test_allowed_redirect_is_followed_hop_by_hop(image_server, connections, shared_data):
    data, error = _get(image_server.catalog["redirect_ok"])
    assert error is None
    photo = shared_data / "images" / "flickr8k_dev" / "train" / "1000268201_693b08cb0e.jpg"
    assert hashlib.sha256(data).digest() == hashlib.sha256(photo.read_bytes()).digest()
    assert connections == ["127.0.0.1", "127.0.0.1"]


def test_redirect_budget(image_server, connections):
    before = image_server.hits("/special/loop.jpg")
    assert _get(image_server.catalog["redirect_loop"])[1] == "too_many_redirects: more than 3"
    assert image_server.hits("/special/loop.jpg") - before == 4  # first request + 3 redirects
    assert len(connections) == 4


def test_loopback_refused_without_allow_list(image_server, connections):
    data, error = _get(image_server.catalog["original"], _policy(allowed=()))
    assert (data, error) == (None, "blocked_address: loopback")
    assert connections == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.jpg", "file:///etc/passwd", "gopher://x/"])
def test_other_schemes_never_connect(connections, url):
    assert _get(url)[1] == "bad_scheme: " + url.split(":")[0]
    assert connections == []


@pytest.mark.parametrize("case, error", [
    ("missing", "http_404: Not Found"),
    ("noai", "robots_optout: X-Robots-Tag"),
    ("not_an_image", "not_an_image: undecodable"),
    ("truncated_jpeg", "truncated_image: JPEG"),
    ("bomb_png", "too_many_pixels: header"),
])
def test_refusals(image_server, connections, case, error):
    assert _get(image_server.catalog[case]) == (None, error)


def test_robots_tag_for_another_bot_is_not_ours(image_server, connections):
    data, error = _get(image_server.catalog["noai_other_bot"])
    assert error is None and data[:2] == b"\xff\xd8"


def test_byte_bound_and_user_agent(image_server, connections):
    assert _get(image_server.catalog["original"], _policy(max_bytes=1000))[1] == \
        "too_large: Content-Length"
    image_server.route("/special/no-length.jpg", headers={"Content-Length": None},
                       body=b"\xff\xd8" + b"x" * 5000)
    assert _get(image_server.url("/special/no-length.jpg"), _policy(max_bytes=1000))[1] == \
        "too_large: body"
    assert any(ua.startswith("wit-builder/0.1") for ua in image_server.user_agents)


def test_total_timeout(image_server, connections):
    def slow(_n):
        time.sleep(2)
        return 200, {}, b""
    image_server.route("/special/slow.jpg", handler=slow)
    started = time.monotonic()
    error = _get(image_server.url("/special/slow.jpg"), _policy(timeout=5.0, total_timeout=0.5))[1]
    assert error == "timeout: socket"
    assert time.monotonic() - started < 1.5
