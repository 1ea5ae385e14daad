"""Export a checkpoint to a Hugging Face CLIP folder that `transformers` loads without us.

    wit-builder export --checkpoint runs/x/LATEST.pt --out runs/x/hf

The folder holds `config.json` and `model.safetensors` (`CLIPModel`), a model card (`README.md`:
the data and settings that trained it, as Hugging Face folders have), the tokenizer
(`tokenizer.json`, `tokenizer_config.json`: `CLIPTokenizer`/`AutoTokenizer`) and
`preprocessor_config.json` (`CLIPImageProcessor`: shorter side to the image size, bicubic,
centre crop, CLIP's mean and std, as our eval transform on an image decoded at full size: the
same pixels from the same JPEG bytes, tested; transformers picks its torchvision backend where
torchvision is installed, whose resize is not PIL's, unless loaded with `backend="pil"`, as
score does). Our model maps one to one onto `CLIPModel`; only the fused q/k/v projection is
split in three and the projections transposed.
Export checks itself: the saved model is reloaded and its embeddings compared to ours, and the
saved tokenizer must give our ids on probe captions.
"""

import json
import os
from pathlib import Path

import torch

from wit_builder.clip.checkpoint import load, model_of
from wit_builder.clip.model import CLIP
from wit_builder.clip.tokenizer import EOT, PAD, SOT, TextTokenizer
from wit_builder.clip.transforms import MEAN, STD
from wit_builder.errors import UserError

PROBES = ["a dog runs on the grass.", "Two children, 3 balls & a RED kite!", "naïve café über straße",
          "it's a man's world", "   spaces\tand\nlines  ", "emoji 🐶 and 中文", ""]


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("export and scoring with Hugging Face models need transformers: "
                        "pip install 'wit-builder[train]'") from None


def hf_config(model: CLIP, tokenizer: TextTokenizer):
    """The `transformers.CLIPConfig` of our model (exact GELU, LayerNorm eps 1e-5)."""
    from transformers import CLIPConfig

    c = model.cfg
    pad = tokenizer.tokenizer.id_to_token(0)
    text = {"vocab_size": c.vocab_size, "hidden_size": c.text_width, "intermediate_size": 4 * c.text_width,
            "num_hidden_layers": c.text_layers, "num_attention_heads": c.text_heads,
            "max_position_embeddings": c.context_length, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "projection_dim": c.embed_dim, "bos_token_id": tokenizer.sot, "eos_token_id": tokenizer.eot,
            "pad_token_id": 0 if pad == PAD else tokenizer.eot}
    vision = {"hidden_size": c.vision_width, "intermediate_size": 4 * c.vision_width,
              "num_hidden_layers": c.vision_layers, "num_attention_heads": c.vision_heads,
              "image_size": c.image_size, "patch_size": c.patch_size, "num_channels": 3,
              "hidden_act": "gelu", "layer_norm_eps": 1e-5, "projection_dim": c.embed_dim}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=c.embed_dim,
                      logit_scale_init_value=float(model.logit_scale.detach()))


def _blocks(sd: dict, ours: str, theirs: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        a, b = f"{ours}.transformer.blocks.{i}", f"{theirs}.encoder.layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{a}.attn.qkv.{kind}"].chunk(3, dim=0)
            out |= {f"{b}.self_attn.q_proj.{kind}": q, f"{b}.self_attn.k_proj.{kind}": k,
                    f"{b}.self_attn.v_proj.{kind}": v,
                    f"{b}.self_attn.out_proj.{kind}": sd[f"{a}.attn.out.{kind}"],
                    f"{b}.layer_norm1.{kind}": sd[f"{a}.ln_1.{kind}"],
                    f"{b}.layer_norm2.{kind}": sd[f"{a}.ln_2.{kind}"],
                    f"{b}.mlp.fc1.{kind}": sd[f"{a}.mlp.0.{kind}"],
                    f"{b}.mlp.fc2.{kind}": sd[f"{a}.mlp.2.{kind}"]}
    return out


def hf_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """Our parameters under `CLIPModel`'s names (every one of them, nothing else)."""
    sd, c = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}, model.cfg
    out = {
        "vision_model.embeddings.patch_embedding.weight": sd["visual.patch_embed.weight"],
        "vision_model.embeddings.class_embedding": sd["visual.class_token"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.pos_embed"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T,
        "text_model.embeddings.token_embedding.weight": sd["text.token_embed.weight"],
        "text_model.embeddings.position_embedding.weight": sd["text.pos_embed"],
        "text_model.final_layer_norm.weight": sd["text.ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["text.ln_final.bias"],
        "text_projection.weight": sd["text.proj"].T,
        "logit_scale": sd["logit_scale"],
    }
    out |= _blocks(sd, "visual", "vision_model", c.vision_layers)
    out |= _blocks(sd, "text", "text_model", c.text_layers)
    return {k: v.contiguous().clone() for k, v in out.items()}


def hf_tokenizer(tokenizer: TextTokenizer):
    """`CLIPTokenizer` when ours is a CLIP BPE (it then rebuilds the same pipeline), else the
    generic `tokenizers` backend over our exact tokenizer.json (older byte-level checkpoints)."""
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast

    bpe = Tokenizer.from_str(tokenizer.to_json())
    bpe.no_padding()
    bpe.no_truncation()
    data = json.loads(bpe.to_str())
    pad = PAD if bpe.id_to_token(0) == PAD else EOT
    common = {"bos_token": SOT, "eos_token": EOT, "pad_token": pad, "unk_token": EOT,
              "model_max_length": tokenizer.context_length}
    if data["model"].get("type") == "BPE" and data["model"].get("end_of_word_suffix") == "</w>":
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
        hf = CLIPTokenizer(vocab=data["model"]["vocab"], merges=merges, **common)
        if _same_ids(hf, tokenizer):
            return hf
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **common)


def _same_ids(hf, tokenizer: TextTokenizer) -> bool:
    ours = tokenizer(PROBES).tolist()
    theirs = hf(PROBES, padding="max_length", truncation=True, max_length=tokenizer.context_length)["input_ids"]
    # where we pad with 0 and CLIP pads with end-of-text, only ids up to the first end-of-text count
    cut = [row.index(tokenizer.eot) + 1 for row in ours]
    return all(a[:n] == b[:n] for a, b, n in zip(ours, theirs, cut))


def hf_image_processor(image_size: int):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size},
                                 resample=3, image_mean=list(MEAN), image_std=list(STD),
                                 do_resize=True, do_center_crop=True, do_rescale=True,
                                 rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True)


def export(checkpoint: str, out: str | Path, check: bool = True) -> dict:
    """Write the Hugging Face folder; returns what was written and the self-check's figures."""
    _require_transformers()
    from transformers import CLIPModel, CLIPProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    state = load(checkpoint)
    model, tokenizer, step = model_of(state, str(checkpoint), torch.device("cpu"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hf = CLIPModel(hf_config(model, tokenizer))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"export mapping is incomplete: missing {missing}, unexpected {unexpected}")
    hf.eval().save_pretrained(out)
    hf_tok = hf_tokenizer(tokenizer)
    image_processor = hf_image_processor(model.cfg.image_size)
    image_processor.save_pretrained(out)  # preprocessor_config.json (read by older transformers too)
    CLIPProcessor(image_processor=image_processor, tokenizer=hf_tok).save_pretrained(out)
    (out / "README.md").write_text(model_card(state, str(checkpoint)))
    _readable(out)
    result = {"out": str(out), "step": step, "tokenizer_class": type(hf_tok).__name__}
    if check:
        result["max_abs_diff"] = check_export(model, tokenizer, out)
    return result


def model_card(state: dict, checkpoint: str) -> str:
    """README.md: what trained the model (its shards, steps and settings) and how to load it."""
    train = dict(state.get("train_config") or {})
    shards = [s for s in (train.pop("shards", None) or "").split("::") if s]
    settings = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in sorted(train.items())
                         if k not in ("out", "resume"))
    listed = "\n".join(f"- `{s}`" for s in shards)
    model = state["model_config"]
    return f"""---
library_name: transformers
pipeline_tag: zero-shot-image-classification
tags: [clip, wit-builder]
---

# CLIP trained with wit-builder

A CLIP model (`{train.get("model", "?")}`: image size {model["image_size"]},
embedding width {model["embed_dim"]}) trained for {state["step"]:,} steps by `wit-builder train`,
exported from `{checkpoint}` by `wit-builder export`.

## Data

WebDataset shards built by wit-builder (web image alt texts matched against a query list,
filtered, balanced, downloaded; each shard folder's `manifest.json` and `wit-builder stats`
report say how):

{listed or "- (not recorded in the checkpoint)"}

## Training settings

| setting | value |
|---|---|
{settings}

## Use

```python
from transformers import CLIPModel, CLIPProcessor
model = CLIPModel.from_pretrained("THIS_FOLDER")
processor = CLIPProcessor.from_pretrained("THIS_FOLDER")
```

Images are resized (shorter side), centre-cropped and normalised as the model was trained:
`preprocessor_config.json` holds the same steps.

## Limitations

Trained on web alt texts: it inherits their biases and errors; check it on your own task
before relying on it.
"""


def _readable(folder: Path) -> None:
    """The folder's files with the mode new files get (safetensors writes its file 0600, which
    other users of a shared model folder cannot read)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


@torch.no_grad()
def check_export(model: CLIP, tokenizer: TextTokenizer, folder: Path, tol: float = 1e-4) -> float:
    """Reload the folder with transformers alone and compare embeddings on random images and the
    probe captions; raises if they differ by more than `tol`."""
    from transformers import AutoTokenizer, CLIPModel

    hf = CLIPModel.from_pretrained(folder).eval()
    hf_tok = AutoTokenizer.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, model.cfg.image_size, model.cfg.image_size, generator=gen)
    ids = hf_tok(PROBES, padding=True, truncation=True, return_tensors="pt")
    theirs_img = torch.nn.functional.normalize(hf.get_image_features(pixel_values=images).pooler_output, dim=-1)
    theirs_txt = torch.nn.functional.normalize(hf.get_text_features(**ids).pooler_output, dim=-1)
    diff = max((model.encode_image(images) - theirs_img).abs().max().item(),
               (model.encode_text(tokenizer(PROBES)) - theirs_txt).abs().max().item())
    if diff > tol:
        raise RuntimeError(f"exported model differs from the checkpoint by {diff:.2e} (> {tol})")
    return diff
