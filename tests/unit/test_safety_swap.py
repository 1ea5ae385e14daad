"""Our fetcher inside img2dataset: installed for one shard only, and never silently skipped."""

import img2dataset.downloader as i2d
import pytest

from wit_builder.download import engine
from wit_builder.download.fetch import Policy


def _policy():
    return Policy(timeout=1, total_timeout=1, max_bytes=10, max_pixels=10, max_redirects=0,
                  allowed=(), user_agent="wit-builder/0.1")


def test_fetcher_swapped_in_and_restored():
    original = i2d.download_image
    with engine._fetcher_installed(_policy()):
        # what img2dataset's shard loop calls now refuses a metadata address without a request
        key, stream, error = i2d.download_image_with_retry(
            (3, "http://169.254.169.254/latest/meta-data/"), timeout=1, retries=0,
            user_agent_token="wit-builder", disallowed_header_directives=None)
        assert (key, stream, error) == (3, None, "blocked_address: metadata")
    assert i2d.download_image is original


def test_restored_after_an_error():
    original = i2d.download_image
    with pytest.raises(KeyError):
        with engine._fetcher_installed(_policy()):
            raise KeyError
    assert i2d.download_image is original


def test_an_img2dataset_that_fetches_elsewhere_is_refused(monkeypatch):
    def download_image_with_retry(row, timeout, retries, user_agent_token,
                                  disallowed_header_directives):
        return row[0], None, "fetched some other way"
    monkeypatch.setattr(i2d, "download_image_with_retry", download_image_with_retry)
    with pytest.raises(RuntimeError, match="network-safety fetcher cannot be installed"):
        with engine._fetcher_installed(_policy()):
            pass
