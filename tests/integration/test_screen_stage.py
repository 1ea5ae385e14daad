"""The screen stage on a real download: the 1,000 shared photos and 150 altered copies of 50 of
them fetched from the loopback server, then `wit-builder screen` with a hash list of those 50.

The thresholds are the defaults, chosen from measurement on the 1,000 photos (each photo's
hashes against its own altered copy, and against every other photo):

| copy                    | PDQ distance (median / 98% / max) | pHash distance (median / 98% / max) |
| JPEG quality 60         | 2 / 6 / 10                        | 0 / 2 / 4                           |
| resized to half         | 22 / 36 / 42                      | 0 / 4 / 6                           |
| cropped by 5% (2.5%/side)| 42 / 58 / 72                     | 4 / 10 / 14                         |
| nearest other photo     | min 76                            | min 12                              |

So PDQ at Meta's 31 catches the re-encoded and most resized copies and no crop; pHash at 10
catches all three (98-100%) and stays 2 bits clear of the nearest distinct photo.
"""

import hashlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from wit_builder import pipeline
from wit_builder.cli import main
from wit_builder.config import load_config
from wit_builder.screen import hashes, nsfw

LISTED = 50
KINDS = ("q60", "half", "crop5")
SETTINGS = ["download.allow_networks=127.0.0.0/8", "download.samples_per_shard=200",
            "download.timeout=5", "download.total_timeout=10"]


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _altered(data: bytes) -> dict[str, bytes]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return {"q60": _jpeg(img, 60),
            "half": _jpeg(img.resize((w // 2, h // 2), Image.LANCZOS), 90),
            "crop5": _jpeg(img.crop((dx, dy, w - dx, h - dy)), 90)}


@pytest.fixture(scope="module")
def screened(spark, image_server, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("screen")
    photos = sorted((shared_data / "images" / "flickr8k_dev").glob("*/*.jpg"), key=lambda p: p.name)
    listed = [p for p in photos if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 20 == 0][:LISTED]
    served = root / "served"
    lines = ["# known-bad test hashes: PDQ then pHash of each listed photo"]
    urls = {image_server.url(f"/flickr/{p.parent.name}/{p.name}"): ("original", p.name) for p in photos}
    for p in listed:
        data = p.read_bytes()
        lines += [hashes.pdq_of(np.asarray(Image.open(p).convert("RGB"))), hashes.phash_of(data)]
        for kind, altered in _altered(data).items():
            (served / kind).mkdir(parents=True, exist_ok=True)
            (served / kind / p.name).write_bytes(altered)
            urls[image_server.url(f"/screen-altered/{kind}/{p.name}")] = (kind, p.name)
    image_server.mounts["/screen-altered/"] = served
    hash_list = root / "known_bad.txt"
    hash_list.write_text("\n".join(lines) + "\n")
    candidates = root / "candidates.csv"
    candidates.write_text("url,text\n" + "".join(f"{u},photo {i}\n" for i, u in enumerate(urls)))

    out = root / "out"
    download = pipeline.execute("download", spark, load_config(None, SETTINGS), [str(candidates)],
                                str(out)).manifest
    assert download["rows_out"] == len(urls) == 1150
    args = ["screen", "--input", str(out / "download"), "--out", str(out),
            "--set", f"screen.hash_lists={hash_list}"]
    assert main(args) == 0
    manifest = json.loads((out / "screen" / "manifest.json").read_text())
    by_uid = {}
    for f in sorted((out / "download").glob("*.parquet")):
        for row in pq.read_table(f, columns=["uid", "url"]).to_pylist():
            by_uid[row["uid"]] = urls[row["url"]]
    drops = [r for f in sorted((out / "screen" / "drops").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()]
    kept = [r for f in sorted((out / "screen").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return {"out": out, "args": args, "manifest": manifest, "by_uid": by_uid, "drops": drops,
            "kept": kept, "listed": {p.name for p in listed}, "listed_paths": listed,
            "hash_list": hash_list, "lines": lines[1:]}


def test_every_sample_is_accounted_for(screened):
    m = screened["manifest"]
    assert m["rows_in"] == 1150 == m["rows_out"] + sum(m["drops"].values())
    assert len(screened["kept"]) == m["rows_out"] and len(screened["drops"]) == sum(m["drops"].values())
    tars = sorted((screened["out"] / "screen").glob("*.tar"))
    sizes = json.loads((screened["out"] / "screen" / "sizes.json").read_text())
    assert sum(sizes.values()) == m["rows_out"] and len(tars) == len(sizes) == 6


def test_listed_photos_and_their_altered_copies_are_dropped(screened):
    dropped = {}
    for row in screened["drops"]:
        kind, name = screened["by_uid"][row["uid"]]
        assert row["reason"] == "blocklisted"
        dropped.setdefault(kind, set()).add(name)
    listed = screened["listed"]
    shares = {kind: len(dropped.get(kind, set()) & listed) / LISTED for kind in ("original",) + KINDS}
    print(f"hash list drop shares: {shares}")
    assert all(share >= 0.98 for share in shares.values()), shares
    assert dropped["original"] <= listed  # none of the 950 other photos: no false positive
    assert screened["manifest"]["screen"]["blocklisted"] == {"known_bad.txt": len(screened["drops"])}


def test_kept_samples_store_their_hashes_scores_and_faces(screened):
    lists = hashes.load_lists([str(screened["hash_list"])])
    for row in screened["kept"]:
        assert len(row["pdq"]) == 64 and len(row["download_phash"]) == 16
        assert hashes.listed_in(lists, row["pdq"], row["download_phash"], 31, 10) is None
        assert 0 <= row["nsfw_score"] <= 1
        assert row["faces"]["count"] == len(row["faces"]["boxes"])
    faces = screened["manifest"]["screen"]["faces"]
    assert faces["found"] == sum(r["faces"]["count"] for r in screened["kept"]) > 0
    assert faces["blurred_samples"] == sum(r["faces"]["count"] > 0 for r in screened["kept"])


def test_nsfw_false_positive_share_of_the_shared_photos(screened):
    """None of the 1,000 shared photos is NSFW: each one above the default threshold (0.5) is a
    false positive. The 950 kept ones are scored by the stage; the 50 listed ones, dropped
    before the model runs, here. Measured: 1 of 1,000 (0.1%)."""
    threshold = screened["manifest"]["screen"]["nsfw"]["threshold"]
    kept = [r["nsfw_score"] for r in screened["kept"] if screened["by_uid"][r["uid"]][0] == "original"]
    listed = nsfw.detector().scores([np.asarray(Image.open(p).convert("RGB"))
                                     for p in screened["listed_paths"]])
    scores = kept + listed
    above = sum(s > threshold for s in scores)
    print(f"nsfw false positives: {above} of {len(scores)} shared photos above {threshold}")
    assert len(scores) == 1000 and above / len(scores) <= 0.005


def test_the_log_names_the_list_and_its_count_never_a_hash(screened, capsys):
    """Rerun with --force (it recounts the finished shards) and read what it prints."""
    assert main(screened["args"] + ["--force"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert f"hash list known_bad.txt: {len(screened['drops'])} samples removed" in text
    assert not any(h in text for h in screened["lines"])


def test_an_interrupted_run_resumes_by_shard(screened):
    folder = screened["out"] / "screen"
    (folder / "_SUCCESS").unlink()
    (folder / "00003_stats.json").unlink()  # shard 3 was being written when the run stopped
    (folder / "00003.tar").write_bytes(b"cut")
    assert main(screened["args"]) == 0
    again = json.loads((folder / "manifest.json").read_text())
    assert (again["screened_shards"], again["resumed_shards"]) == (1, 5)
    assert (again["rows_in"], again["rows_out"], again["drops"]) == (
        screened["manifest"]["rows_in"], screened["manifest"]["rows_out"],
        screened["manifest"]["drops"])


def test_run_screens_when_enabled_or_when_out_holds_a_screened_output(screened, tmp_path):
    """`run` passes over screen unless [screen] enabled, or unless OUT/screen exists: then it
    runs it (up to date, skipped) and finalize reads the screened shards."""
    from wit_builder.registry import DATA

    names = list(DATA)
    off = load_config(None, [])
    assert "screen" not in pipeline.wanted(off, names, None, str(tmp_path))
    assert "screen" in pipeline.wanted(load_config(None, ["screen.enabled=true"]), names)
    chain = pipeline.wanted(off, names, None, str(screened["out"]))
    assert chain[chain.index("download") + 1:chain.index("finalize")] == ["screen"]
