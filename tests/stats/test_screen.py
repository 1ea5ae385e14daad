"""The report on a screened folder: the hash lists' counts, the NSFW histogram and counts, faces;
and never the image of a sample scored above the NSFW threshold."""

import json

import pytest

from shard_maker import sample, write_shards
from wit_builder import pipeline
from wit_builder.config import load_config
from wit_builder.screen.hashes import phash_of
from wit_builder.shard.tars import TarWriter, read_samples
from wit_builder.stats.collect import collect
from wit_builder.stats.report import render_html

HIGH = 0.93  # no shared photo scores this: the test data holds no NSFW image, one is marked so


@pytest.fixture(scope="module")
def screened(spark, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("screen-report")
    photos = sorted((shared_data / "images" / "flickr8k_dev" / "val").glob("*.jpg"))[:8]
    write_shards(root / "download", [sample(p.name, p.read_bytes(), f"photo {i}", [i])
                                     for i, p in enumerate(photos)], per_shard=8)
    listed = root / "listed.txt"
    listed.write_text(phash_of(photos[0].read_bytes()) + "\n")
    cfg = load_config(None, [f"screen.hash_lists={listed}"])
    run = pipeline.execute("screen", spark, cfg, [str(root / "download")], str(root), log=print)
    tar = root / "screen" / "00000.tar"
    samples = list(read_samples(str(tar)))
    marked = samples[0].key
    with open(tar, "wb") as raw:  # mark the first kept sample as scored above the threshold
        writer = TarWriter(raw)
        for s in samples:
            meta = json.loads(s.files["json"])
            if s.key == marked:
                meta["nsfw_score"] = HIGH
            writer.write({"__key__": s.key, **{k: v for k, v in s.files.items() if k != "json"},
                          "json": json.dumps(meta)})
        writer.close()
    return {"root": root, "manifest": run.manifest, "marked": marked}


def test_every_card_but_the_marked_one_shows_its_image(screened):
    stats = collect(str(screened["root"]), samples=20)
    cards = {c["key"]: c for c in stats["stages"]["screen"]["samples"]}
    assert len(cards) == 7  # 8 photos, one on the hash list
    marked = cards[screened["marked"]]
    assert marked["thumb"] is None and f"nsfw_score {HIGH:.2f} > 0.5" in marked["hidden"]
    assert all(c["thumb"] for k, c in cards.items() if k != screened["marked"])
    html = render_html(stats)
    assert f"image not shown: nsfw_score {HIGH:.2f} &gt; 0.5" in html
    assert html.count("<img") >= 6 + 1  # six thumbnails and at least the NSFW histogram


def test_the_screen_section_counts_lists_scores_and_faces(screened):
    stats = collect(str(screened["root"]))
    html = render_html(stats)
    nsfw = screened["manifest"]["screen"]["nsfw"]
    assert sum(nsfw["histogram"]["counts"]) == nsfw["scored"] == 7
    assert "listed.txt: 1 removed" in html and "NSFW score distribution" in html
    assert f"7 scored (NudeNet 320n); {nsfw['above_threshold']} above 0.5" in html
    faces = screened["manifest"]["screen"]["faces"]
    assert f"{faces['found']} found in {faces['samples_with_faces']} samples" in html
