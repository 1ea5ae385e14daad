"""CLIP model pieces: configs, shapes, the end-of-text feature, the loss, the tokenizer, transforms."""

import gzip
import math
import random

import pytest
import torch
from PIL import Image

from wit_builder.clip.model import CLIP, clip_loss, config_from_dict, load_config, model_names
from wit_builder.clip.tokenizer import EOT, SOT, TextTokenizer, load_clip_bpe, train_bpe
from wit_builder.clip.train import make_optimizer, TrainConfig, warmup_cosine
from wit_builder.clip.transforms import center_crop, eval_pixels, normalize, open_rgb, random_resized_crop
from wit_builder.errors import UserError

CAPTIONS = ["a dog runs on the grass .", "two children play in the water .",
            "a man in a red shirt climbs a rock .", "a black dog jumps over a log ."] * 5


def test_named_configs_load_and_vit_b_32_has_the_paper_dimensions():
    assert {"tiny", "small", "ViT-B-32"} <= set(model_names())
    b32 = load_config("ViT-B-32")
    assert (b32.image_size, b32.patch_size, b32.vision_width, b32.vision_layers) == (224, 32, 768, 12)
    assert (b32.text_width, b32.text_layers, b32.context_length, b32.embed_dim) == (512, 12, 77, 512)
    with pytest.raises(UserError, match="unknown model"):
        load_config("huge")
    with pytest.raises(UserError, match="multiple of vision_heads"):
        config_from_dict({**load_config("tiny").to_dict(), "vision_heads": 5})


def test_forward_gives_unit_features_and_text_feature_comes_from_end_of_text():
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = CLIP(cfg).eval()
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    eot = cfg.vocab_size - 1
    tokens = torch.tensor([[1, 5, 6, eot] + [0] * (cfg.context_length - 4)] * 2)
    img, txt, scale = model(images, tokens)
    assert img.shape == txt.shape == (2, cfg.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
    assert scale.item() == pytest.approx(1 / 0.07)
    # Causal: tokens after the end-of-text (padding) cannot change the feature; tokens before do.
    padded = tokens.clone()
    padded[:, 6] = 7
    assert torch.allclose(model.encode_text(padded), txt, atol=1e-6)
    changed = tokens.clone()
    changed[:, 2] = 9
    assert not torch.allclose(model.encode_text(changed), txt, atol=1e-4)


def test_clip_loss_matches_hand_computation_and_is_symmetric():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.T
    by_hand = sum(-torch.log_softmax(logits, 1)[i, i] - torch.log_softmax(logits.T, 1)[i, i]
                  for i in range(4)) / 8
    assert clip_loss(img, txt, scale).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert clip_loss(txt, img, scale).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # matching pairs far apart from the rest: loss near 0; chance level is ln(batch)
    assert clip_loss(torch.eye(4), torch.eye(4), torch.tensor(100.0)).item() < 1e-3
    assert clip_loss(torch.eye(4), torch.eye(4), torch.tensor(0.0)).item() == pytest.approx(math.log(4))


def test_optimizer_skips_weight_decay_on_gains_biases_and_logit_scale():
    model = CLIP(load_config("tiny"))
    opt = make_optimizer(model, TrainConfig(shards="x", out="y"))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] > 0 and plain["weight_decay"] == 0
    assert any(p is model.logit_scale for p in plain["params"])
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])


def test_warmup_then_cosine():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def test_trained_tokenizer_pads_truncates_and_ends_with_end_of_text():
    tok = TextTokenizer(train_bpe(CAPTIONS, vocab_size=400), context_length=12)
    ids = tok(["A Dog runs", "word " * 50])
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    assert ids[0, 0] == tok.sot and ids[1, 0] == tok.sot
    assert tok.eot == tok.vocab_size - 1 and (ids.argmax(1) == torch.tensor([ids[0].tolist().index(tok.eot), 11])).all()
    assert ids[1, -1] == tok.eot                       # truncated, still ends with end-of-text
    assert ids[0, ids[0].tolist().index(tok.eot) + 1:].eq(0).all()  # then zero padding
    assert torch.equal(tok(["a dog runs"]), tok(["A  DOG runs"])[:1])  # lower-cased, spaces collapsed
    again = TextTokenizer.from_json(tok.to_json(), 12)
    assert torch.equal(again(CAPTIONS), tok(CAPTIONS))


def test_clip_bpe_file_gives_openai_ids(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n")
    bpe = load_clip_bpe(path)
    assert bpe.get_vocab_size() == 512 + 4 + 2          # bytes, bytes+</w>, merges, SOT, EOT
    tok = TextTokenizer(bpe, context_length=6)
    assert tok(["Hello"])[0].tolist() == [512 + 4, 512 + 3, 512 + 5, 0, 0, 0]
    assert (tok.sot, tok.eot) == (bpe.token_to_id(SOT), bpe.token_to_id(EOT))
    with pytest.raises(UserError):
        TextTokenizer.from_file(tmp_path / "missing.txt.gz", 6)


def _striped(w: int, h: int) -> Image.Image:
    image = Image.new("RGB", (w, h), (255, 0, 0))
    image.paste((0, 0, 255), (w // 2, 0, w, h))
    return image


def test_center_crop_takes_the_middle_square_and_random_crop_has_the_size():
    image = Image.new("RGB", (300, 100), (0, 255, 0))
    image.paste((255, 0, 0), (100, 0, 200, 100))      # the middle third is red
    out = center_crop(image, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[0].float().mean() > 250 and out[1].float().mean() < 5
    crop = random_resized_crop(_striped(120, 80), 24, random.Random(0))
    assert crop.shape == (3, 24, 24) and crop.dtype == torch.uint8
    assert crop[0, :, 0].float().mean() > 200 and crop[2, :, -1].float().mean() > 200  # red left, blue right


def test_open_rgb_converts_and_normalize_standardises():
    import io
    buf = io.BytesIO()
    Image.new("L", (64, 48), 128).save(buf, "PNG")
    assert open_rgb(buf.getvalue()).mode == "RGB"
    x = normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert x[0, 0, 0, 0].item() == pytest.approx((1 - 0.48145466) / 0.26862954, rel=1e-5)


# tiny's image size and ViT-B-32's; the photos are ~200 px, so a reduced (draft) JPEG decode
# changed them at 32 and 64: up to 141 and 156 levels of 255 (mean 4.9 and 3.0)
@pytest.mark.parametrize("size", [32, 64, 224])
def test_eval_pixels_are_the_exported_processors_on_real_jpegs(shared_data, tmp_path, size):
    """score with a checkpoint and score with its export must see the same pixels: our eval
    transform against export's CLIPImageProcessor (PIL backend, as score loads it) on real JPEG
    bytes opened with PIL at full size, as transformers' users open them. 1e-5 after
    normalisation is float rounding only (one level of 255 is ~0.015)."""
    pytest.importorskip("transformers")
    from transformers import AutoImageProcessor

    from wit_builder.clip.export import hf_image_processor

    photos = sorted((shared_data / "images" / "flickr8k_dev" / "val").glob("*.jpg"))[:16]
    hf_image_processor(size).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")  # what score loads
    theirs = processor(images=[Image.open(p).convert("RGB") for p in photos],
                       return_tensors="pt")["pixel_values"]
    ours = normalize(torch.stack([eval_pixels(p.read_bytes(), size) for p in photos]))
    assert len(photos) == 16 and (theirs - ours).abs().max() < 1e-5


def test_loader_workers_default_to_the_cores_each_rank_has(monkeypatch):
    """A fixed 4 loader processes oversubscribed a 2-core machine; the default is the cores the
    rank may run on (the machine's shared by torchrun's ranks on it); a number given stays."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert TrainConfig(shards="x", out="y").workers == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert TrainConfig(shards="x", out="y").workers == 2
    assert TrainConfig(shards="x", out="y", workers=0).workers == 0
    assert TrainConfig(shards="x", out="y", workers=3).workers == 3
