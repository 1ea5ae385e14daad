"""One shard in an executor: img2dataset's Downloader with our fetcher inside.

We assemble img2dataset's own parts (Resizer, Downloader, WebDatasetSampleWriter) rather than
call `img2dataset.download`, which would build a plain Downloader and guess finished shards from
every `*.json` in the folder (our manifest.json included); shards.py does the Reader's and the
distributor's part on the driver, which never imports img2dataset. Small subclasses carry our
changes:

- SafeDownloader: img2dataset's shard loop fetches each URL by calling the module-level
  `img2dataset.downloader.download_image` (through `download_image_with_retry`). While one shard
  runs, inside the executor process that runs it, we point that name at our fetcher
  (fetch.download_image) and restore it afterwards. A Python worker runs one task at a time, so
  nothing else sees the swap; a plain img2dataset job in the same application is unaffected.
  If a future img2dataset stops calling that name, `_swap_point` fails loudly rather than
  letting downloads through urllib unchecked. img2dataset's own retry loop is off (retries=0):
  our fetcher retries transient failures itself, within the URL's one `total_timeout`.
- SampleWriter: img2dataset's webdataset writer with the caption stored under our column name
  `text` in KEY.json and the shard Parquet (KEY.txt is the same text), and no PAX record per
  tar member.
- resize.BoundedResizer: img2dataset's Resizer, decoding JPEGs with TurboJPEG (the same pixels)
  and those much bigger than `image_size` at 1/2, 1/4 or 1/8 of their size (the rest exactly as
  img2dataset does).
"""

from __future__ import annotations

import functools
import tarfile
from contextlib import contextmanager

import img2dataset.downloader as i2d_downloader
import pyarrow as pa
from img2dataset.writer import WebDatasetSampleWriter

from wit_builder import storage
from wit_builder.download import fetch
from wit_builder.download.resize import BoundedResizer

ROBOTS_DIRECTIVES = ["noai", "noimageai"]


def _swap_point():
    """img2dataset.downloader's fetch function, checked to be what the shard loop calls."""
    uses = i2d_downloader.download_image_with_retry.__code__.co_names
    if "download_image" not in uses or not callable(getattr(i2d_downloader, "download_image", None)):
        raise RuntimeError("this img2dataset no longer fetches through "
                           "img2dataset.downloader.download_image: the network-safety fetcher "
                           "cannot be installed (pin img2dataset 1.47)")
    return i2d_downloader.download_image


@contextmanager
def _fetcher_installed(policy):
    original = _swap_point()
    i2d_downloader.download_image = functools.partial(fetch.download_image, policy=policy)
    try:
        yield
    finally:
        i2d_downloader.download_image = original


class SafeDownloader(i2d_downloader.Downloader):
    """img2dataset's Downloader whose fetches go through fetch.download_image."""

    def __init__(self, policy, **kwargs):
        super().__init__(**kwargs)
        self.policy = policy

    def download_shard(self, row):
        with _fetcher_installed(self.policy):
            return super().download_shard(row)


class SampleWriter(WebDatasetSampleWriter):
    """img2dataset's webdataset writer with `caption` renamed `text` in the json and Parquet,
    writing plain ustar headers.

    webdataset's TarWriter means to write ustar (it computes `tarfile.USTAR_FORMAT` but never
    hands it to `tarfile.open`), so tarfile's default, PAX, applies: the writer's float mtime
    then costs every member an extended header of its own (1 KB: 3 KB a sample, a tenth of a
    shard of Flickr-sized photos) and about 30 us of Python. The members and their bytes are
    the same.
    """

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema,
                 encode_format):
        i = schema.get_field_index("caption")
        schema = schema.set(i, pa.field("text", schema.field(i).type))
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count, schema,
                         encode_format)
        self.tarwriter.tarstream.format = tarfile.USTAR_FORMAT

    def write(self, img_str, key, caption, meta):
        meta = {("text" if k == "caption" else k): v for k, v in meta.items()}
        super().write(img_str, key, caption, meta)


def download_shard(section, out_dir: str, column_list: list, shard: tuple) -> bool:
    """Download one shard `(shard id, feather path)` (shards.py made it) in this executor;
    False when img2dataset's loop failed (it printed why). A missing swap point raises: the
    job fails rather than fetch anything without our checks."""
    _swap_point()
    policy = fetch.Policy.from_config(section)
    resizer = BoundedResizer(image_size=section.image_size, resize_mode=section.resize_mode,
                             resize_only_if_bigger=section.resize_only_if_bigger,
                             encode_quality=section.encode_quality, encode_format="jpg")
    downloader = SafeDownloader(
        policy,
        sample_writer_class=SampleWriter, resizer=resizer, thread_count=section.threads,
        save_caption=True, extract_exif=False, output_folder=out_dir,
        column_list=column_list, timeout=section.timeout,
        number_sample_per_shard=section.samples_per_shard, oom_shard_count=storage.SHARD_DIGITS,
        compute_hash="sha256", verify_hash_type=None, encode_format="jpg",
        retries=0, user_agent_token=policy.robots_token,
        disallowed_header_directives=ROBOTS_DIRECTIVES if section.honor_robots_tag else None)
    ok, _ = downloader(shard)
    return ok
