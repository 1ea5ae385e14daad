"""Train `tiny` briefly on real photos, export it to a Hugging Face CLIP folder, and load that
folder with transformers alone (a subprocess in which `wit_builder` cannot be imported): the same
pixels, ids and embeddings (to 1e-4) on the flickr8k_dev val photos and captions, and the same
zero-shot predictions on the shared CIFAR-10 subset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_shards import read_captions, write_flickr_shards  # noqa: E402

from wit_builder.cli import main  # noqa: E402
from wit_builder.clip.checkpoint import load_for_eval  # noqa: E402
from wit_builder.clip.config import TrainConfig  # noqa: E402
from wit_builder.clip.train import train  # noqa: E402
from wit_builder.clip.transforms import center_crop, eval_pixels, normalize  # noqa: E402

# Runs in a fresh interpreter that refuses to import wit_builder: only transformers reads the folder.
HF_SIDE = r'''
import json, sys
sys.modules["wit_builder"] = None
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor, CLIPTokenizerFast

folder, job, out = sys.argv[1:4]
job = json.load(open(job))
model = CLIPModel.from_pretrained(folder).eval()
processor = CLIPProcessor.from_pretrained(folder)
auto, fast = AutoTokenizer.from_pretrained(folder), CLIPTokenizerFast.from_pretrained(folder)
norm = torch.nn.functional.normalize

def images(paths):
    return processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]

def texts(captions, tok):
    batch = tok(captions, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return batch["input_ids"], norm(model.get_text_features(**batch).pooler_output, dim=-1)

with torch.no_grad():
    pixels = images(job["photos"])
    image_features = norm(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    auto_ids, text_features = texts(job["captions"], auto)
    # `fast` loads too; its ids are ours only for CLIP's own BPE (a trained byte-level BPE needs AutoTokenizer)
    classifier = norm(torch.stack([norm(texts([t.replace("{c}", c) for t in job["templates"]], auto)[1].mean(0), dim=0)
                                   for c in job["classes"]]), dim=-1)
    cifar = norm(model.get_image_features(pixel_values=images(job["cifar"])).pooler_output, dim=-1)
torch.save({"pixels": pixels, "image": image_features, "text": text_features,
            "auto_ids": auto_ids, "zeroshot": (cifar @ classifier.T).argmax(1)}, out)
'''


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    split = shared_data / "images" / "flickr8k_dev"
    shards = write_flickr_shards(split / "train", root / "shards", max_side=64)
    run = root / "run"
    train(TrainConfig(shards=shards, out=str(run), model="tiny", steps=40, batch_size=32, lr=1e-3, warmup=5,
                      workers=1, shuffle_buffer=200, save_every=40, log_every=20, tokenizer_captions=4000))
    assert main(["export", "--checkpoint", str(run / "LATEST.pt"), "--out", str(root / "hf")]) == 0
    return {"root": root, "checkpoint": run / "LATEST.pt", "folder": root / "hf", "val": split / "val",
            "shards": shards}


def test_export_writes_a_folder_transformers_loads_alone_with_the_same_embeddings(exported, shared_data):
    root, folder = exported["root"], exported["folder"]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json"} <= names
    model, tokenizer, _ = load_for_eval(exported["checkpoint"], torch.device("cpu"))
    size = model.cfg.image_size

    # The val photos' own JPEG bytes on both sides: transformers' users open them with PIL at full size.
    val = exported["val"]
    captions = read_captions(val)
    photos = sorted(captions)[:48]
    jpegs = [str(val / name) for name in photos]
    caption_list = [c for name in photos for c in captions[name]]
    cifar_dir = shared_data / "images" / "cifar10_test"
    rows = [line.split("\t") for line in (cifar_dir / "labels.tsv").read_text().splitlines()[1:]][::10]
    classes = sorted({lab.strip() for _, lab in rows})
    templates = json.loads((shared_data / "eval" / "cifar10_templates.json").read_text())["templates"]
    job = root / "job.json"
    job.write_text(json.dumps({"photos": jpegs, "captions": caption_list, "classes": classes,
                               "templates": templates, "cifar": [str(cifar_dir / p) for p, _ in rows]}))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    script = root / "hf_side.py"
    script.write_text(HF_SIDE)
    done = subprocess.run([sys.executable, str(script), str(folder), str(job), str(root / "hf.pt")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    hf = torch.load(root / "hf.pt", weights_only=True)

    with torch.no_grad():
        ours_pixels = normalize(torch.stack([eval_pixels(Path(p).read_bytes(), size) for p in jpegs]))
        assert (hf["pixels"] - ours_pixels).abs().max() < 1e-5  # CLIPProcessor prepares images as we do
        image = model.encode_image(ours_pixels)
        ids = tokenizer(caption_list)
        text = model.encode_text(ids)
    assert (hf["image"] - image).abs().max() < 1e-4
    assert (hf["text"] - text).abs().max() < 1e-4
    for ours_row, theirs_row in zip(ids.tolist(), hf["auto_ids"].tolist()):  # same ids up to the end of text
        n = ours_row.index(tokenizer.eot) + 1
        assert theirs_row[:n] == ours_row[:n]

    # Zero-shot through our evaluator's path gives the predictions transformers gives.
    with torch.no_grad():
        classifier = torch.stack([torch.nn.functional.normalize(
            model.encode_text(tokenizer([t.replace("{c}", c) for t in templates])).mean(0), dim=0) for c in classes])
        from PIL import Image
        cifar = normalize(torch.stack([center_crop(Image.open(cifar_dir / p).convert("RGB"), size) for p, _ in rows]))
        ours_pred = (model.encode_image(cifar) @ classifier.T).argmax(1)
    assert len(rows) == 200 and torch.equal(ours_pred, hf["zeroshot"])
    assert len(set(ours_pred.tolist())) > 1


def test_the_folder_is_readable_by_others_and_has_a_model_card(exported):
    """Hugging Face folders carry a README.md model card; every file keeps the mode new files
    get (safetensors wrote its file 0600: other users of a shared folder could not read it)."""
    folder = exported["folder"]
    umask = os.umask(0)
    os.umask(umask)
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in folder.iterdir()} == {
        path.name: oct(0o666 & ~umask) for path in folder.iterdir()}
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "`tiny`" in card and "trained for 40 steps" in card
    assert f"- `{exported['shards']}`" in card  # the data it was trained on
    assert "| `batch_size` | `32` |" in card and "| `lr` | `0.001` |" in card
