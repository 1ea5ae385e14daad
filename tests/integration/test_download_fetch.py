"""Our fetcher against the local image server, in this process: what it connects to.

Every socket the fetcher connects is made by one factory, after the address check; the
`connections` fixture (conftest) records there and refuses (without connecting) anything
outside 127.0.0.0/8. So "no connection to 169.254.169.254 or 10.0.0.1" is proved by the
record, never by trying one.
"""

import hashlib
import socket
import time

# The fetcher's first call imports img2dataset (and torch): seconds that no timed fetch below
# should count.
import img2dataset.downloader  # noqa: F401
import pytest

from wit_builder.download.engine import download_image
from wit_builder.download.fetch import Policy
from wit_builder.safety import parse_networks

DIRECTIVES = {"noai", "noimageai"}


def _policy(**changes):
    values = dict(timeout=5.0, total_timeout=10.0, max_bytes=20_000_000, max_pixels=89_478_485,
                  max_redirects=3, allowed=parse_networks(["127.0.0.0/8"]),
                  user_agent="wit-builder/0.1 (+https://example.org/wit-builder)")
    values.update(changes)
    return Policy(**values)


def _get(url, policy=None):
    key, stream, error = download_image((7, url), 5, "wit-builder", DIRECTIVES,
                                        policy=policy or _policy())
    assert key == 7
    return (stream.getvalue() if stream else None), error


@pytest.mark.parametrize("case, error", [("redirect_metadata", "blocked_address: metadata"),
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
    assert error.startswith("timeout: ")
    assert time.monotonic() - started < 1.5


# --- the deadline holds whatever the server does (hardening defects 1 and 4) ---------------

MARGIN = 1.0  # seconds a fetch may run past total_timeout


def _trickle_body(wfile, every=0.2):
    wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
    wfile.flush()
    for _ in range(100000):
        wfile.write(b"x")
        wfile.flush()
        time.sleep(every)


def _trickle_headers(wfile, every=0.2):
    wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(100000):
        wfile.write(b"X-Slow: a\r\n")
        wfile.flush()
        time.sleep(every)


@pytest.fixture
def silent_listener():
    """A loopback port that accepts connections and never says anything (a stuck TLS peer)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def unresponsive_port():
    """A loopback port whose full accept queue drops SYNs: a connect there hangs, as to a
    firewalled address, until its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = []
    for _ in range(4):  # fill the queue; further connects get no answer
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(server.getsockname())
        filler.append(s)
    time.sleep(0.1)
    yield server.getsockname()[1]
    for s in filler:
        s.close()
    server.close()


def _timed(url, **policy):
    started = time.monotonic()
    _data, error = _get(url, _policy(**policy))
    return error, time.monotonic() - started


@pytest.mark.parametrize("route, trickle", [("/special/trickle-body.jpg", _trickle_body),
                                            ("/special/trickle-headers.jpg", _trickle_headers)])
def test_a_trickling_server_cannot_outlast_total_timeout(image_server, connections, route,
                                                         trickle):
    error, took = _timed(image_server.route(route, raw=trickle), timeout=5.0, total_timeout=1.5)
    assert error == "timeout: total"
    assert took < 1.5 + MARGIN


def test_retries_share_one_deadline(image_server, connections):
    url = image_server.route("/special/trickle-retry.jpg", raw=_trickle_body)
    before = image_server.hits("/special/trickle-retry.jpg")
    error, took = _timed(url, timeout=0.5, total_timeout=2.0, retries=5)
    assert error.startswith("timeout: ") and took < 2.0 + MARGIN
    assert image_server.hits("/special/trickle-retry.jpg") - before == 1  # one slow attempt


def test_a_transient_failure_is_retried_within_the_deadline(image_server, connections):
    photo = image_server.near_dup_photo.read_bytes()
    url = image_server.route("/special/busy-once.jpg", handler=lambda n: (
        (503, {}, b"busy") if n == 1 else (200, {"Content-Type": "image/jpeg"}, photo)))
    assert _get(url, _policy(retries=1)) == (photo, None)
    assert _get(image_server.catalog["missing"], _policy(retries=3))[1] == "http_404: Not Found"


def test_a_silent_peer_in_the_tls_handshake(silent_listener, connections):
    error, took = _timed(f"https://127.0.0.1:{silent_listener}/a.jpg", timeout=5.0,
                         total_timeout=1.0)
    assert error == "timeout: total" and took < 1.0 + MARGIN


def test_a_socket_timeout_at_the_deadline_is_the_deadline(silent_listener, connections):
    """A per-read timeout longer than what is left: the fetch ran out of its total time."""
    error, took = _timed(f"https://127.0.0.1:{silent_listener}/a.jpg", timeout=5.0,
                         total_timeout=0.5)
    assert error == "timeout: total" and 0.5 <= took < 0.5 + MARGIN


def test_connect_timeouts_count_against_the_deadline(unresponsive_port, connections,
                                                     monkeypatch):
    _fake_dns(monkeypatch, {"unresponsive.test": [["127.0.0.1"] * 6]})
    error, took = _timed(f"http://unresponsive.test:{unresponsive_port}/a.jpg", timeout=2.0,
                         total_timeout=3.0)
    assert error.startswith("timeout: ") and took < 3.0 + MARGIN  # not 6 x 2 s
    assert 1 <= len(connections) <= 2


def test_a_slow_resolver_counts_against_the_deadline(connections, monkeypatch):
    def slow_lookup(*args, **kwargs):
        time.sleep(4)
        raise socket.gaierror("too late")
    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    error, took = _timed("http://slow-dns.test/a.jpg", timeout=5.0, total_timeout=1.0)
    assert error == "timeout: dns" and took < 1.0 + MARGIN
    assert connections == []


# --- robots.txt (issue 14) -------------------------------------------------------------------

@pytest.fixture
def site(shared_data):
    """A fresh server per test: robots.txt answers are cached per host and process."""
    from image_server import ImageServer

    server = ImageServer({"/": shared_data / "images" / "flickr8k_dev" / "train"}).start()
    server.photo = sorted((shared_data / "images" / "flickr8k_dev" / "train").glob("*.jpg"))[0].name
    yield server
    server.stop()


def _robots(site, status=200, body=b""):
    site.route("/robots.txt", status=status, headers={"Content-Type": "text/plain"}, body=body)


def test_robots_txt_is_asked_once_per_host_and_obeyed(site, connections):
    _robots(site, body=b"User-agent: otherbot\nDisallow: /\n\n"
                       b"User-agent: wit-builder\nDisallow: /private/\n")
    policy = _policy(honor_robots_txt=True)
    site.route("/private/a.jpg", headers={"Content-Type": "image/jpeg"}, body=b"x")
    assert _get(site.url("/private/a.jpg"), policy) == (None, "robots_txt: disallowed")
    assert site.hits("/private/a.jpg") == 0  # refused before the request
    data, error = _get(site.url("/" + site.photo), policy)
    assert error is None and data[:2] == b"\xff\xd8"  # otherbot's rule is not ours
    assert site.hits("/robots.txt") == 1
    assert _get(site.url("/private/a.jpg"), _policy())[1] == "not_an_image: undecodable"  # off


@pytest.mark.parametrize("status, allowed", [(404, True), (403, True), (503, False)])
def test_robots_txt_answers_as_rfc_9309_says(site, connections, status, allowed):
    _robots(site, status=status)
    error = _get(site.url("/" + site.photo), _policy(honor_robots_txt=True))[1]
    assert (error is None) == allowed and (allowed or error == "robots_txt: disallowed")


def test_robots_txt_redirects_are_checked_like_images(site, connections):
    site.route("/robots.txt", status=302, headers={"Location": "http://169.254.169.254/robots.txt"})
    error = _get(site.url("/" + site.photo), _policy(honor_robots_txt=True))[1]
    assert all(address.startswith("127.") for address in connections)
    # RFC 9309: a robots.txt we cannot reach means "disallowed" (issue 23 #13), not allow-all
    assert error == "robots_txt: disallowed"
    assert site.hits("/" + site.photo) == 0


def test_robots_txt_runs_inside_the_urls_deadline(site, connections):
    """Issue 23 #13: a robots.txt that trickles cannot stretch the URL past total_timeout."""
    site.route("/robots.txt", raw=_trickle_body)
    error, took = _timed(site.url("/" + site.photo), timeout=5.0, total_timeout=1.5,
                         honor_robots_txt=True)
    assert error == "timeout: total" and took < 1.5 + MARGIN
    assert site.hits("/" + site.photo) == 0


def test_the_download_config_turns_robots_txt_on_by_default():
    from wit_builder.config import load_config

    assert Policy.from_config(load_config().download).honor_robots_txt is True
    off = load_config(None, ["download.honor_robots_txt=false"]).download
    assert Policy.from_config(off).honor_robots_txt is False
    assert Policy.from_config(load_config().download).connections_per_host == 8  # as Scrapy
    polite = load_config(None, ["download.connections_per_host=4"]).download
    assert Policy.from_config(polite).connections_per_host == 4


# --- URLs as plain lists write them: encoded before the request (hardening defect 9) -------

def _fake_dns(monkeypatch, answers):
    """getaddrinfo answering for the hosts in `answers` (host -> one address list per lookup,
    the last one repeated); returns the hosts asked, in order. Other names (create_connection
    looks up its numeric address too) get the real answer."""
    asked = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        addresses = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def _utf8_redirect(target: str):
    def raw(wfile):  # send_header would write Latin-1; servers send UTF-8 bytes
        wfile.write(b"HTTP/1.1 302 Found\r\nLocation: " + target.encode() +
                    b"\r\nContent-Length: 0\r\n\r\n")
    return raw


def test_spaces_and_non_ascii_are_encoded(image_server, connections, monkeypatch):
    photo = image_server.near_dup_photo.read_bytes()
    for route in ("/special/a%20b.jpg", "/special/caf%C3%A9.jpg", "/special/q.jpg"):
        image_server.route(route, headers={"Content-Type": "image/jpeg"}, body=photo)
    base = image_server.url("/special/")
    assert _get(base + "a b.jpg") == (photo, None)
    assert _get(base + "café.jpg") == (photo, None)
    assert _get(base + "q.jpg?name=a b&x=ü") == (photo, None)
    assert _get(base + "a%20b.jpg") == (photo, None)  # escapes stay as they are
    assert _get(image_server.route("/special/to-cafe.jpg", raw=_utf8_redirect("/special/café.jpg"))) \
        == (photo, None)
    asked = _fake_dns(monkeypatch, {"xn--bcher-kva.test": [["127.0.0.1"]]})
    assert _get(f"http://bücher.test:{image_server.port}/special/q.jpg") == (photo, None)
    assert asked == ["xn--bcher-kva.test"]


# --- the review's attacks: refused before any connection to them ---------------------------

METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",  # decimal
    "http://0xA9FEA9FE/",  # hex
    "http://0251.0376.0251.0376/",  # octal
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://user:pw@169.254.169.254/",  # credentials
    "http://169.254.169.254.nip.io.169.254.169.254/",  # resolves by DNS or not at all
    "http://[fd00:ec2::254]/",
    "http://168.63.129.16/",  # Azure
    "http://100.100.100.200/",  # Alibaba
    "http://192.0.0.192/",  # Oracle
]
PRIVATE_TARGETS = ["http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.0.1/",
                   "http://127.0.0.1/", "http://localhost./", "http://localhost/",
                   "http://0.0.0.0/", "http://0/", "http://[::]/", "http://[::1]/",
                   "http://[fe80::1]/", "http://[fec0::1]/", "http://[fc00::1]/",
                   "http://100.64.0.1/", "http://192.0.0.8/", "http://224.0.0.1/",
                   "http://255.255.255.255/", "http://[2002:a9fe:a9fe::]/"]

# the image server's own addresses: the redirect tests' policy must allow them
LOOPBACK_ALLOWED_HERE = ["http://127.0.0.1/", "http://localhost./", "http://localhost/"]


def _refused_silently(url) -> str:
    data, error = _get(url, _policy(allowed=()))
    assert data is None
    return error


@pytest.mark.parametrize("url", METADATA_SPELLINGS + PRIVATE_TARGETS)
def test_internal_targets_never_connected(connections, url):
    error = _refused_silently(url)
    assert error.startswith(("blocked_address: ", "dns_error: ")), error
    assert connections == []


@pytest.mark.parametrize("url", METADATA_SPELLINGS +
                         [u for u in PRIVATE_TARGETS if u not in LOOPBACK_ALLOWED_HERE] +
                         ["file:///etc/passwd", "gopher://127.0.0.1:70/", "dict://127.0.0.1/",
                          "ftp://127.0.0.1/"])
def test_redirects_to_internal_targets_are_refused(image_server, connections, url):
    hop = image_server.route(f"/special/to/{hashlib.md5(url.encode()).hexdigest()}.jpg",
                             status=302, headers={"Location": url})
    data, error = _get(hop)
    assert data is None
    assert error.startswith(("blocked_address: ", "dns_error: ", "bad_scheme: ")), error
    assert set(connections) == {"127.0.0.1"}  # the first hop only


def test_a_second_lookup_cannot_change_the_address(image_server, connections, monkeypatch):
    """DNS rebinding: the checked answer is the one connected to (one lookup per hop)."""
    photo = image_server.near_dup_photo.read_bytes()
    image_server.route("/special/rebind.jpg", headers={"Content-Type": "image/jpeg"}, body=photo)
    asked = _fake_dns(monkeypatch, {"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    assert _get(f"http://rebind.test:{image_server.port}/special/rebind.jpg") == (photo, None)
    assert asked == ["rebind.test"] and connections == ["127.0.0.1"]
    # the next fetch gets the second answer: refused before connecting
    assert _get(f"http://rebind.test:{image_server.port}/special/rebind.jpg")[1] == \
        "blocked_address: metadata"
    assert connections == ["127.0.0.1"]


def test_proxy_variables_do_not_route_the_fetch(image_server, connections, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://169.254.169.254:3128")
    data, error = _get(image_server.catalog["original"])
    assert error is None and data[:2] == b"\xff\xd8"
    assert connections == ["127.0.0.1"]


def test_a_huge_content_length_is_refused_unread(image_server, connections):
    url = image_server.route("/special/huge.jpg", headers={"Content-Length": str(2 << 30),
                                                            "Content-Type": "image/jpeg"})
    assert _get(url)[1] == "too_large: Content-Length"


def test_pixel_bombs_judged_from_the_header(image_server, connections):
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data)))

    def png_header(width, height):  # a header that claims the size, then almost no data
        return (b"\x89PNG\r\n\x1a\n" +
                chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    for name, body in [("wide", png_header(2**31 - 1, 1)), ("square", png_header(65535, 65535))]:
        url = image_server.route(f"/special/bomb-{name}.png", body=body,
                                 headers={"Content-Type": "image/png"})
        assert _get(url)[1] == "too_many_pixels: header"
