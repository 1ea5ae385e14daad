"""finalize, score and stats on foreign WebDataset shards made to hurt them (issue 23 #2, #5,
#11, #14, #1, #15): a zero-length or absurd pax record, a gzip bomb member, a 0-byte and a cut
tar, member paths that climb out (`../../`, absolute), a repeated key, json that is a list or
has a numeric uid or numbers past int32, and a progressive-JPEG scan bomb. Each stage ends (a hang fails the test's
timeout) with every problem one counted drop under its reason."""

import json
import re
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile_tars import BAD_PAX, END, gzip_bomb_shard, jpeg, pax_shard, sample  # noqa: E402
from image_bombs import scan_bomb  # noqa: E402

from wit_builder import cli  # noqa: E402

EXPECTED_READER_DROPS = {"corrupt_member": 2, "oversized_member": 1, "corrupt_shard": 2}


def _foreign_shard() -> bytes:
    colours = iter([(i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(1, 20)])
    photo = lambda: jpeg((120, 100), next(colours))  # noqa: E731
    return (sample("../../escape", photo()) + sample("/etc/absolute", photo())
            + sample("000001", photo()) + sample("000002", photo(), meta=["a", "list"])
            + sample("000001", photo())  # the key again, after another sample: a second sample
            + sample("000003", photo(), meta={"uid": 5, "caption": "numeric uid"})
            + sample("000005", photo(), meta={"caption": "numbers past int32", "entry_ids": [1e30],
                                              "width": 1e30})
            + sample("000004", scan_bomb(4000, 4000, 20_000)) + END)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    shards = root / "shards"
    shards.mkdir()
    (shards / "00000.tar").write_bytes(pax_shard(BAD_PAX["zero_length"], before=4, after=4))
    (shards / "00001.tar").write_bytes(pax_shard(BAD_PAX["huge_size"], before=2, after=2))
    (shards / "00002.tar").write_bytes(gzip_bomb_shard(100_000_000))
    (shards / "00003.tar").write_bytes(b"")
    (shards / "00004.tar").write_bytes((sample("000000") + sample("000001"))[:3000])
    (shards / "00005.tar").write_bytes(_foreign_shard())
    return root


def _checkpoint(folder: Path) -> Path:
    """An untrained `tiny` CLIP checkpoint: the scores do not matter here, only that they come."""
    from wit_builder.clip import checkpoint
    from wit_builder.clip.model import CLIP, load_config
    from wit_builder.clip.tokenizer import TextTokenizer, train_bpe

    cfg = load_config("tiny")
    tokenizer = TextTokenizer(train_bpe(["a red square", "numeric uid"] * 10, 300), cfg.context_length)
    checkpoint.save(str(folder), {"model": CLIP(cfg).state_dict(), "model_config": cfg.to_dict(),
                                  "tokenizer": tokenizer.to_json(), "step": 0}, keep=0)
    return folder / checkpoint.LATEST


@pytest.mark.timeout(600)
def test_finalize_counts_every_hostile_member_and_ends(hostile, spark, capsys):
    assert cli.main(["finalize", "--input", str(hostile / "shards"), "--out", str(hostile / "out")]) == 0
    manifest = json.loads((hostile / "out" / "finalize" / "manifest.json").read_text())
    drops = manifest["drops"]
    assert {r: drops.get(r) for r in EXPECTED_READER_DROPS} == EXPECTED_READER_DROPS
    assert drops["too_many_scans"] == 1
    # 9 + 5 + 3 samples, the 0-byte and the cut tar one drop each, 8 foreign samples
    assert manifest["rows_in"] == 9 + 5 + 3 + 1 + 1 + 8 == manifest["rows_out"] + sum(drops.values())
    for tar in (hostile / "out" / "finalize").glob("*.tar"):
        with tarfile.open(tar) as t:
            assert all(re.fullmatch(r"\d{5,}\.(jpg|txt|json)", m.name) for m in t.getmembers())
    # stats reads the hostile tars (their headers; finalize's drops' thumbnails) without a traceback
    capsys.readouterr()
    assert cli.main(["stats", str(hostile / "shards"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert cli.main(["stats", str(hostile / "out" / "finalize"), "--html", str(hostile / "report.html")]) == 0


@pytest.mark.timeout(600)
def test_score_writes_only_our_keys_and_counts_every_hostile_member(hostile, spark):
    model = _checkpoint(hostile / "clip")
    assert cli.main(["score", "--input", str(hostile / "shards"), "--out", str(hostile / "out"),
                     "--model", str(model), "--min-score", "-1", "--device", "cpu"]) == 0
    stage = hostile / "out" / "score"
    manifest = json.loads((stage / "manifest.json").read_text())
    drops = manifest["drops"]
    assert {r: drops.get(r) for r in EXPECTED_READER_DROPS} == EXPECTED_READER_DROPS
    assert drops["undecodable_image"] == 1  # the scan bomb: refused before decoding
    assert manifest["rows_in"] == 9 + 5 + 3 + 1 + 1 + 8 == manifest["rows_out"] + sum(drops.values())
    foreign = stage / "00005.tar"
    with tarfile.open(foreign) as t:
        names = [m.name for m in t.getmembers()]
    keys = list(dict.fromkeys(n.split(".")[0] for n in names))
    assert all(re.fullmatch(r"00005\d{4}\.(jpg|txt|json)", n) for n in names), names
    assert len(keys) == 7  # every foreign sample but the bomb, the repeated key twice
    rows = pq.read_table(stage / "00005.parquet").to_pylist()
    assert [r["key"] for r in rows] == keys and all(r["clip_score"] is not None for r in rows)
    assert [r["uid"] for r in rows if r["text"] == "numeric uid"] == ["5"]
    assert [(r["entry_ids"], r["width"]) for r in rows if r["text"] == "numbers past int32"] == [(None, None)]
    # the report shows the extreme pairs, read back by position from the foreign shards
    assert cli.main(["stats", str(stage), "--html", str(hostile / "score.html")]) == 0


@pytest.mark.timeout(300)
def test_score_with_an_unreadable_checkpoint_is_one_error_line(hostile, spark, capsys):
    (hostile / "junk.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["score", "--input", str(hostile / "shards"), "--out", str(hostile / "junk_out"),
                     "--model", str(hostile / "junk.pt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and "cannot read checkpoint" in err
