"""Download resume: which shards count as finished (issue 13, defect 6)."""

import json

from wit_builder.download.stage import _finished, _remove_unfinished


def test_a_cut_stats_file_is_an_unfinished_shard(tmp_path):
    for i in range(3):
        for ext in ("tar", "parquet"):
            (tmp_path / f"{i:05d}.{ext}").write_bytes(b"x")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 10, "successes": 9}))
    (tmp_path / "00001_stats.json").write_text('{"count": 10, "succ')  # killed while writing it
    (tmp_path / "_input").mkdir()
    assert _finished(str(tmp_path)) == {0}
    _remove_unfinished(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "_input"]
