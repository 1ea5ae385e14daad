"""The download engine on one shard, against loopback sites that count what it does to them:
connections per host, Crawl-delay, Retry-After, a redirect on a kept-alive connection, and a
scan bomb among real photos. No Spark: engine.download_shards is what each Spark task runs."""

import json
import socket
import tarfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from image_bombs import scan_bomb
from polite_server import PoliteServer, Site
from wit_builder.config import load_config
from wit_builder import per_process
from wit_builder.download import engine
from wit_builder.download.shards import COLUMN_LIST, Piece


def _shard(tmp_path, urls, *settings):
    """Run one shard of `urls`; (its _stats.json, its Parquet rows by url)."""
    section = load_config(None, ["download.allow_networks=127.0.0.0/8", "download.timeout=5",
                                 "download.total_timeout=10", *settings]).download
    columns = {c: [None] * len(urls) for c in COLUMN_LIST}
    columns.update(url=urls, caption=[f"photo {i}" for i in range(len(urls))],
                   uid=[str(i) for i in range(len(urls))])
    table = pa.table({c: pa.array(v, pa.list_(pa.int32()) if c == "entry_ids" else
                                  pa.list_(pa.string()) if c == "entries" else pa.string())
                      for c, v in columns.items()})
    feather = tmp_path / "0.feather"
    with pa.ipc.new_file(str(feather), table.schema) as writer:
        writer.write_table(table)
    out = tmp_path / "out"
    out.mkdir()
    engine.download_shards(section, str(out), COLUMN_LIST,
                           [Piece(0, str(feather), 0, len(urls), str(out))])
    stats = json.loads((out / "00000_stats.json").read_text())
    rows = pq.read_table(out / "00000.parquet").to_pylist()
    assert stats["count"] == len(urls) == len(rows)  # every URL accounted for
    return stats, {row["url"]: row for row in rows}


@pytest.fixture
def photo(shared_data):
    return sorted((shared_data / "images/flickr8k_dev/train").glob("*.jpg"))[0].read_bytes()


@pytest.fixture
def sites():
    servers = []

    def make(*sites):
        servers.append(PoliteServer(list(sites)))
        return servers[-1]
    yield make
    for server in servers:
        server.stop()


def test_connections_per_host_are_capped(tmp_path, photo, sites):
    server = sites(*[Site(photo, delay=0.1) for _ in range(3)])
    urls = [u for i in range(3) for u in server.urls(i, 30)]
    stats, _ = _shard(tmp_path, urls, "download.connections_per_host=3",
                      "download.in_flight=64")
    assert stats["successes"] == 90
    assert [site.most_open for site in server.sites] == [3, 3, 3]  # the cap, reached, per host
    # kept alive: far fewer connections than requests (the 3 per host, and robots.txt's)
    assert all(len(site.starts) == 30 for site in server.sites)


def test_crawl_delay_is_kept_between_requests(tmp_path, photo, sites):
    server = sites(Site(photo, robots="User-agent: *\nCrawl-delay: 0.4\n"), Site(photo))
    stats, _ = _shard(tmp_path, server.urls(0, 6) + server.urls(1, 6))
    assert stats["successes"] == 12
    gaps = [b - a for a, b in zip(server.sites[0].starts, server.sites[0].starts[1:])]
    assert len(gaps) == 5 and all(0.36 <= gap <= 0.6 for gap in gaps), gaps  # 0.4 s, within 10%
    # the other host has no delay: it is not held back by the first one
    undelayed = server.sites[1].starts
    assert undelayed[-1] - undelayed[0] < 0.4


def test_a_crawl_delay_beyond_the_limit_skips_the_host(tmp_path, photo, sites):
    server = sites(Site(photo, robots="User-agent: *\nCrawl-delay: 3600\n"))
    stats, rows = _shard(tmp_path, server.urls(0, 3))
    assert stats["status_dict"] == {"robots_txt: crawl_delay": 3}
    assert server.sites[0].starts == []  # no image was asked for


def test_retry_after_backs_the_host_off(tmp_path, photo, sites):
    server = sites(Site(photo, busy=1, retry_after=1))
    stats, rows = _shard(tmp_path, server.urls(0, 5), "download.retries=1",
                         "download.connections_per_host=1")
    starts = server.sites[0].starts
    assert server.sites[0].answers.count(429) == 1 and stats["host_backoffs"] == 1
    assert starts[1] - starts[0] >= 0.95  # nothing asked until Retry-After passed
    assert stats["successes"] == 5  # the refused URL was retried after the pause


def test_a_kept_alive_connection_cannot_redirect_to_a_forbidden_address(
        tmp_path, photo, sites, connections):
    server = sites(Site(photo, redirects={"/away.jpg": "http://169.254.169.254/latest/"}))
    first, second = server.urls(0, 2)
    away = first.replace("/photo.jpg?i=0", "/away.jpg")
    stats, rows = _shard(tmp_path, [first, away, second], "download.connections_per_host=1",
                         "download.honor_robots_txt=false")
    assert rows[away]["error_message"] == "blocked_address: metadata"
    assert stats["successes"] == 2
    assert connections == ["127.0.0.1"]  # one connection, kept alive; no other ever made


def test_a_scan_bomb_among_photos_ends_within_the_deadline(tmp_path, shared_data, image_server):
    bomb = scan_bomb(4000, 4000, 3000)
    image_server.route("/bombs/scans.jpg", headers={"Content-Type": "image/jpeg"}, body=bomb)
    image_server.route("/bombs/scans-open.jpg", headers={"Content-Type": "image/jpeg"},
                       body=scan_bomb(4000, 4000, 3000, end_marker=False))
    urls = image_server.photo_urls[:10] + [image_server.url("/bombs/scans.jpg"),
                                          image_server.url("/bombs/scans-open.jpg")]
    started = time.monotonic()
    stats, rows = _shard(tmp_path, urls, "download.total_timeout=5")
    assert time.monotonic() - started < 5 + 3
    assert stats["successes"] == 10
    assert {rows[u]["error_message"] for u in urls[10:]} == {"too_many_scans: JPEG"}



def test_3000_urls_with_trickling_and_resetting_servers(spark, tmp_path, photo, sites):
    """The download stage on 3,000 URLs over 10 hosts, 5% of them trickling one byte every
    0.2 s and 5% resetting the connection: it ends within the deadlines, every URL counted."""
    from wit_builder import pipeline

    server = sites(*[Site(photo) for _ in range(10)])
    urls = [u for i in range(10) for u in server.urls(i, 300)]
    kinds = ["trickle" if i % 20 == 0 else "reset" if i % 20 == 1 else "" for i in range(3000)]
    urls = [f"{u}&kind={k}" if k else u for u, k in zip(urls, kinds)]
    candidates = tmp_path / "candidates.parquet"
    pq.write_table(pa.table({"url": urls, "text": [f"photo {i}" for i in range(3000)]}),
                   candidates)
    cfg = load_config(None, ["download.allow_networks=127.0.0.0/8", "download.timeout=5",
                             "download.total_timeout=3", "download.samples_per_shard=1000"])
    started = time.monotonic()
    manifest = pipeline.execute("download", spark, cfg, [str(candidates)],
                                str(tmp_path / "out")).manifest
    # each host: 15 trickles of 3 s on 8 connections, per shard, besides the photos
    assert time.monotonic() - started < 60
    assert manifest["rows_in"] == 3000
    assert manifest["rows_out"] == 2700
    assert manifest["drops"] == {"timeout": 150, "connection_error": 150}


def test_slow_dns_does_not_starve_quick_names(tmp_path, photo, sites, monkeypatch):
    """Issue 23 #10: 100 names whose lookups hang hold no thread that 50 quick names need."""
    server = sites(Site(photo))
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host.startswith("slow-"):
            time.sleep(4)
            raise socket.gaierror("too late")
        if host.startswith("quick-"):
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    per_process.forget("resolver threads")  # a pool of its own (64 threads starved)
    slow = [f"http://slow-{i}.test:{server.port}/photo.jpg" for i in range(100)]
    quick = [f"http://quick-{i}.test:{server.port}/photo.jpg?i={i}" for i in range(50)]
    stats, rows = _shard(tmp_path, slow + quick, "download.timeout=1",
                         "download.total_timeout=2")
    assert stats["successes"] == 50
    assert {rows[u]["error_message"] for u in slow} == {"timeout: dns"}


def test_a_task_runs_its_shards_back_to_back(tmp_path, photo, sites):
    """The next shard starts while the slowest answer of the one before is still coming, and
    an empty shard in between is finished too."""
    server = sites(Site(photo), Site(photo, delay=2.0))
    section = load_config(None, ["download.allow_networks=127.0.0.0/8",
                                 "download.samples_per_shard=10"]).download
    out = tmp_path / "out"
    out.mkdir()
    shards = []
    for shard_id, urls in enumerate([server.urls(0, 9) + server.urls(1, 1), [],
                                     server.urls(0, 10)]):
        columns = {c: pa.array([None] * len(urls), pa.string()) for c in COLUMN_LIST}
        columns.update(url=pa.array(urls, pa.string()), caption=pa.array(urls, pa.string()),
                       entry_ids=pa.array([None] * len(urls), pa.list_(pa.int32())),
                       entries=pa.array([None] * len(urls), pa.list_(pa.string())))
        table = pa.table(columns)
        feather = str(tmp_path / f"{shard_id}.feather")
        with pa.ipc.new_file(feather, table.schema) as writer:
            writer.write_table(table)
        shards.append(Piece(shard_id, feather, 0, len(urls), str(out)))
    engine.download_shards(section, str(out), COLUMN_LIST, shards)
    stats = [json.loads((out / f"0000{i}_stats.json").read_text()) for i in range(3)]
    assert [s["successes"] for s in stats] == [10, 0, 10] and stats[1]["count"] == 0
    assert stats[2]["start_time"] < stats[0]["end_time"]  # overlapped the slow answer


def test_a_local_download_runs_its_tasks_as_processes_without_a_jvm(tmp_path, photo, sites):
    """With a local master the CLI deals the shards to local processes: the stage starts no
    Spark session, and gives what the Spark path gives (test_download.py)."""
    from wit_builder.cli import main

    server = sites(Site(photo), Site(photo))
    urls = server.urls(0, 15) + server.urls(1, 15)
    candidates = tmp_path / "candidates.parquet"
    pq.write_table(pa.table({"url": urls, "text": [f"photo {i}" for i in range(30)]}),
                   candidates)
    out = tmp_path / "out"
    assert main(["download", "--input", str(candidates), "--out", str(out), "--master",
                 "local[2]", "--set", "download.allow_networks=127.0.0.0/8",
                 "--set", "download.samples_per_shard=10"]) in (0, None)
    manifest = json.loads((out / "download" / "manifest.json").read_text())
    assert manifest["rows_out"] == 30 and manifest["shards"] == 3
    assert manifest["spark_jobs"] == 0
    assert sorted(p.name for p in (out / "download").glob("*_stats.json")) == [
        "00000_stats.json", "00001_stats.json", "00002_stats.json"]
    # 3 shards on 2 processes: 15 rows each, shard 1 downloaded in two parts and joined
    for shard in range(3):
        stem = out / "download" / f"0000{shard}"
        keys = {f"{10 * shard + i:06d}" for i in range(10)}
        with tarfile.open(f"{stem}.tar") as tar:
            names = tar.getnames()
        assert sorted(names) == sorted(f"{k}.{e}" for k in keys for e in ("jpg", "json", "txt"))
        rows = pq.read_table(f"{stem}.parquet").to_pylist()
        assert {r["key"] for r in rows} == keys and {r["status"] for r in rows} == {"success"}
        stats = json.loads(stem.with_name(stem.name + "_stats.json").read_text())
        assert stats["count"] == stats["successes"] == 10
        assert sum(stats["status_dict"].values()) == 10
    assert not (out / "download" / "_tmp").exists()


def test_a_kept_alive_connection_does_not_wait_for_delayed_acks(tmp_path, photo, sites):
    """A server that writes headers and body apart (behind Nagle's algorithm) would wait for
    our delayed ACK on every kept-alive request: 40 ms an image (fetch.QuickAckSocket)."""
    server = sites(Site(photo))
    started = time.monotonic()
    stats, _ = _shard(tmp_path, server.urls(0, 30), "download.connections_per_host=1",
                      "download.in_flight=1", "download.honor_robots_txt=false")
    assert stats["successes"] == 30
    assert time.monotonic() - started < 0.9  # 30 x 40 ms = 1.2 s of stalls without it


def test_a_run_refused_for_one_reason_says_what_to_change(tmp_path, photo, sites, capsys):
    """Issue 25: loopback URLs without allow_networks were 100% blocked_address, silently."""
    from wit_builder.cli import main

    server = sites(Site(photo))
    candidates = tmp_path / "candidates.parquet"
    pq.write_table(pa.table({"url": server.urls(0, 4), "text": ["a photo"] * 4}), candidates)
    assert main(["download", "--input", str(candidates), "--out", str(tmp_path / "out"),
                 "--master", "local[2]"]) in (0, None)
    said = capsys.readouterr()
    assert "100% of the rows were dropped as blocked_address" in said.out + said.err
    assert "download.allow_networks" in said.out + said.err
    assert server.sites[0].starts == []  # and nothing was asked of the server


def test_bodies_held_stay_within_the_byte_budget(tmp_path, photo, sites, monkeypatch):
    """Issue 26: what the servers send cannot grow the bodies held past max_bytes_in_flight
    (one body may go past it alone); every URL still completes."""
    from wit_builder.download import fetch

    most = []
    real_take = fetch.ByteBudget.take

    async def take(self, n):
        await real_take(self, n)
        most.append(self.used)
    monkeypatch.setattr(fetch.ByteBudget, "take", take)
    server = sites(*[Site(photo, delay=0.05) for _ in range(4)])
    budget = 3 * len(photo)
    stats, _ = _shard(tmp_path, [u for i in range(4) for u in server.urls(i, 10)],
                      f"download.max_bytes_in_flight={budget}", "download.in_flight=64")
    assert stats["successes"] == 40
    assert max(most) > budget - len(photo)  # the budget was reached: bodies waited for it
    assert max(most) <= budget
