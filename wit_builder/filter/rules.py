"""The filter's rules (1-4 of stage.py's list) on one Arrow batch: language, caption, domain and
URL rules, decontamination. `annotate_batch` adds lang, lang_score, url_canonical, text_norm and
the first rule that fires as drop_reason; stage.py runs it on every batch, then dedup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import reduce
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import storage
from wit_builder.errors import UserError
from wit_builder.filter import dedup, langid

REQUIRED_COLUMNS = ("uid", "url", "text")

# Alt texts that describe the page furniture, not the picture (compared after normalisation
# and punctuation removal: "Site-Logo!" -> "site logo"), and furniture nouns after a qualifier.
BOILERPLATE = frozenset(phrase.strip() for phrase in """
image, img, images, photo, photos, picture, pic, foto, bild, logo, icon, spacer, banner,
placeholder, thumbnail, thumb, avatar, blank, pixel, transparent, loading, loader, spinner, ad,
ads, advertisement, advert, sponsored, button, arrow, bullet, separator, divider, clear, dot,
line, close, search, menu, home, print, email, rss, untitled, default, zoom, enlarge, share,
download, play, next, previous, prev, back, top, no image, no photo, image not found,
image unavailable, no image available, click here, click to enlarge, read more, see more,
learn more, more, follow us, subscribe, scroll to top, back to top, go to top, loading image
""".split(","))
_QUALIFIERS = ("site|company|brand|header|footer|main|default|user|profile|social|share|menu|"
               "nav|navigation|newsletter|search|home|close|play|print|email|rss|facebook|"
               "twitter|instagram|youtube|linkedin|pinterest|whatsapp|x|google|apple|partner|"
               "sponsor|app store|google play")
_FURNITURE = ("logo|logos|icon|icons|banner|spacer|button|avatar|placeholder|pixel|thumbnail|"
              "thumb|arrow|bullet|image|img|photo|picture|bild|foto")
BOILERPLATE_PATTERN = rf"^(({_QUALIFIERS}) )?({_FURNITURE})$"
FILENAME_PATTERN = "(?i)" + "|".join([
    r"^\S+\.(jpe?g|png|gif|webp|svg|bmp|tiff?|ico|avif|heic|jfif)$",  # photo_01.jpg
    r"^(https?://|www\.)\S+$",  # a URL as the caption
    r"^(img|dsc|dscn|dscf|dcim|pxl|mvimg|sam|gopr|pict|p|image|photo|screenshot)[-_ ]?\d{3,}\S*$",
    r"^[\pL\pN.-]*_[\pL\pN._-]*$",  # one token with an underscore: a slug or file stem
    r"^[0-9a-f]{12,}$",  # a hash
])


@dataclass
class Rules:
    """Everything the per-batch rules need, built once on the driver and broadcast."""

    model_path: str
    languages: list[str]
    min_lang_score: float
    min_words: int
    min_chars: int
    max_chars: int
    min_letter_fraction: float
    drop_filenames: bool
    drop_boilerplate: bool
    boilerplate: list[str]
    blocked_domains: list[str]
    blocked_extensions: list[str]
    tracker_patterns: list[str]
    eval_urls: list[str] = field(default_factory=list)
    eval_texts: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, fc) -> "Rules":
        domains = list(fc.blocked_domains)
        if fc.blocked_domains_file:
            domains += _read_lines(fc.blocked_domains_file, "filter.blocked_domains_file")
        urls, texts = load_eval_manifests(fc.eval_manifests)
        extras = _boilerplate_key(pa.array(fc.boilerplate, pa.string())).to_pylist()
        for pattern in fc.tracker_patterns:
            try:  # compile with Arrow's RE2, the engine that will run it, to fail early
                pc.match_substring_regex(pa.array([""]), pattern)
            except pa.ArrowInvalid as exc:
                raise UserError(f"filter.tracker_patterns: bad regular expression {pattern!r}: "
                                f"{exc}") from None
        return cls(
            model_path=langid.resolve_model_path(fc.lid_model),
            languages=list(fc.languages), min_lang_score=fc.min_lang_score,
            min_words=fc.min_words, min_chars=fc.min_chars, max_chars=fc.max_chars,
            min_letter_fraction=fc.min_letter_fraction, drop_filenames=fc.drop_filenames,
            drop_boilerplate=fc.drop_boilerplate, boilerplate=sorted(BOILERPLATE | set(extras)),
            blocked_domains=sorted({_domain(d) for d in domains if _domain(d)}),
            blocked_extensions=[e.lower().lstrip(".") for e in fc.blocked_extensions],
            tracker_patterns=list(fc.tracker_patterns), eval_urls=urls, eval_texts=texts)


def _domain(entry: str) -> str:
    return entry.strip().lower().lstrip("*").strip(".")


def _read_lines(path: str, key: str) -> list[str]:
    """Non-empty, non-comment lines of a (optionally gzipped) text file."""
    if not storage.exists(path):
        raise UserError(f"{key}: file not found: {path}")
    try:
        data = storage.read_bytes(path)
    except (OSError, EOFError) as exc:
        raise UserError(f"{key}: {path} is not a valid gzip file: {exc}") from None
    lines = (line.strip() for line in data.decode("utf-8", errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _is_url(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


def _walk(obj, urls: list, texts: list, wanted: bool = True) -> None:
    """Collect the strings of a JSON value: top-level ones and those under `_MANIFEST_KEYS`
    (e.g. COCO's images[].coco_url, annotations[].caption); URLs by their scheme, the rest
    captions."""
    if isinstance(obj, str):
        if wanted:
            (urls if _is_url(obj) else texts).append(obj)
    elif isinstance(obj, list):
        for item in obj:
            _walk(item, urls, texts, wanted)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _walk(value, urls, texts, key.lower() in _MANIFEST_KEYS)


_MANIFEST_KEYS = {"url", "urls", "image_url", "coco_url", "flickr_url", "caption", "captions",
                  "text", "texts", "sentences", "raw"}


def load_eval_manifests(paths: list[str]) -> tuple[list[str], list[str]]:
    """(canonical URLs, normalised captions) from evaluation manifests.

    A `.json` file is walked for strings (plain lists, or objects under keys such as `url`,
    `coco_url`, `caption`, `captions`); a `.jsonl` file likewise line by line; any other file
    is text, each line split on tabs. A string starting with http(s):// is a URL, any other
    non-empty string a caption.
    """
    urls: list[str] = []
    texts: list[str] = []
    for path in paths:
        lines = _read_lines(path, "filter.eval_manifests")
        stem = path[:-3] if path.endswith(".gz") else path
        try:
            if stem.endswith(".json"):
                _walk(json.loads("\n".join(lines)), urls, texts)
            elif stem.endswith(".jsonl"):
                for line in lines:
                    _walk(json.loads(line), urls, texts)
            else:
                for line in lines:
                    for value in line.split("\t"):
                        if value.strip():
                            (urls if _is_url(value.strip()) else texts).append(value.strip())
        except json.JSONDecodeError as exc:
            raise UserError(f"filter.eval_manifests: {path} is not valid JSON: {exc}") from None
    canonical = sorted({dedup.canonical_url(u) for u in urls})
    normalised = sorted(set(dedup.normalize_text(pa.array(texts, pa.string())).to_pylist()) - {""})
    return canonical, normalised


def _key_of_norm(text_norm: pa.Array) -> pa.Array:
    key = pc.replace_substring_regex(text_norm, r"[^\pL\pN]+", " ")
    return pc.utf8_trim_whitespace(key)


def _boilerplate_key(texts: pa.Array) -> pa.Array:
    """Lower case, punctuation and symbols removed, spaces collapsed: 'Site-Logo!' -> 'site logo'."""
    return _key_of_norm(dedup.normalize_text(texts))


def _count(texts: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.count_substring_regex(texts, pattern), 0)


def _suffixes_in(hosts: pa.Array, domains: list[str]) -> pa.Array:
    """Whether each host is one of `domains` or below one (a.b.example.com under example.com)."""
    blocked = pa.array(domains, pa.string())
    hit = pc.is_in(hosts, value_set=blocked)
    for labels in sorted({d.count(".") + 1 for d in domains}):
        suffix = pc.replace_substring_regex(hosts, rf"^.*?([^.]+(?:\.[^.]+){{{labels - 1}}})$", r"\1")
        hit = pc.or_(hit, pc.is_in(suffix, value_set=blocked))
    return hit


class Columns:
    """Columns of the items a rule judges, and columns derived from them, each computed when a
    rule first asks for it. `narrowed` keeps the items no rule has dropped yet, so a rule only
    looks at what the rules before it kept."""

    def __init__(self, columns: dict[str, pa.Array], derived: dict):
        self.columns, self.derived = columns, derived

    def __getitem__(self, name: str) -> pa.Array:
        if name not in self.columns:
            self.columns[name] = self.derived[name](self)
        return self.columns[name]

    def narrowed(self, keep: pa.Array) -> "Columns":
        return Columns({k: v.filter(keep) for k, v in self.columns.items()}, self.derived)


# What caption rules derive from a text (`text`, `text_norm`, `lang`, `score` are given).
TEXT_DERIVED = {
    "length": lambda c: pc.utf8_length(pc.utf8_trim_whitespace(c["text"])),
    "nonspace": lambda c: pc.subtract(c["length"], _count(c["text"], r"\s")),
    "key": lambda c: _key_of_norm(c["text_norm"]),  # the boilerplate key
}
# What URL rules derive from a row (`canonical` and `text_norm` are given).
URL_DERIVED = {
    "lowered": lambda c: pc.utf8_lower(c["canonical"]),
    "host": lambda c: pc.replace_substring_regex(c["canonical"], r"^https?://([^@/]*@)?([^/:?#]+).*$",
                                                 r"\2"),
}


def caption_rules(rules: Rules) -> list[tuple[str, Callable[[Columns], pa.Array]]]:
    """(reason, mask) of rules 1-2 in the documented order: functions of a text alone (its
    language too), so they run once per distinct text of a batch. A null mask entry means no."""
    checks = []
    if rules.languages:
        languages = pa.array(rules.languages, pa.string())
        checks.append(("language", lambda c: pc.and_(pc.is_valid(c["lang"]), pc.or_(
            pc.invert(pc.is_in(c["lang"], value_set=languages)),
            pc.less(c["score"], rules.min_lang_score)))))
    checks.append(("text_too_long", lambda c: pc.greater(c["length"], rules.max_chars)))
    if rules.drop_filenames:
        checks.append(("filename_text", lambda c: pc.match_substring_regex(c["text"], FILENAME_PATTERN)))
    if rules.drop_boilerplate:
        boilerplate = pa.array(rules.boilerplate, pa.string())
        checks.append(("boilerplate_text", lambda c: pc.or_(
            pc.is_in(c["key"], value_set=boilerplate),
            pc.match_substring_regex(c["key"], BOILERPLATE_PATTERN))))
    checks.append(("too_few_words", lambda c: pc.less(_count(c["text"], r"\S+"), rules.min_words)))
    checks.append(("too_few_chars", lambda c: pc.less(pc.fill_null(c["length"], 0), rules.min_chars)))
    checks.append(("too_few_letters", lambda c: pc.less(
        pc.cast(_count(c["text"], r"\pL"), pa.float64()),
        pc.multiply(pc.cast(pc.fill_null(c["nonspace"], 0), pa.float64()), rules.min_letter_fraction))))
    return checks


def url_rules(rules: Rules) -> list[tuple[str, Callable[[Columns], pa.Array]]]:
    """(reason, mask) of rules 3-4 in the documented order, on the canonical URL (and, for
    decontamination, the normalised caption) of each row that rules 1-2 kept."""
    checks = []
    extensions = "|".join(re.escape(e) for e in rules.blocked_extensions)

    def url_bad(c: Columns) -> pa.Array:
        bad = pc.invert(pc.fill_null(pc.match_substring_regex(c["canonical"], r"^https?://[^/?#]+"), False))
        if extensions:
            bad = pc.or_(bad, pc.match_substring_regex(
                c["canonical"], rf"(?i)^https?://[^/?#]*/[^?#]*\.({extensions})(\?.*)?$"))
        return bad
    checks.append(("url_rule", url_bad))
    if rules.blocked_domains:
        checks.append(("blocked_domain", lambda c: _suffixes_in(c["host"], rules.blocked_domains)))
    if rules.tracker_patterns:
        checks.append(("tracker", lambda c: reduce(pc.or_, [
            pc.match_substring_regex(c["lowered"], p) for p in rules.tracker_patterns])))
    if rules.eval_urls or rules.eval_texts:
        eval_urls, eval_texts = pa.array(rules.eval_urls, pa.string()), pa.array(rules.eval_texts, pa.string())
        checks.append(("eval_contamination", lambda c: pc.or_(
            pc.is_in(c["canonical"], value_set=eval_urls), pc.is_in(c["text_norm"], value_set=eval_texts))))
    return checks


def first_reasons(columns: Columns, checks: list, n: int) -> pa.Array:
    """The reason of the first check that fires on each of the n items (null: none fires); each
    check only sees the items that the checks before it kept."""
    codes = np.full(n, len(checks), dtype=np.int32)
    alive = np.arange(n)
    for code, (_name, fires) in enumerate(checks):
        if not len(alive):
            break
        mask = pc.fill_null(fires(columns), False).to_numpy(zero_copy_only=False)
        if mask.any():
            codes[alive[mask]] = code
            alive = alive[~mask]
            columns = columns.narrowed(pa.array(~mask))
    names = pa.array([name for name, _ in checks] + [None], pa.string())
    return names.take(pa.array(codes))


def annotate_batch(batch: pa.RecordBatch, rules: Rules) -> pa.RecordBatch:
    """Add lang, lang_score, url_canonical, text_norm and drop_reason (rules 1-4) to a batch.
    Language and caption rules run once per distinct text, URL rules on the rows those kept."""
    coded = pc.dictionary_encode(batch.column("text"), null_encoding="encode")
    texts, which = coded.dictionary, coded.indices
    lang, score = langid.predict(texts, rules.model_path)
    text_norm = dedup.normalize_text(texts)
    reason = first_reasons(Columns({"text": texts, "text_norm": text_norm, "lang": lang,
                                    "score": score}, TEXT_DERIVED),
                           caption_rules(rules), len(texts)).take(which)
    lang, score, text_norm = lang.take(which), score.take(which), text_norm.take(which)
    canonical = dedup.canonical_urls(batch.column("url"))
    kept = pc.is_null(reason)
    rows = Columns({"canonical": canonical.filter(kept), "text_norm": text_norm.filter(kept)},
                   URL_DERIVED)
    checks = url_rules(rules)
    reason = pc.replace_with_mask(reason, kept, first_reasons(rows, checks, len(rows["canonical"])))
    columns = batch.columns + [lang, score, canonical, text_norm, reason]
    names = batch.schema.names + ["lang", "lang_score", "url_canonical", "text_norm", "drop_reason"]
    return pa.RecordBatch.from_arrays(columns, names=names)
