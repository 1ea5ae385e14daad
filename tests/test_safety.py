"""Network rules: schemes, address classes (IPv4, IPv6, embedded IPv4), the CIDR allow list."""

import socket
import sys
from pathlib import Path

import pytest

from wit_builder.safety import (Refused, address_problem, parse_networks,
                                         resolve_checked, split_url)
from wit_builder.errors import UserError

LOOPBACK_ONLY = parse_networks(["127.0.0.0/8"])


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.169.253", "link-local"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "non-global"),  # carrier-grade NAT
    ("255.255.255.255", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:a9fe:a9fe", "metadata"),
    ("2002:a00:1::1", "private"),  # 6to4 wrapping 10.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1: the embedded address is judged
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    ("64:ff9b:1::a00:1", "private"),  # local-use NAT64 (RFC 8215), judged as 10.0.0.1
    ("fec0::1", "site-local"),
    ("192.0.0.8", "non-global"),  # IETF protocol assignments
    ("192.88.99.1", "non-global"),  # 6to4 relay anycast
    ("3fff::1", "non-global"),  # documentation
    ("2001:db8::1", "private"),
    ("198.18.0.1", "private"),  # benchmarking
    ("8.8.8.8", None),
    ("93.184.216.34", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),
])
def test_address_classes(address, problem):
    assert address_problem(address) == problem


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.170.2", "fd00:ec2::254",
                                     "fd20:ce::254", "168.63.129.16", "100.100.100.200",
                                     "192.0.0.192"])
def test_cloud_metadata_refused_even_inside_the_allow_list(address):
    everything = parse_networks(["0.0.0.0/0", "::/0"])
    assert address_problem(address) == "metadata"
    assert address_problem(address, everything) == "metadata"


@pytest.mark.parametrize("address", ["64:ff9b:1::a9fe:a9fe", "::a9fe:a9fe", "::169.254.169.254",
                                     "64:ff9b:1:0:0:0:a9fe:a9fe"])
def test_metadata_spellings_refused_inside_a_broad_allow_list(address):
    """Issue 23 #17: local-use NAT64 and IPv4-compatible spellings of 169.254.169.254."""
    everything = parse_networks(["0.0.0.0/0", "::/0"])
    assert address_problem(address, everything) == "metadata"


def test_site_local_refused_inside_a_broad_allow_list():
    assert address_problem("fec0::1", parse_networks(["::/0"])) == "site-local"
    assert address_problem("fec0:0:0:ffff::1", parse_networks(["fec0::/10"])) == "site-local"


def test_allow_list_exempts_only_its_ranges():
    assert address_problem("127.0.0.1", LOOPBACK_ONLY) is None
    assert address_problem("127.255.0.9", LOOPBACK_ONLY) is None
    assert address_problem("::ffff:127.0.0.1", LOOPBACK_ONLY) is None  # mapped: judged as IPv4
    assert address_problem("10.0.0.1", LOOPBACK_ONLY) == "private"
    assert address_problem("169.254.1.1", LOOPBACK_ONLY) == "link-local"
    assert address_problem("64:ff9b::7f00:1", LOOPBACK_ONLY) is None  # NAT64: judged as IPv4
    assert address_problem("::1", LOOPBACK_ONLY) == "loopback"  # an IPv4 range says nothing of ::1
    v6 = parse_networks(["fd00::/8", "10.1.0.0/16"])
    assert address_problem("fd12::5", v6) is None
    assert address_problem("10.1.2.3", v6) is None
    assert address_problem("10.2.0.1", v6) == "private"


def test_bad_cidr_is_a_user_error():
    with pytest.raises(UserError, match="allow_networks"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(UserError):
        parse_networks(["localhost"])
    assert parse_networks(["10.0.0.1/8"])[0].prefixlen == 8  # host bits allowed


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/a.jpg", "bad_scheme"),
    ("file:///etc/passwd", "bad_scheme"),
    ("gopher://example.com/", "bad_scheme"),
    ("data:image/png;base64,AAAA", "bad_scheme"),
    ("javascript:alert(1)", "bad_scheme"),
    ("//example.com/a.jpg", "bad_scheme"),
    ("example.com/a.jpg", "bad_scheme"),
    ("http://", "bad_url"),
    ("http://[::1/a.jpg", "bad_url"),
    ("http://example.com:99999/a.jpg", "bad_url"),
    (None, "bad_url"),
])
def test_refused_urls(url, reason):
    with pytest.raises(Refused) as info:
        split_url(url)
    assert info.value.reason == reason


def test_accepted_urls():
    assert split_url("HTTPS://Example.com/a.jpg") == ("https", "example.com", 443)
    assert split_url("http://example.com:8080/a.jpg?x=1") == ("http", "example.com", 8080)
    assert split_url("http://[2001:db8::1]/a.jpg") == ("http", "2001:db8::1", 80)


def _fake_dns(monkeypatch, addresses):
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_every_resolved_address_is_checked(monkeypatch):
    _fake_dns(monkeypatch, ["93.184.216.34", "10.0.0.7"])  # DNS-rebinding shape
    with pytest.raises(Refused) as info:
        resolve_checked("rebind.example", 80)
    assert (info.value.reason, info.value.detail) == ("blocked_address", "private")
    _fake_dns(monkeypatch, ["93.184.216.34", "2001:4860:4860::8888"])
    targets = resolve_checked("ok.example", 443)
    assert [sockaddr[0] for _, sockaddr in targets] == ["93.184.216.34", "2001:4860:4860::8888"]


def test_dns_failure_is_a_refusal(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(Refused) as info:
        resolve_checked("nowhere.invalid", 80)
    assert info.value.reason == "dns_error"


def test_literal_addresses_resolve_without_dns(monkeypatch):
    asked = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for host in ("169.254.169.254", "::ffff:169.254.169.254"):
        with pytest.raises(Refused) as info:
            resolve_checked(host, 80)
        assert info.value.detail == "metadata"
    assert resolve_checked("127.0.0.1", 8080, LOOPBACK_ONLY) == [
        (socket.AF_INET, ("127.0.0.1", 8080))]
    assert resolve_checked("::1", 8080, parse_networks(["::1/128"])) == [
        (socket.AF_INET6, ("::1", 8080, 0, 0))]
    assert asked == []  # no resolver thread, and the same answer getaddrinfo gives
    assert resolve_checked("127.0.0.1", 8080, LOOPBACK_ONLY) == [
        (family, sockaddr) for family, _, _, _, sockaddr in
        real("127.0.0.1", 8080, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)]
    # other spellings of an address are getaddrinfo's to read, and checked all the same
    with pytest.raises(Refused) as info:
        resolve_checked("2852039166", 80)
    assert info.value.detail == "metadata" and asked == ["2852039166"]


# --- inputs: a crawl listing must not make extract read internal services -------------------

def _internal_urls(listeners):
    (v4, port4), (v6, port6) = listeners
    return [f"http://{v4}:{port4}/latest/meta-data/iam?x=.jsonl",
            f"http://[{v6}]:{port6}/internal/admin?x=.warc.gz"]


def test_listing_entries_on_internal_hosts_are_refused(internal_listeners, tmp_path):
    from wit_builder.extract.plan import plan_files as plan

    listing = tmp_path / "crawl.paths"
    listing.write_text("\n".join(_internal_urls(internal_listeners)) + "\n")
    with pytest.raises(UserError, match=r"refusing input http://127\.0\.0\.2:\d+/latest.*"
                                        r"blocked_address: loopback"):
        plan([str(listing)])
    listing.write_text(_internal_urls(internal_listeners)[1] + "\n")
    with pytest.raises(UserError, match=r"refusing input http://\[::1\].*loopback"):
        plan([str(listing)])
    # allow_networks opens them, as for download (planning reads nothing from them)
    allowed = parse_networks(["127.0.0.0/8", "::1/128"])
    listing.write_text("\n".join(_internal_urls(internal_listeners)) + "\n")
    assert [f.format for f in plan([str(listing)], allowed=allowed)] == ["jsonl", "warc"]


@pytest.mark.parametrize("path, refused", [
    ("http://169.254.169.254/latest/meta-data/x.jsonl", "metadata"),
    ("https://10.1.2.3/crawl.warc.gz", "private"),
    ("ftp://example.com/crawl.warc.gz", "bad_scheme"),
    ("simplecache::http://169.254.169.254/x.warc", "bad_scheme"),
    ("s3://commoncrawl/crawl-data/x.warc.gz", None),
    ("gs://bucket/x.parquet", None),
    ("/data/x.warc.gz", None),
    ("file:///data/x.warc.gz", None),
])
def test_input_schemes_and_addresses(path, refused):
    from wit_builder.safety import check_inputs

    if refused is None:
        check_inputs([path])
        return
    with pytest.raises(UserError, match=refused):
        check_inputs([path])


def test_an_http_input_that_redirects_is_not_followed(internal_listeners):
    """An allowed input host cannot send extract on to a host that was never checked."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from image_server import ImageServer
    from wit_builder import storage

    (v4, port), _ = internal_listeners
    server = ImageServer().start()
    try:
        hop = server.route("/crawl.jsonl", status=302,
                           headers={"Location": f"http://{v4}:{port}/latest/meta-data.jsonl"})
        with storage.networks(parse_networks(["127.0.0.1/32"])):  # the server, not 127.0.0.2
            with pytest.raises(UserError, match=r"redirects to .*127\.0\.0\.2.*\(not followed"):
                storage.exists(hop)
            with pytest.raises(FileNotFoundError):  # inside a task: a counted missing file
                storage.open_file(hop)
            with storage.open_file(server.route("/ok.jsonl", body=b"{}\n")) as f:
                assert f.read() == b"{}\n"
    finally:
        server.stop()
