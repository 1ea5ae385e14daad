"""Paths, local or s3://, through fsspec; atomic writes; listing and globbing.

http(s) reads (inputs, listings, models, query lists) connect only to addresses that
safety.py's rules pass as each connection is made (`networks` sets the allow list of a
command or a task), never follow a redirect, and name one file each (no folders or globs).

Atomicity: locally we write under a hidden temporary name and rename (a rename within one
filesystem is atomic). S3 has no rename, so there a stage's `_SUCCESS` is written last and a
folder without it is treated as "not there" (see stages.py).
"""

from __future__ import annotations

import contextvars
import functools
import gzip
import io
import json
import os
import posixpath
import tempfile
import uuid
from contextlib import contextmanager

import fsspec

from wit_builder.errors import UserError


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


# botocore retries throttling, 5xx answers and dropped connections with backoff before an error
# reaches us ("adaptive" also slows the client down while the store throttles).
S3_RETRIES = {"max_attempts": 10, "mode": "adaptive"}


async def _no_redirect(response) -> None:
    """An http(s) input that redirects is an error, not an empty file (aiohttp response hook)."""
    if 300 <= response.status < 400:
        raise UserError(f"{response.url}: redirects to {response.headers.get('Location')!r} "
                        "(not followed: give the final URL as the input)")


# The networks besides public addresses that http(s) reads may connect to in this context
# ([download] allow_networks; see `networks`).
_NETWORKS: contextvars.ContextVar[tuple] = contextvars.ContextVar("networks", default=())


@contextmanager
def networks(allowed: tuple):
    """http(s) reads in this block may connect to `allowed` (ip_network objects) besides public
    addresses. Outside any such block: public addresses only."""
    token = _NETWORKS.set(tuple(allowed))
    try:
        yield
    finally:
        _NETWORKS.reset(token)


async def _checked_client(allowed: tuple, **kwargs):
    """fsspec's aiohttp session, its connector on safety.CheckedResolver: every connection, of
    every request, goes to an address checked as it is resolved for that connection. A check
    before the read (safety.check_inputs) is not enough: the name could resolve elsewhere the
    next time (DNS rebinding)."""
    import aiohttp

    from wit_builder import safety

    resolver = safety.CheckedResolver(allowed, safety.INPUT_DNS_TIMEOUT)
    connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=resolver.socket_for)
    return aiohttp.ClientSession(connector=connector, **kwargs)


def _storage_options(path: str) -> dict:
    if is_http(path):
        # A redirect would reach a host nobody checked; every connect is checked as it is made.
        return {"allow_redirects": False, "client_kwargs": {"raise_for_status": _no_redirect},
                "get_client": functools.partial(_checked_client, _NETWORKS.get())}
    if path.startswith(("s3://", "s3a://")):
        options = {"config_kwargs": {"retries": S3_RETRIES}}
        endpoint = os.environ.get("WIT_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        return options
    return {}


_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired", "AuthorizationHeaderMalformed"}


def _s3_problem(exc: BaseException) -> str | None:
    """What the user can fix about a failed S3 call (None: not that kind of failure)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    while exc is not None:
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ("no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or "
                    "AWS_PROFILE, or run with an instance role)")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CREDENTIAL_CODES:
                return (f"the S3 store rejected the credentials ({code}: check AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and WIT_S3_ENDPOINT_URL)")
            if code == "NoSuchBucket":
                return "the bucket does not exist (create it or fix the path)"
            if code in ("AccessDenied", "AllAccessDisabled", "403"):
                return "access denied (check the credentials and the bucket's policy)"
        exc = exc.__cause__ or exc.__context__
    return None


def _explain_s3(func):
    """Turn S3 failures a user can fix (credentials, missing bucket) into one-line UserErrors."""
    @functools.wraps(func)
    def wrapper(path, *args, **kwargs):
        try:
            return func(path, *args, **kwargs)
        except UserError:
            raise
        except Exception as exc:
            problem = _s3_problem(exc) if is_remote(path) else None
            if problem is None:
                raise
            raise UserError(f"{path}: {problem}") from exc
    return wrapper


def filesystem(path: str):
    """(fsspec filesystem, path without protocol) for a local path or URL."""
    if path.startswith("s3a://"):
        path = "s3://" + path[len("s3a://"):]
    protocol = path.split("://", 1)[0] if "://" in path else "file"
    fs = fsspec.filesystem(protocol, **_storage_options(path))
    return fs, fs._strip_protocol(path)


def as_url(fs, stripped: str) -> str:
    """Put the protocol back on a path that came from `fs` (local paths stay plain; http(s)
    paths keep theirs in fsspec)."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local") or "://" in stripped:
        return stripped
    return f"{protocol}://{stripped}"


def is_http(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


@_explain_s3
def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.exists(p)


def spark_path(path: str) -> str:
    """The same location as Spark's Hadoop filesystem names it (s3:// -> s3a://)."""
    return "s3a://" + path[len("s3://"):] if path.startswith("s3://") else path


@_explain_s3
def open_file(path: str, mode: str = "rb", **kwargs):
    fs, p = filesystem(path)
    return fs.open(p, mode, **kwargs)


GZIP_MAGIC = b"\x1f\x8b"
SHARD_DIGITS = 5  # img2dataset's oom_shard_count: 00000.tar ...


def shard_name(index: int, digits: int = SHARD_DIGITS) -> str:
    """A WebDataset shard's file stem (download's and finalize's shards alike)."""
    return f"{index:0{digits}d}"



def gunzipped(raw):
    """A binary stream, decompressed when its first bytes are gzip's magic (whatever its name)."""
    stream = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    return gzip.GzipFile(fileobj=stream, mode="rb") if stream.peek(2)[:2] == GZIP_MAGIC else stream


@_explain_s3
def read_bytes(path: str) -> bytes:
    """A whole file, decompressed when it is gzipped (decided by its magic bytes)."""
    with open_file(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


@_explain_s3
def read_text(path: str) -> str:
    with open_file(path, "rb") as f:
        return f.read().decode("utf-8")


@_explain_s3
def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write a whole file so that readers see either the old file or the new one, never half."""
    fs, p = filesystem(path)
    if is_remote(path):  # an S3 PUT is already all-or-nothing
        with fs.open(p, "wb") as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def write_report(path: str, text: str) -> None:
    """A command's JSON result: on stdout for "-" (the commands' `--json` without a file), else
    written whole into `path`."""
    if path == "-":
        print(text)
    else:
        write_bytes_atomic(path, text.encode() if text.endswith("\n") else (text + "\n").encode())


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: str):
    return json.loads(read_text(path))


@_explain_s3
def remove(path: str) -> None:
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


@_explain_s3
def check_writable(path: str) -> None:
    """Fail before any work when an output cannot be written: a local folder that is a file or
    lies where we may not write, an s3:// bucket that is missing or refuses our credentials."""
    if not is_remote(path):
        _probe_local(path)
        return
    if not path.startswith(("s3://", "s3a://")):
        return
    fs, p = filesystem(path)
    bucket = p.split("/", 1)[0]
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        raise UserError(f"{path}: bucket {bucket!r} does not exist (create it or fix the path)") from None
    except PermissionError:
        raise UserError(f"{path}: access to bucket {bucket!r} denied (check AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, WIT_S3_ENDPOINT_URL and the "
                        "bucket's policy)") from None


def _probe_local(out: str) -> None:
    """Write and remove a file in `out`, or in its nearest existing parent (creating nothing):
    permission bits alone do not tell (root, read-only mounts, /proc)."""
    folder = os.path.abspath(out.removeprefix("file://"))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UserError(f"{out}: {folder} is a file, not a folder (choose another output folder)")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".wit-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"{out}: cannot write in {folder} ({exc.strerror}: choose a writable "
                        "output folder)") from None


@_explain_s3
def list_files(pattern_or_dir: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files under a folder (recursively), matching a glob, or a single file; sorted URLs.

    Hidden and underscore-prefixed names (Spark's `_SUCCESS`, our temporaries) are skipped.
    """
    fs, p = filesystem(pattern_or_dir)
    if is_http(pattern_or_dir):
        # a URL names one file: no globs or folders over HTTP (fsspec would read a page's links)
        if not fs.exists(p):
            raise UserError(f"input not found: {pattern_or_dir} (the server answered no file "
                            "there)")
        return [pattern_or_dir]
    if any(ch in p for ch in "*?["):
        found = fs.glob(p)
        found = [f for f in found if fs.isfile(f)] + [
            g for d in found if fs.isdir(d) for g in fs.find(d)]
    elif fs.isdir(p):
        found = fs.find(p)
    elif fs.exists(p):
        found = [p]
    else:
        raise UserError(f"input not found: {pattern_or_dir} (give an existing file, folder, glob or s3:// prefix)")
    keep = []
    for f in sorted(set(found)):
        base = posixpath.basename(f)
        rel_parts = f[len(p):].split("/") if f.startswith(p) else [base]
        if any(part.startswith((".", "_")) for part in rel_parts if part):
            continue
        if suffixes and not base.lower().endswith(suffixes):
            continue
        keep.append(as_url(fs, f))
    return keep


@_explain_s3
def file_fingerprint(path: str) -> str:
    """Cheap identity of a file: size and modification time (or the store's ETag)."""
    fs, p = filesystem(path)
    info = fs.info(p)
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"{info.get('size')}:{stamp}"
