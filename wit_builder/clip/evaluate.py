"""Zero-shot classification and image-text retrieval of a trained checkpoint.

Every metric is a recall@k over ranks: for a query, the rank of its best right candidate is the
number of *wrong* candidates that score at least as high (ties count against the model, so a
collapsed model that scores everything alike gets 0, not 100%).
"""

import json
import math
from pathlib import Path

import torch

from wit_builder import storage
from wit_builder.clip.checkpoint import load_for_eval
from wit_builder.clip.data import (ImageFiles, expand_shards, iter_shard_classification,
                                   read_class_folders, read_tsv)
from wit_builder.clip.transforms import normalize
from wit_builder.devices import pick_device
from wit_builder.errors import UserError

DEFAULT_TEMPLATES = ["a photo of a {c}."]


# ---------------------------------------------------------------------------- metrics

def ranks(queries: torch.Tensor, candidates: torch.Tensor, query_keys: torch.Tensor,
          candidate_keys: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query, the number of wrong candidates scoring >= its best right candidate.

    Candidate c is right for query q when `candidate_keys[c] == query_keys[q]` (an image id for
    retrieval, a class index for zero-shot), so several right candidates per query are natural.
    """
    out = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk].float() @ candidates.float().T
        right = query_keys[start:start + chunk, None] == candidate_keys[None, :]
        best = scores.masked_fill(~right, -math.inf).max(dim=1).values
        out.append(((scores >= best[:, None]) & ~right).sum(dim=1))
    return torch.cat(out)


def recall_at(query_ranks: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    return {f"R@{k}": (query_ranks < k).float().mean().item() for k in ks}


def retrieval_metrics(image_features, text_features, caption_image: torch.Tensor) -> dict[str, float]:
    """i2t and t2i R@1/5/10; `caption_image[j]` is the index of caption j's image."""
    image_ids = torch.arange(len(image_features))
    i2t = recall_at(ranks(image_features, text_features, image_ids, caption_image))
    t2i = recall_at(ranks(text_features, image_features, caption_image, image_ids))
    return {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}


def zeroshot_metrics(image_features, classifier, labels: torch.Tensor) -> dict[str, float]:
    """top-1, top-5 and mean per-class recall (the mean of each class's top-1 accuracy)."""
    r = ranks(image_features, classifier, labels, torch.arange(len(classifier)))
    per_class = [(r[labels == c] == 0).float().mean().item() for c in labels.unique()]
    return {"top1": (r < 1).float().mean().item(), "top5": (r < 5).float().mean().item(),
            "mean_per_class_recall": sum(per_class) / len(per_class)}


# ---------------------------------------------------------------------------- features

class Encoder:
    """A checkpoint's model and tokenizer, turned into normalised features in batches."""

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int = 256, workers: int = 2):
        self.device = pick_device(device or "auto")
        self.model, self.tokenizer, self.step = load_for_eval(checkpoint, self.device)
        self.image_size, self.batch_size, self.workers = self.model.cfg.image_size, batch_size, workers

    @torch.no_grad()
    def images(self, batches) -> torch.Tensor:
        out = [self.model.encode_image(normalize(b.to(self.device))).float().cpu() for b in batches]
        return torch.cat(out) if out else torch.empty(0, self.model.cfg.embed_dim)

    def image_files(self, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the readable images, and the mask of which were readable."""
        loader = torch.utils.data.DataLoader(ImageFiles(paths, self.image_size), self.batch_size,
                                             num_workers=self.workers)
        feats, oks = [], []
        for images, ok in loader:
            feats.append(self.images([images[ok]]))
            oks.append(ok)
        return torch.cat(feats), torch.cat(oks)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        out = [self.model.encode_text(self.tokenizer(texts[i:i + self.batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(texts), self.batch_size)]
        return torch.cat(out)

    def classifier(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        """One row per class: the normalised mean of its normalised template embeddings."""
        rows = [torch.nn.functional.normalize(self.texts([t.replace("{c}", c) for t in templates]).mean(0), dim=0)
                for c in classnames]
        return torch.stack(rows)


# ---------------------------------------------------------------------------- tasks

def evaluate_retrieval(enc: Encoder, captions_tsv: str) -> dict:
    rows = read_tsv(captions_tsv, "caption")
    paths = list(dict.fromkeys(p for p, _ in rows))
    image_features, ok = enc.image_files(paths)
    kept = {p: i for i, p in enumerate(p for p, good in zip(paths, ok.tolist()) if good)}
    rows = [(p, c) for p, c in rows if p in kept]  # captions of unreadable images go too
    caption_image = torch.tensor([kept[p] for p, _ in rows])
    metrics = retrieval_metrics(image_features, enc.texts([c for _, c in rows]), caption_image)
    return {**metrics, "images": len(kept), "captions": len(rows), "unreadable_images": len(paths) - len(kept)}


def load_templates(path: str | None) -> list[str]:
    """`{"templates": [...]}` or a plain JSON list; each template marks the class name with {c}."""
    if path is None:
        return DEFAULT_TEMPLATES
    data = _read_json(path)
    templates = data.get("templates") if isinstance(data, dict) else data
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and "{c}" in t for t in templates):
        raise UserError(f"{path}: expected a list of templates each with '{{c}}' (or {{\"templates\": [...]}})")
    return templates


def load_classnames(path: str) -> list[str]:
    """`{"classnames": [...]}`, a plain JSON list, or a text file with one name per line."""
    if path.endswith(".json"):
        data = _read_json(path)
        names = data.get("classnames") if isinstance(data, dict) else data
    else:
        try:
            names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read class names {path}: {e}") from None
    if not isinstance(names, list) or not names:
        raise UserError(f"{path}: expected a list of class names (or {{\"classnames\": [...]}})")
    return [str(n) for n in names]


def _read_json(path: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read JSON {path}: {e}") from None


def _label_indices(labels: list[str], classnames: list[str] | None) -> tuple[list[int], list[str]]:
    """Labels are class names (or, with `classnames`, integer indices into it)."""
    if classnames is None:
        classnames = sorted(set(labels))
    index = {c: i for i, c in enumerate(classnames)}
    try:
        return [index[l] if l in index else _int_index(l, len(classnames)) for l in labels], classnames
    except ValueError:
        unknown = sorted(set(l for l in labels if l not in index))[:5]
        raise UserError(f"labels {unknown} are neither class names nor indices into the "
                        f"{len(classnames)} class names (check --classnames)") from None


def _int_index(label: str, n: int) -> int:
    i = int(label)
    if not 0 <= i < n:
        raise ValueError(label)
    return i


def evaluate_zeroshot(enc: Encoder, dataset: str, templates: list[str], classnames: list[str] | None) -> dict:
    """`dataset`: a labels.tsv, a folder per class, or a WebDataset shard pattern with .cls."""
    if dataset.endswith(".tar") or "{" in dataset or dataset.startswith("s3://"):
        if classnames is None:
            raise UserError("WebDataset .cls labels are indices: give --classnames")
        samples = list(iter_shard_classification(expand_shards(dataset), enc.image_size))
        good = [s for s in samples if s is not None and 0 <= s[1] < len(classnames)]
        images = [torch.stack([img for img, _ in good[i:i + enc.batch_size]])
                  for i in range(0, len(good), enc.batch_size)]
        features, labels = enc.images(images), torch.tensor([c for _, c in good])
        unreadable = len(samples) - len(good)
    else:
        rows = read_tsv(dataset, "label") if Path(dataset).is_file() else read_class_folders(dataset)
        indices, classnames = _label_indices([l for _, l in rows], classnames)
        features, ok = enc.image_files([p for p, _ in rows])
        labels, unreadable = torch.tensor(indices)[ok], int((~ok).sum())
    if not len(labels):
        raise UserError(f"{dataset}: no readable labelled images")
    metrics = zeroshot_metrics(features, enc.classifier(classnames, templates), labels)
    return {**metrics, "images": len(labels), "classes": len(classnames),
            "templates": len(templates), "unreadable_images": unreadable}


def evaluate(checkpoint: str, retrieval: str | None = None, zeroshot: str | None = None,
             templates: str | None = None, classnames: str | None = None, json_to: str | None = None,
             device: str | None = None, batch_size: int = 256, workers: int = 2) -> dict:
    """Run the asked-for tasks, print a short table, and the results as JSON into `json_to`
    (on stdout instead of the table for "-")."""
    if not retrieval and not zeroshot:
        raise UserError("nothing to evaluate (give --retrieval captions.tsv and/or --zeroshot labels.tsv)")
    enc = Encoder(checkpoint, device, batch_size, workers)
    results = {"checkpoint": str(checkpoint), "step": enc.step}
    if retrieval:
        results["retrieval"] = {"data": str(retrieval), **evaluate_retrieval(enc, retrieval)}
    if zeroshot:
        names = load_classnames(classnames) if classnames else None
        results["zeroshot"] = {"data": str(zeroshot),
                               **evaluate_zeroshot(enc, zeroshot, load_templates(templates), names)}
    if json_to != "-":
        print(format_table(results))
    if json_to:
        storage.write_report(json_to, json.dumps(results, indent=2))
    return results


def format_table(results: dict) -> str:
    lines = [f"checkpoint {results['checkpoint']} (step {results['step']})"]
    for task in ("retrieval", "zeroshot"):
        if task in results:
            r = results[task]
            lines.append(f"{task} on {r['data']}")
            lines += [f"  {k:<24} {100 * v:6.2f}%" for k, v in r.items() if isinstance(v, float)]
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, int)))
    return "\n".join(lines)
