"""CLIP scorers: the cosine similarity of an image's and its caption's embeddings (DataComp's
CLIP score), from a wit-builder checkpoint (`*.pt`) or a Hugging Face CLIP folder.

A scorer is built once per executor process (`scorer(...)` caches it) and scores in batches on
CPU or, when there is one, a GPU. Remote models (s3://) are copied to a local temporary folder
first. An image that does not decode gets no score (None).
"""

from __future__ import annotations

import os
import tempfile

from wit_builder import per_process, storage
from wit_builder.devices import pick_device
from wit_builder.errors import UserError

def is_hf_folder(path: str) -> bool:
    return storage.exists(storage.join(path, "config.json"))


def check_model(path: str) -> None:
    """Before Spark: the model exists and is a checkpoint file or a Hugging Face folder."""
    if not path:
        raise UserError("score needs a model: --model CHECKPOINT.pt or a Hugging Face CLIP folder "
                        "(or [score] model in the config)")
    if not storage.exists(path):
        raise UserError(f"score model not found: {path}")
    if not is_hf_folder(path) and not path.endswith(".pt"):
        raise UserError(f"score model {path}: give a wit-builder checkpoint (*.pt) or a folder "
                        "with a Hugging Face CLIP config.json")


def model_fingerprint(path: str) -> str:
    if is_hf_folder(path):
        return ";".join(f"{f}={storage.file_fingerprint(f)}" for f in storage.list_files(path))
    return storage.file_fingerprint(path)


def _local(path: str) -> str:
    if not storage.is_remote(path):
        return path
    fs, p = storage.filesystem(path)
    target = os.path.join(tempfile.mkdtemp(prefix="wit-score-"), os.path.basename(p.rstrip("/")))
    fs.get(p, target, recursive=is_hf_folder(path))
    return target


def scorer(model: str, device: str = "auto", batch_size: int = 256, threads: int = 0):
    """The process's scorer for this model (built on first use); UserError when the model does
    not load (an unreadable checkpoint, a damaged Hugging Face folder)."""
    return per_process.get("scorer", (model, device, batch_size, threads),
                           lambda: _load(model, device, batch_size, threads), keep=1)


def _load(model: str, device: str, batch_size: int, threads: int):
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    local = _local(model)
    cls = HFScorer if os.path.isfile(os.path.join(local, "config.json")) else OurScorer
    try:
        return cls(local, pick_device(device), batch_size)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - torch and transformers raise many types on a bad model
        raise UserError(f"cannot load the score model {model}: {str(e)[:300]}") from None


class _Scorer:
    def __init__(self, device, batch_size: int):
        self.device, self.batch_size = device, batch_size

    def score(self, images: list[bytes | None], texts: list[str]) -> list[float | None]:
        """One score per pair (None where the image does not decode), computed in batches."""
        import torch

        out: list[float | None] = []
        for start in range(0, len(images), self.batch_size):
            pixels, ok = [], []
            for data in images[start:start + self.batch_size]:
                try:
                    pixels.append(self.pixels(data))
                    ok.append(True)
                except Exception:  # corrupt, truncated or missing: no score
                    ok.append(False)
            chunk = [t or "" for t, good in zip(texts[start:start + self.batch_size], ok) if good]
            scores = iter([])
            if pixels:
                with torch.no_grad():
                    img = torch.nn.functional.normalize(self.encode_images(torch.stack(pixels)), dim=-1)
                    txt = torch.nn.functional.normalize(self.encode_texts(chunk), dim=-1)
                    scores = iter((img * txt).sum(-1).float().cpu().tolist())
            out += [next(scores) if good else None for good in ok]
        return out


class OurScorer(_Scorer):
    def __init__(self, path: str, device, batch_size: int):
        super().__init__(device, batch_size)
        from wit_builder.clip.checkpoint import load_for_eval

        self.model, self.tokenizer, _ = load_for_eval(path, device)
        self.size = self.model.cfg.image_size

    def pixels(self, data):
        from wit_builder.clip.transforms import eval_pixels

        return eval_pixels(data, self.size)

    def encode_images(self, uint8):
        from wit_builder.clip.transforms import normalize

        return self.model.encode_image(normalize(uint8.to(self.device)))

    def encode_texts(self, texts):
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class HFScorer(_Scorer):
    """Any `transformers` CLIP folder: its own tokenizer and image processor (PIL backend)."""

    def __init__(self, path: str, device, batch_size: int):
        super().__init__(device, batch_size)
        try:
            from transformers import AutoTokenizer, CLIPModel
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        except ImportError:
            raise UserError("scoring with a Hugging Face folder needs transformers: "
                            "pip install 'wit-builder[train]'") from None
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.processor = CLIPImageProcessorPil.from_pretrained(path)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def pixels(self, data):
        from wit_builder.clip.transforms import open_rgb

        image = open_rgb(data)  # the one decode of train, eval and score (within images' bounds)
        return self.processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def encode_images(self, pixels):
        return self.model.get_image_features(pixel_values=pixels.to(self.device)).pooler_output

    def encode_texts(self, texts):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        return self.model.get_text_features(**batch).pooler_output
