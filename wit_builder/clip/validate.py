"""Retrieval on a held-out captions TSV during training (`--val-data`, every `val_every` steps).

The images are decoded and center-cropped once, when training starts, and kept as uint8; each
validation encodes them and every caption with the model being trained (eval mode, no grad) and
reports recall@1/5 in both directions, as `wit-builder eval --retrieval` computes them.
"""

from contextlib import nullcontext

import torch

from wit_builder.clip.data import ImageFiles, read_tsv
from wit_builder.clip.evaluate import ranks, recall_at
from wit_builder.clip.transforms import normalize
from wit_builder.errors import UserError

KS = (1, 5)


class Validator:
    def __init__(self, captions_tsv: str, tokenizer, image_size: int, batch_size: int = 256):
        rows = read_tsv(captions_tsv, "caption")
        paths = list(dict.fromkeys(p for p, _ in rows))
        images, oks = [], []
        for image, ok in torch.utils.data.DataLoader(ImageFiles(paths, image_size), batch_size):
            images.append(image[ok])
            oks.append(ok)
        ok = torch.cat(oks).tolist()
        kept = {p: i for i, p in enumerate(p for p, good in zip(paths, ok) if good)}
        rows = [(p, c) for p, c in rows if p in kept]
        if not rows:
            raise UserError(f"{captions_tsv}: no readable images (check the paths in its 'path' column)")
        self.images = torch.cat(images)
        self.tokens = tokenizer([c for _, c in rows])
        self.caption_image = torch.tensor([kept[p] for p, _ in rows])
        self.batch_size = batch_size
        self.unreadable = len(paths) - len(kept)

    @torch.no_grad()
    def __call__(self, model, device: torch.device, autocast=None) -> dict[str, float]:
        """{"val_i2t_R@1": ..., "val_i2t_R@5": ..., "val_t2i_R@1": ..., "val_t2i_R@5": ...}."""
        was_training = model.training
        model.eval()
        try:
            with autocast or nullcontext():
                image_features = torch.cat([
                    model.encode_image(normalize(self.images[i:i + self.batch_size].to(device))).float().cpu()
                    for i in range(0, len(self.images), self.batch_size)])
                text_features = torch.cat([
                    model.encode_text(self.tokens[i:i + self.batch_size].to(device)).float().cpu()
                    for i in range(0, len(self.tokens), self.batch_size)])
        finally:
            model.train(was_training)
        image_ids = torch.arange(len(image_features))
        i2t = recall_at(ranks(image_features, text_features, image_ids, self.caption_image), KS)
        t2i = recall_at(ranks(text_features, image_features, self.caption_image, image_ids), KS)
        return {**{f"val_i2t_{k}": round(v, 4) for k, v in i2t.items()},
                **{f"val_t2i_{k}": round(v, 4) for k, v in t2i.items()}}
