"""The query list: CLIP's ~500k entries from Wikipedia words, PMI bigrams, titles and WordNet.

Each source module returns `{text: score}` plus a description of its input; build.py merges them,
caps the list by a documented priority and writes it (listfile.py reads it back for `match`).
"""

from __future__ import annotations

import hashlib
import io

from wit_builder import storage
from wit_builder.errors import UserError


def open_text(path: str):
    """A text file (local or s3://, gzipped when it says so by its first bytes) as a reader."""
    if not storage.exists(path):
        raise UserError(f"query source not found: {path} (give an existing file)")
    return io.StringIO(storage.read_bytes(path).decode("utf-8"))


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with storage.open_file(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clean(text: str) -> str:
    """An entry as matched: surrounding whitespace removed, inner whitespace runs one space."""
    return " ".join(text.split())
