"""One input file's candidate rows, in a task (or on the driver): the format reader's items
(warc.py, wat.py, html.py, tabular.py) gathered column by column, checked, resolved and hashed
on whole Arrow batches (urls.py), with the file's tally of drops and skipped records."""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder import safety, storage, urls
from wit_builder.extract import html, tabular, warc, wat
from wit_builder.extract.plan import InputFile
from wit_builder.extract.records import WRONG_FORMAT, Corrupt, Page, Row, Skip, Table

COLUMNS = ["uid", "url", "text", "page_url", "source", "kind"]
ROWS_SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS])
# What extract_file yields: candidate rows (tally null) and tally rows (key in `tally`, count in `n`).
SCHEMA = pa.schema([*ROWS_SCHEMA, ("tally", pa.string()), ("n", pa.int64())])


@dataclass(frozen=True)
class Options:
    """What a task needs from the config (small and picklable)."""
    max_text_chars: int
    max_url_chars: int
    max_page_bytes: int
    include_title: bool
    columns: tabular.Columns
    batch_rows: int
    max_record_bytes: int
    networks: tuple  # http(s) inputs: [download] allow_networks (ip_network objects)

    @classmethod
    def from_config(cls, cfg) -> "Options":
        s = cfg.extract
        return cls(s.max_text_chars, s.max_url_chars, s.max_page_bytes, s.include_title,
                   tabular.Columns(s.url_column, s.text_column, s.page_url_column),
                   cfg.spark.arrow_batch_rows, s.max_record_bytes,
                   safety.parse_networks(cfg.download.allow_networks))


ARCHIVES = ("warc", "wat")


def archive_head(path: str) -> bytes:
    """A WARC or WAT file's first bytes, decompressed when gzipped; b"" when they do not
    decompress (damage: the reader counts it)."""
    with storage.open_file(path) as raw:
        try:
            return storage.gunzipped(raw).read(64)
        except (EOFError, OSError, zlib.error):  # gzip.BadGzipFile is an OSError
            return b""


def _items(f: InputFile, opts: Options) -> Iterator:
    """The reader items of one file."""
    if f.format in tabular.FORMATS:
        yield from tabular.read(lambda: storage.open_file(f.path), f.format, opts.columns,
                                opts.batch_rows, opts.max_record_bytes)
        return
    if f.format in ARCHIVES and not warc.in_format(archive_head(f.path)):
        yield WRONG_FORMAT
        return
    with storage.open_file(f.path) as fileobj:
        if f.format == "warc":
            yield from warc.read(fileobj, opts.max_page_bytes, opts.max_record_bytes)
        elif f.format == "wat":
            yield from wat.read(fileobj, opts.max_record_bytes)
        else:
            yield from html.read_saved(fileobj, f.page_url, opts.max_page_bytes)


class _Rows:
    """Candidate rows of one file and the file's tally. Readers' items are gathered column by
    column (raw values); the checks, URL resolution and uids run on whole batches
    (urls.check_texts, urls.check_urls), with the same results as the per-row functions."""

    def __init__(self, source: str, opts: Options):
        self.source, self.opts = source, opts
        self.tally = Counter()
        self._reset()

    def _reset(self) -> None:
        # images of pages: src, alt, title (one entry per image); base URL, page URL and image
        # count (one entry per page)
        self.img = ([], [], [])
        self.pages = ([], [], [])
        self.tables: list[Table] = []
        self.pending = 0

    def add(self, item) -> None:
        if isinstance(item, Table):
            self.tally["records_read"] += len(item.url)
            self.tables.append(item)
            self.pending += len(item.url)
            return
        self.tally["records_read"] += 1
        if isinstance(item, Page):
            if item.images_cut is not None:
                self.tally["pages_truncated"] += 1
                if item.images_cut:  # their titles are unknown: one candidate each, the alt
                    self.tally["drop:page_truncated"] += item.images_cut
            if item.textless:
                self.tally["drop:empty_text"] += item.textless
            if not item.images:
                if not item.textless:
                    self.tally["skip:no_images"] += 1
                return
            for column, values in zip(self.img, zip(*item.images)):
                column.extend(values)
            bases, pages, counts = self.pages
            bases.append(urls.base_url(item.page_url, item.base_href))
            pages.append(item.page_url)
            counts.append(len(item.images))
            self.pending += len(item.images)
        elif isinstance(item, Row):
            self.add(Table(*(pa.array([v], pa.string()) for v in item)))
            self.tally["records_read"] -= 1
        elif isinstance(item, Skip):
            self.tally["skip:" + item.reason] += 1
        elif isinstance(item, Corrupt):
            self.tally["drop:" + item.reason] += 1

    def _image_candidates(self):
        """(text, kind, raw url, base, page url) of the gathered images' candidates: each image's
        alt, then its title when wanted, present and not the alt (html.texts), texts cleaned.
        The last three are dictionary arrays over the images and pages: only the rows whose
        text passes are ever spelled out."""
        src, alt, title = (pa.array(c, pa.string()) for c in self.img)
        bases, pages, counts = self.pages
        page_of_image = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        n = len(src)
        image = np.arange(n, dtype=np.int32)
        text, kind = urls.clean_texts(alt), pa.repeat("alt", n)
        titled = np.flatnonzero(pc.is_valid(title).to_numpy(zero_copy_only=False))
        if self.opts.include_title and len(titled):
            title = urls.clean_texts(title.take(titled))
            extra = pc.and_(pc.not_equal(title, ""), pc.not_equal(title, text.take(titled)))
            has_extra = np.zeros(n, bool)
            has_extra[titled[extra.to_numpy(zero_copy_only=False)]] = True
            if has_extra.any():  # such an image has two candidates: its alt, then its title
                image = np.repeat(image, has_extra + 1)
                is_title = np.concatenate([[False], image[1:] == image[:-1]])
                # texts: the alts (n), then the extra titles in order
                take = np.where(is_title, n + np.cumsum(is_title) - 1, image)
                text = pa.concat_arrays([text, title.filter(extra)]).take(take)
                kind = pc.if_else(is_title, "title", "alt")
        page = pa.array(page_of_image[image])
        return (text, kind, pa.DictionaryArray.from_arrays(image, src),
                pa.DictionaryArray.from_arrays(page, pa.array(bases, pa.string())),
                pa.DictionaryArray.from_arrays(page, pa.array(pages, pa.string())))

    def _table_candidates(self):
        t = self.tables
        text = urls.clean_texts(pa.concat_arrays([x.text for x in t]))
        page = pa.concat_arrays([x.page_url for x in t])
        return text, pa.repeat("tabular", len(text)), pa.concat_arrays([x.url for x in t]), page, page

    def _drop(self, reasons: pa.Array) -> pa.Array:
        """Counts the rows' drop reasons; the mask of the rows kept (reason null)."""
        keep = pc.is_null(reasons)
        for count in pc.value_counts(reasons.drop_null()).to_pylist():
            self.tally["drop:" + count["values"]] += count["counts"]
        return keep

    def flush(self) -> Iterator[pa.RecordBatch]:
        """The checked rows gathered so far (nothing when there are none)."""
        parts = []
        if self.img[0]:
            parts.append(self._image_candidates())
        if self.tables:
            parts.append(self._table_candidates())
        self._reset()
        for columns in parts:
            # A row whose text fails is dropped for its text: its URL is not looked at.
            keep = self._drop(urls.check_texts(columns[0], self.opts.max_text_chars))
            text, kind, raw, base, page = (_plain(c.filter(keep)) for c in columns)
            url, reasons = urls.check_urls(raw, base, self.opts.max_url_chars)
            keep = self._drop(reasons)
            kept = pc.sum(keep).as_py() or 0
            if not kept:
                continue
            self.tally["rows_out"] += kept
            url, text, page, kind = url.filter(keep), text.filter(keep), page.filter(keep), kind.filter(keep)
            uid = urls.uid_array(url, text)
            arrays = [uid, url, text, page.cast(pa.string()), pa.repeat(self.source, kept), kind,
                      pa.nulls(kept, pa.string()), pa.nulls(kept, pa.int64())]
            batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
            for start in range(0, kept, self.opts.batch_rows):
                yield batch.slice(start, self.opts.batch_rows)

    def tally_batch(self) -> pa.RecordBatch:
        keys = sorted(self.tally)
        n = len(keys)
        nulls = [pa.nulls(n, pa.string()) for _ in COLUMNS]
        return pa.RecordBatch.from_arrays(
            nulls + [pa.array(keys, pa.string()), pa.array([self.tally[k] for k in keys], pa.int64())],
            schema=SCHEMA)


def extract_file(f: InputFile, opts: Options) -> Iterator[pa.RecordBatch]:
    """Stream one file: Arrow batches of at most `batch_rows` rows, then its tally."""
    rows = _Rows(f.path, opts)
    try:
        with storage.networks(opts.networks):
            for item in _items(f, opts):
                rows.add(item)
                if rows.pending >= opts.batch_rows:
                    yield from rows.flush()
    except (FileNotFoundError, safety.Refused) as exc:
        # a *.paths entry that is not there, or whose host resolved to a refused address this
        # time (fsspec reports that as a missing file): counted, reported
        refused = isinstance(exc, safety.Refused) or isinstance(exc.__cause__, safety.Refused)
        rows.tally["files_refused" if refused else "files_missing"] += 1
    yield from rows.flush()
    yield rows.tally_batch()


def _plain(column: pa.Array) -> pa.Array:
    return column.dictionary_decode() if isinstance(column, pa.DictionaryArray) else column
