"""CLIP: a Vision Transformer and a causal text Transformer trained to agree (Radford et al. 2021).

Both towers are the same pre-norm Transformer. The image feature is the class token, the text
feature the end-of-text token; each is projected to `embed_dim` and L2-normalised, and
`logit_scale` (a learned temperature, stored as a log) scales their cosine similarities.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wit_builder.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int

    def to_dict(self) -> dict:
        return asdict(self)


def model_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str) -> CLIPConfig:
    """A named config (`tiny`, `small`, `ViT-B-32`) or the path of a JSON file with the same keys."""
    path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        path = Path(name_or_path)
    if not path.is_file():
        raise UserError(f"unknown model {name_or_path!r} (use one of {', '.join(model_names())} "
                        "or the path of a JSON config)")
    return config_from_dict(json.loads(path.read_text()), source=str(path))


def config_from_dict(d: dict, source: str = "config") -> CLIPConfig:
    try:
        cfg = CLIPConfig(**d)
    except TypeError as e:
        raise UserError(f"{source}: not a CLIP model config ({e})") from None
    for tower in ("vision", "text"):
        width, heads = getattr(cfg, f"{tower}_width"), getattr(cfg, f"{tower}_heads")
        if width % heads:
            raise UserError(f"{source}: {tower}_width {width} is not a multiple of {tower}_heads {heads}")
    if cfg.image_size % cfg.patch_size:
        raise UserError(f"{source}: image_size {cfg.image_size} is not a multiple of patch_size")
    return cfg


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, causal)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, causal) for _ in range(layers))
        # CLIP's init: residual-branch outputs shrink with depth so the stream starts near identity.
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=width ** -0.5)
            for proj in (block.attn.out, block.mlp[2]):
                nn.init.normal_(proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        width, grid = cfg.vision_width, cfg.image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(3, width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_token = nn.Parameter(width ** -0.5 * torch.randn(width))
        self.pos_embed = nn.Parameter(width ** -0.5 * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads, causal=False)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(width ** -0.5 * torch.randn(width, cfg.embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, patches, width)
        cls = self.class_token.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype))
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj


class TextTransformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        width = cfg.text_width
        self.token_embed = nn.Embedding(cfg.vocab_size, width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, width))
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        self.transformer = Transformer(width, cfg.text_layers, cfg.text_heads, causal=True)
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Parameter(width ** -0.5 * torch.randn(width, cfg.embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(tokens) + self.pos_embed
        x = self.ln_final(self.transformer(x))
        # Under causal attention the end-of-text token is the first that has read the whole text;
        # as in CLIP it has the largest id in the vocabulary, so argmax finds it.
        eot = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.proj


class CLIP(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg)
        self.text = TextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over `logit_scale * img @ txt.T`; the matching pairs are the diagonal.

    Under DDP every rank gathers all ranks' features *with* gradients (the negatives are the global
    batch) and scores its own rows against them; DDP's gradient averaging then gives the gradient
    of the global-batch loss.
    """
    rows, offset = image_features.shape[0], 0
    all_images, all_texts = image_features, text_features
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.distributed._functional_collectives import all_gather_single_autograd as gather

        world = torch.distributed.group.WORLD
        all_images, all_texts = gather(image_features, 0, world), gather(text_features, 0, world)
        offset = torch.distributed.get_rank() * rows
    labels = torch.arange(offset, offset + rows, device=image_features.device)
    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
