"""Byte-level BPE for captions (Hugging Face `tokenizers`): trained on our captions, or CLIP's own.

A caption becomes `<|startoftext|> pieces... <|endoftext|>` padded with id 0 to the context
length (truncated pieces keep the end-of-text token). As in CLIP, end-of-text has the largest id
in the vocabulary, which is how the text tower finds it (`tokens.argmax(-1)`).
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from wit_builder import storage
from wit_builder.errors import UserError

PAD, SOT, EOT = "<pad>", "<|startoftext|>", "<|endoftext|>"


def _clip_normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                 normalizers.Lowercase()])


def _clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """CLIP's word split (contractions, letter runs, single digits, punctuation runs), then bytes."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe(captions: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn a byte-level BPE of at most `vocab_size` ids, end-of-text added last (largest id).

    Export writes it as the generic `tokenizers` backend (`AutoTokenizer` gives our ids);
    `CLIPTokenizer` matches our ids only for CLIP's own BPE (`load_clip_bpe`)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = _clip_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  special_tokens=[PAD, SOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(captions, trainer=trainer)
    tokenizer.add_special_tokens([EOT])
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (the BPE's base alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def clip_bpe(merges: list[tuple[str, str]], pad: bool = False) -> Tokenizer:
    """CLIP's BPE from its merges: [pad], bytes, bytes with `</w>`, one id per merge, SOT, EOT."""
    base = list(_bytes_to_unicode().values())
    vocab = ([PAD] if pad else []) + base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [SOT, EOT]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges,
                                     end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tokenizer.normalizer = _clip_normalizer()
    tokenizer.pre_tokenizer = _clip_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def load_clip_bpe(path: str | Path) -> Tokenizer:
    """CLIP's `bpe_simple_vocab_16e6.txt.gz` (merges; first line a header) as a `tokenizers` BPE.

    Same ids as OpenAI's tokenizer: 256 bytes, the bytes with `</w>`, one id per merge, then
    start- and end-of-text (49,408 ids for the released file). CLIP's ftfy clean-up is not applied.
    """
    try:
        with open(path, "rb") as raw:
            lines = storage.gunzipped(raw).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    except OSError as e:
        raise UserError(f"cannot read CLIP BPE file {path}: {e} (give bpe_simple_vocab_16e6.txt.gz)") from None
    merges = [tuple(line.split()) for line in lines if line.strip()]
    if not merges or any(len(m) != 2 for m in merges):
        raise UserError(f"{path} is not a CLIP BPE merges file (one 'a b' pair per line after a header)")
    return clip_bpe(merges)


class TextTokenizer:
    """Captions -> (N, context_length) int64 ids; the BPE serialises to one JSON string."""

    def __init__(self, tokenizer: Tokenizer, context_length: int):
        self.sot, self.eot = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)
        if self.sot is None or self.eot != tokenizer.get_vocab_size() - 1:
            raise UserError(f"tokenizer lacks {SOT} or its {EOT} is not the last id "
                            "(train one with `wit-builder train-tokenizer`)")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{SOT} $A {EOT}", special_tokens=[(SOT, self.sot), (EOT, self.eot)])
        tokenizer.enable_truncation(context_length)  # keeps room for the special tokens
        tokenizer.enable_padding(length=context_length, pad_id=0, pad_token=tokenizer.id_to_token(0))
        self.tokenizer, self.context_length = tokenizer, context_length

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([e.ids for e in self.tokenizer.encode_batch(texts)], dtype=torch.long)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str, context_length: int) -> "TextTokenizer":
        return cls(Tokenizer.from_str(text), context_length)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int) -> "TextTokenizer":
        """A `tokenizer.json` written by this module, or CLIP's BPE merges file (`*.txt[.gz]`)."""
        if str(path).endswith((".txt", ".txt.gz")):
            return cls(load_clip_bpe(path), context_length)
        try:
            bpe = Tokenizer.from_str(Path(path).read_text())
        except Exception as e:  # OSError, or the bare Exception `tokenizers` raises on bad JSON
            raise UserError(f"cannot load tokenizer {path}: {e} (give a tokenizer.json written by "
                            "`wit-builder train-tokenizer` or CLIP's bpe_simple_vocab_16e6.txt.gz)") from None
        return cls(bpe, context_length)
