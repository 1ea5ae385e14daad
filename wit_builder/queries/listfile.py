"""Query-list files: read ours or MetaCLIP's, write ours byte-reproducibly.

Our format (`.json` or `.json.gz`):
    {"format": "wit-builder-queries/1", "params": {...}, "sources": {...}, "summary": {...},
     "entries": [{"id": 0, "text": "...", "sources": ["wordnet", ...]}, ...]}
MetaCLIP's `metadata.json` is a JSON list of strings. Either way the entry id is the index.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import zlib

import orjson

from wit_builder import per_process, storage
from wit_builder.errors import UserError
from wit_builder.stages import MANIFEST

FORMAT = "wit-builder-queries/1"


def _read_bytes(path: str) -> bytes:
    if not path:
        raise UserError("no query list given (set [match] queries or --queries; build one with "
                        "`wit-builder queries build` or use query_lists/wit-queries-en.json.gz)")
    if not storage.exists(path):
        raise UserError(f"query list not found: {path} (give an existing file; build one with "
                        "`wit-builder queries build`)")
    try:
        return storage.read_bytes(path)
    except (EOFError, OSError, zlib.error) as exc:  # a cut or damaged gzip, an unreadable file
        raise UserError(f"query list {path} cannot be read ({exc or type(exc).__name__}; "
                        "rebuild it or fetch it again)") from None


def read_document(path: str):
    data = _read_bytes(path)
    try:
        return orjson.loads(data)  # a 500k-entry list: several times faster than json
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses and json reads (NaN, lone surrogates), or json's own error
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise UserError(f"query list {path} is not valid (gzipped) JSON: {exc}") from None


def load_queries(path: str) -> list[str]:
    """The entries of a query list, entry id = position."""
    if not storage.exists(path):
        return _load(path)  # its one-line error
    # stages of one run read the same list; one list at a time: bounded memory
    return per_process.get("query list", (path, storage.file_fingerprint(path)),
                           lambda: _load(path), keep=1)


def _load(path: str) -> list[str]:
    doc = read_document(path)
    if isinstance(doc, list) and all(isinstance(e, str) for e in doc):
        return doc  # MetaCLIP metadata.json
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        entries = doc.get("entries")
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("text"), str) for e in entries):
            raise UserError(f"query list {path}: `entries` is not a list of {{\"id\", \"text\"}} "
                            "objects (rebuild it)")
        if any(e.get("id") != i for i, e in enumerate(entries)):
            raise UserError(f"query list {path}: entry ids are not 0..n-1 in order (rebuild it)")
        return [e["text"] for e in entries]
    raise UserError(f"query list {path}: neither {FORMAT} JSON nor a MetaCLIP metadata.json "
                    "(a JSON list of strings)")


def fingerprint(entries: list[str]) -> str:
    """Identity of a list's contents (the matcher cache key on executors)."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()[:16]


def dumps(doc) -> bytes:
    """Canonical bytes: one entry per line so diffs stay readable, keys in a fixed order."""
    if isinstance(doc, list):
        body = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in doc) + "\n]\n"
        return body.encode()
    head = {k: v for k, v in doc.items() if k != "entries"}
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]  # drop the closing "\n}"
    lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in doc["entries"]]
    return (text + ',\n "entries": [\n' + ",\n".join(lines) + "\n ]\n}\n").encode()


def write(path: str, doc) -> None:
    """Write JSON, gzipped when the name ends in .gz (mtime 0 and no name: same bytes each time)."""
    data = dumps(doc)
    if path.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buf.getvalue()
    storage.write_bytes_atomic(path, data)


def used_by_match(stage_dir: str) -> str | None:
    """The query list the match stage used for a stage output: named by its own manifest (for
    OUT/match), else by OUT/match's beside it (for OUT/balance and the other later stages)."""
    folder = stage_dir.rstrip("/")
    for manifest in (storage.join(folder, MANIFEST),
                     storage.join(posixpath.dirname(folder), "match", MANIFEST)):
        if storage.exists(manifest):
            named = storage.read_json(manifest).get("queries")
            if isinstance(named, dict) and named.get("path"):
                return named["path"]
    return None
