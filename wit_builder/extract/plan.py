"""Planning the extract stage on the driver: which files the inputs name (files, folders,
globs, s3:// prefixes, Common Crawl `*.paths[.gz]` listings), each file's format, and the page
URLs of saved HTML pages. Listing entries from the network pass the address rules first."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, Iterator

from wit_builder import safety, storage
from wit_builder.errors import UserError
from wit_builder.extract import html

_SUFFIXES = (((".paths",), "listing"), ((".wat",), "wat"), ((".warc", ".arc"), "warc"),
             ((".html", ".htm"), "html"), ((".parquet",), "parquet"), ((".csv",), "csv"),
             ((".tsv",), "tsv"), ((".jsonl", ".ndjson"), "jsonl"))


def format_of(path: str) -> str | None:
    """The format a file's name implies (`listing` for Common Crawl's *.paths[.gz])."""
    name = posixpath.basename(path).lower()
    name = name[:-3] if name.endswith(".gz") else name
    return next((fmt for suffixes, fmt in _SUFFIXES if name.endswith(suffixes)), None)


def _lines(path: str) -> Iterator[str]:
    with storage.open_file(path) as raw:
        for line in storage.gunzipped(raw):
            yield line.decode("utf-8", errors="replace")


# What an entry of a listing read from the network or S3 may name by itself: files there too.
# Anything else (an absolute local path, file://, fsspec's local:// or chained URLs) would let
# whoever wrote the listing make extract read this machine's files.
_NETWORK_SCHEMES = ("http://", "https://", "s3://", "s3a://")


def _listing_entries(listing: str, prefix: str, local_files: bool) -> list[str]:
    """A *.paths[.gz] file's entries; relative ones resolved against `prefix` (default: the
    listing's own folder), e.g. s3://commoncrawl/ for Common Crawl's wat.paths.gz. A listing
    that is not a local file names local files only when `local_files` allows it."""
    base = prefix or (listing.rsplit("/", 1)[0] if "/" in listing else ".")
    guarded = storage.is_remote(listing) and not local_files
    entries = []
    for line in _lines(listing):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            absolute = "://" in entry or entry.startswith("/")
            if absolute and guarded and not entry.lower().startswith(_NETWORK_SCHEMES):
                raise UserError(f"refusing entry {entry[:200]!r} of {listing}: a listing read "
                                "from the network names files there only (set "
                                "extract.listing_local_files = true to let it name local files)")
            entries.append(entry if absolute else storage.join(base, entry.lstrip("/")))
    return entries


def _expand(path: str) -> tuple[list[str], bool]:
    """(files, named directly): a folder (recursively) or a glob expands, a file is itself."""
    if storage.is_http(path):  # a URL is one file
        return storage.list_files(path), True
    fs, stripped = storage.filesystem(path)
    direct = not any(ch in stripped for ch in "*?[") and not fs.isdir(stripped)
    return storage.list_files(path), direct


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    page_url: str | None = None


def plan_files(inputs: list[str], fmt: str = "auto", listing_prefix: str = "",
         allowed: tuple = (), listing_local_files: bool = False,
         log: Callable[[str], None] = lambda _line: None) -> list[InputFile]:
    """Every input file with its format (and, for saved pages, its URL from a listing).

    Listing entries are checked against the network rules before anything reads them
    (safety.check_inputs, with `allowed` = `[download] allow_networks`; the inputs themselves
    were, by pipeline.plan); a listing from the network names local files only with
    `listing_local_files`. `log` hears of files passed over.
    """
    with storage.networks(allowed):  # the reads below connect to checked addresses only
        return _plan(inputs, fmt, listing_prefix, allowed, listing_local_files, log)


def _plan(inputs: list[str], fmt: str, listing_prefix: str, allowed: tuple,
          listing_local_files: bool, log: Callable[[str], None]) -> list[InputFile]:
    found: dict[str, bool] = {}  # path -> named directly (or by a *.paths listing)
    for item in inputs:
        files, direct = _expand(item)
        for path in files:
            if format_of(path) == "listing":
                entries = _listing_entries(path, listing_prefix, listing_local_files)
                safety.check_inputs(entries, allowed)
                found.update(dict.fromkeys(entries, True))
            else:
                found[path] = found.get(path, False) or direct
    formats = {path: fmt if fmt != "auto" else format_of(path) for path in found}
    # Saved pages: a .tsv beside them (or any .tsv under --format html) lists their URLs.
    page_dirs = {posixpath.dirname(p) for p, f in formats.items() if f == "html"}
    listings = [p for p in found if format_of(p) == "tsv" and
                (fmt == "html" or (fmt == "auto" and posixpath.dirname(p) in page_dirs))]
    page_urls: dict[str, str] = {}
    for listing in listings:
        page_urls.update(html.read_listing(_lines(listing)))
        del formats[listing]
    unknown = sorted(p for p, f in formats.items() if f is None)
    named = [p for p in unknown if found[p]]
    if named:
        raise UserError(f"cannot tell the format of {named[0]} (name it *.warc[.gz], *.wat[.gz], "
                        "*.html, *.parquet, *.csv, *.tsv, *.jsonl[.gz] or *.paths[.gz], or give --format)")
    if unknown:
        log(f"ignoring {len(unknown)} file(s) of unknown format, e.g. {unknown[0]}")
    planned = [InputFile(p, f, page_urls.get(posixpath.basename(p)) if f == "html" else None)
               for p, f in sorted(formats.items()) if f]
    if not planned:
        raise UserError(f"no input files of a known format in {', '.join(inputs)} "
                        "(give files, folders, globs or a *.paths listing; --format picks one)")
    return planned
