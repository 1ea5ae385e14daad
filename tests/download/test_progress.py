"""The download progress line, read from the shards' _stats.json files as img2dataset writes them,
and from the running shards' progress files."""

import json
import time

from wit_builder.download.progress import Progress


def _stats(folder, shard, ok, errors):
    status = {"success": ok, **errors}
    (folder / f"{shard:05d}_stats.json").write_text(json.dumps(
        {"count": ok + sum(errors.values()), "successes": ok, "status_dict": status}))


def test_line_counts_new_shards_rates_errors_and_eta(tmp_path):
    _stats(tmp_path, 0, 10, {})  # finished by an earlier run: counted as done, not in the rate
    lines = []
    with Progress(str(tmp_path), total_shards=4, total_images=40, interval=0.05,
                  log=lines.append):
        _stats(tmp_path, 1, 6, {"http_404: Not Found": 3, "timeout: total": 1})
        (tmp_path / "00002_stats.json").write_text('{"count": 1')  # half-written: skipped
        deadline = time.monotonic() + 10  # a busy machine may be slow to schedule the thread
        while not any("2/4" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert lines, "no progress line while the shards ran"
    last = next(line for line in reversed(lines) if "2/4" in line)
    assert last.startswith("download: 2/4 shards, ") and "images/s" in last
    assert "60.0% ok" in last and "top errors: http_404 3, timeout 1" in last
    assert "ETA " in last


def test_off_with_zero_interval(tmp_path):
    lines = []
    with Progress(str(tmp_path), total_shards=1, total_images=1, interval=0, log=lines.append):
        _stats(tmp_path, 0, 1, {})
    assert lines == []


def test_running_shards_count_before_any_finishes(tmp_path):
    """Issue 26: images/s, ok % and an ETA from the first interval, not "0 images/s"."""
    running = tmp_path / "_tmp" / "progress"
    running.mkdir(parents=True)
    lines = []
    with Progress(str(tmp_path), total_shards=2, total_images=2000, interval=0.05,
                  log=lines.append):
        (running / "0.json").write_text(json.dumps(
            {"count": 150, "successes": 120, "errors": {"http_404: Not Found": 30}}))
        deadline = time.monotonic() + 10
        while not any("80.0% ok" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    last = next(line for line in reversed(lines) if "80.0% ok" in line)
    assert last.startswith("download: 0/2 shards, ") and " 0 images/s" not in last
    assert "top errors: http_404 30" in last and "ETA " in last
