"""The training stream and the eval readers on small generated shards and files, bad ones included."""

import io
import logging
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_shards import write_shards  # noqa: E402

from wit_builder.clip.data import (ShardStream, expand_shards, iter_captions, make_loader,  # noqa: E402
                                   read_class_folders, read_tsv)
from wit_builder.clip.tokenizer import TextTokenizer, train_bpe  # noqa: E402
from wit_builder.errors import UserError  # noqa: E402

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def jpeg(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def good_samples(n, prefix="s"):
    names = list(COLOURS)
    return [{"__key__": f"{prefix}{i:04d}", "jpg": jpeg(COLOURS[names[i % 3]]),
             "txt": f"a {names[i % 3]} square"} for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer(train_bpe([f"a {c} square" for c in COLOURS] * 10, 300), context_length=8)


def test_stream_skips_corrupt_image_and_missing_caption_with_a_warning(tmp_path, tokenizer, caplog):
    samples = good_samples(10)
    samples[3]["jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    del samples[6]["txt"]
    urls = write_shards(samples, tmp_path)
    stream = ShardStream(urls, tokenizer, image_size=16, batch_size=8, shuffle_buffer=1, seed="t")
    with caplog.at_level(logging.WARNING, logger="wit_builder.clip.data"):
        batches = iter(stream)
        first, second = next(batches), next(batches)
    images, tokens = first
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8 and tokens.shape == (8, 8)
    # resampling repeats the one shard: 8 good samples per pass, never the two bad ones
    keys_seen = len(first[0]) + len(second[0])
    assert keys_seen == 16
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "not_an_image" in warning and "00000.tar:s0003" in warning  # refused by its header
    assert len(caplog.records) == 1  # rate-limited: later skips are counted, not printed


def test_missing_caption_is_named_in_the_warning(tmp_path, tokenizer, caplog):
    samples = good_samples(4)
    del samples[0]["txt"]
    urls = write_shards(samples, tmp_path)
    with caplog.at_level(logging.WARNING, logger="wit_builder.clip.data"):
        next(iter(ShardStream(urls, tokenizer, 16, 3, 1, "t")))
    assert "missing_caption" in caplog.text and "s0000" in caplog.text


def test_truncated_shard_is_skipped_and_the_stream_goes_on(tmp_path, tokenizer):
    good = write_shards(good_samples(6), tmp_path / "good")
    bad = write_shards(good_samples(6, prefix="b"), tmp_path / "bad")
    data = Path(bad[0]).read_bytes()
    Path(bad[0]).write_bytes(data[: len(data) // 2 + 100])
    batches = iter(ShardStream(good + bad, tokenizer, 16, 4, 1, "t"))
    assert all(next(batches)[0].shape[0] == 4 for _ in range(10))


def test_same_seed_same_batches_other_seed_other_order(tmp_path, tokenizer):
    urls = write_shards(good_samples(40), tmp_path, per_shard=10)

    def first_tokens(seed, workers):
        loader = make_loader(urls, tokenizer, 16, 8, workers, shuffle_buffer=20, seed=seed)
        it = iter(loader)
        return torch.cat([next(it)[1] for _ in range(4)])

    a = first_tokens("x", 0)
    assert torch.equal(a, first_tokens("x", 0))
    assert not torch.equal(a, first_tokens("y", 0))
    assert torch.equal(first_tokens("x", 2), first_tokens("x", 2))  # several workers: still exact


def test_shard_list_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="empty shard list"):
        expand_shards("")
    with pytest.raises(UserError, match="do not exist"):
        expand_shards(str(tmp_path / "{00000..00003}.tar"))
    urls = write_shards(good_samples(3), tmp_path)
    assert expand_shards(str(tmp_path / "{00000..00000}.tar")) == urls
    assert list(iter_captions(urls, limit=2)) == ["a red square", "a green square"]


def test_eval_readers(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg((1, 2, 3)))
    tsv = tmp_path / "captions.tsv"
    tsv.write_text('path\tcaption\textra\nimgs/a.jpg\ta "quoted" caption\tx\nimgs/a.jpg\tanother\ty\n')
    rows = read_tsv(tsv, "caption")
    assert rows == [(str(tmp_path / "imgs/a.jpg"), 'a "quoted" caption'), (str(tmp_path / "imgs/a.jpg"), "another")]
    with pytest.raises(UserError, match="lacks 'path' and 'label'"):
        read_tsv(tsv, "label")
    with pytest.raises(UserError, match="does not exist"):
        read_tsv(tmp_path / "nope.tsv", "label")
    for cls in ("cat", "dog"):
        (tmp_path / "folders" / cls).mkdir(parents=True)
        (tmp_path / "folders" / cls / "1.png").write_bytes(jpeg((0, 0, 0)))
    assert [label for _, label in read_class_folders(tmp_path / "folders")] == ["cat", "dog"]


def test_train_tokenizer_command_writes_a_tokenizer_the_trainer_can_load(tmp_path):
    from wit_builder.cli import main

    write_shards(good_samples(30), tmp_path / "shards")
    out = tmp_path / "tok" / "tokenizer.json"
    assert main(["train-tokenizer", "--shards", str(tmp_path / "shards" / "{00000..00000}.tar"),
                 "--out", str(out), "--vocab-size", "300"]) == 0
    tok = TextTokenizer.from_file(out, context_length=8)
    assert tok.vocab_size <= 300 and tok(["a blue square"])[0, 0] == tok.sot
