"""Shards in a bucket: ``s3://``, ``gs://`` and ``https://`` sources, fetched whole into a local cache.

The client is obstore (Rust's ``object_store`` crate behind a thin Python layer), chosen because:

- one client speaks S3 (and S3-compatible servers), GCS and plain HTTP(S) with Range requests;
- a request runs in Rust with the GIL released, streaming its body in large chunks; its retries
  (5xx, dropped connections, timeouts of reads) with exponential backoff and jitter are built in;
- endpoint, region and credentials come from the standard environment (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).

fsspec + s3fs parse every response in a Python asyncio thread (the GIL again) and boto3 is S3 only
and parses in Python too. Where the environment names no AWS credentials but ``~/.aws`` (or
``AWS_CONFIG_FILE``, ``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_PROFILE``) does, boto3's session reads
the config files and hands obstore the credentials; with none at all the requests go unsigned, as an
anonymous public bucket wants. Credentials stay in the process that reads them: no message, log line
or error here carries one.

Where things run: a source is listed and its shards' versions read once, in the process that
builds the loader. Shard bytes are fetched by the read workers (:mod:`dalaug.reading.workers`, their
own processes), whole, several at once and ahead of need (the reader names the shards coming next),
into the cache; samples are then read from the cached file by offset like any local shard.

The cache (``$DALAUG_CACHE``, default ``~/.cache/dalaug``, under ``shards/``) is shared by every
process of a machine (a node's ranks, their workers): a shard is fetched under a lock file of its
own, into a temporary file renamed into place, so a process either finds the whole shard or waits
for the one fetching it. Its size is bounded by ``$DALAUG_CACHE_LIMIT`` (bytes, or with a unit:
``200G``; default 50 GiB): past it, the shards used longest ago are deleted (a file still open in a
reader stays readable until closed). A cached shard's name holds its version (size and ETag), so a
shard rewritten in the bucket is fetched again, never read at the old offsets.

Faults: each request has a timeout (``$DALAUG_REQUEST_TIMEOUT``, 60 s) and the client's retries
(``$DALAUG_REQUEST_RETRIES``, 5, with backoff); a shard is fetched up to :data:`ATTEMPTS` times
(a body cut short is one failed attempt). One that stays unreadable fails its samples with a reason
naming it (holding :data:`UNFETCHED`): the reader then leaves out the whole shard, counted against
``max_bad_fraction``. A bucket that does not exist or denies access fails the listing, before any
pipeline is built.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "CACHE_LIMIT_VARIABLE", "FETCHES", "UNFETCHED", "cache_root", "expand_braces", "fetch", "is_url",
    "item_name", "list_shards", "open_shard", "prefetch",
]  # fmt: skip

SCHEMES = ("s3", "gs", "http", "https")
CACHE_LIMIT_VARIABLE = "DALAUG_CACHE_LIMIT"
DEFAULT_CACHE_LIMIT = 50 << 30
FETCHES = 4  # shards a worker process fetches at once
ATTEMPTS = 3  # fetches of a shard before it is taken for unreadable (each with the client's retries)
_BACKOFF = 0.5  # seconds before the second attempt, doubled for each next one
_FORGET_FAILURE = 30.0  # seconds a failed shard is answered from memory (a batch's other samples)
_CHUNK = 8 << 20  # bytes a response body is written to the cache in
_STALE = 3600.0  # seconds after which a temporary file no fetch writes to any more is deleted
UNFETCHED = "could not be fetched"  # in the reason of every sample of a shard that failed


def is_url(source: object) -> bool:
    """Whether ``source`` names a shard or folder in a bucket or on a web server (not a path)."""
    return isinstance(source, str) and source.partition("://")[0].lower() in SCHEMES and "://" in source


_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}|\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's brace notation: ``train-{000..002}.tar`` is three names (the width of the
    first bound is kept), ``{a,b}`` two; several braces multiply.

    >>> expand_braces("s3://b/train-{00..02}.tar")
    ['s3://b/train-00.tar', 's3://b/train-01.tar', 's3://b/train-02.tar']
    """
    found = _BRACES.search(pattern)
    if found is None:
        return [pattern]
    head, tail = pattern[: found.start()], pattern[found.end() :]
    if found[3] is not None:
        choices = found[3].split(",")
    else:
        first, last = int(found[1]), int(found[2])
        if last < first:
            raise ValueError(f"source: {pattern!r}: the range {found[0]} counts down")
        width = len(found[1]) if found[1].startswith("0") else 0
        choices = [str(i).zfill(width) for i in range(first, last + 1)]
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


# --- stores: one per bucket or web server and process ----------------------------------------------

_stores: dict[tuple[str, str], object] = {}
_stores_lock = threading.Lock()


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or scheme://host, key) of ``url``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return scheme, f"{scheme}://{parts.netloc}", parts.path.lstrip("/")
    if not parts.netloc:
        raise ValueError(f"source: {url!r} names no bucket ({scheme}://bucket/prefix/)")
    return scheme, parts.netloc, parts.path.lstrip("/")


def _store(scheme: str, bucket: str):
    with _stores_lock:
        store = _stores.get((scheme, bucket))
        if store is None:
            store = _stores[scheme, bucket] = _make_store(scheme, bucket)
        return store


def _options() -> tuple[dict, dict]:
    timeout = float(os.environ.get("DALAUG_REQUEST_TIMEOUT", 60))
    client = {"timeout": timedelta(seconds=timeout), "connect_timeout": timedelta(seconds=min(timeout, 10))}
    retry = {
        "max_retries": int(os.environ.get("DALAUG_REQUEST_RETRIES", 5)),
        "retry_timeout": timedelta(seconds=max(2 * timeout, 30)),
        "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5)},
    }
    return client, retry


def _make_store(scheme: str, bucket: str):
    from obstore.store import GCSStore, HTTPStore, S3Store

    client, retry = _options()
    if scheme in ("http", "https"):
        return HTTPStore.from_url(bucket, client_options=dict(client, allow_http=True), retry_config=retry)
    if scheme == "gs":
        keys = ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS")  # fmt: skip
        anonymous = {} if any(os.environ.get(key) for key in keys) else {"skip_signature": True}
        return GCSStore(bucket, client_options=client, retry_config=retry, **anonymous)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint.startswith("http://"):
        client["allow_http"] = True  # a local S3-compatible server (MinIO, moto) speaks plain HTTP
    extra: dict = {}
    if _aws_credentials() == "config files":
        from obstore.auth.boto3 import Boto3CredentialProvider

        extra["credential_provider"] = Boto3CredentialProvider()
    elif _aws_credentials() == "none":
        extra["skip_signature"] = True
    if endpoint:
        extra["endpoint"] = endpoint
    return S3Store(bucket, client_options=client, retry_config=retry, **extra)


def _aws_credentials() -> str:
    """Where S3 credentials come from: "environment", "config files" or "none" (never the values)."""
    if os.environ.get("AWS_SKIP_SIGNATURE", "").lower() in ("1", "true"):
        return "none"
    if any(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                       "AWS_CONTAINER_CREDENTIALS_FULL_URI")):  # fmt: skip
        return "environment"
    home = Path.home() / ".aws"
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE"), os.environ.get("AWS_CONFIG_FILE"),
             home / "credentials", home / "config"]  # fmt: skip
    if os.environ.get("AWS_PROFILE") or any(f and os.path.isfile(f) for f in files):
        return "config files"
    return "none"


def _message(error: BaseException) -> str:
    """A one-line reason from an obstore error (its debug dump runs to dozens of lines)."""
    text = str(error)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    status = re.search(r"status code: (\d{3}[^:\n]*)", text)
    first = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
    if code:
        return f"{code[1]} ({status[1].strip() if status else 'error'})"
    return re.sub(r" in [\d.]+m?s", "", first)


def _refusal(url: str, error: BaseException) -> Exception:
    """The error a user reads when a source cannot be listed or a shard's metadata read."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    scheme, bucket, _ = _split(url)
    reason = _message(error)
    denied = isinstance(error, (PermissionDeniedError, UnauthenticatedError)) or re.search(
        r"AccessDenied|Forbidden|403|401|InvalidAccessKeyId|SignatureDoesNotMatch", reason
    )
    if "NoSuchBucket" in reason:
        return FileNotFoundError(f"source: bucket {bucket!r} of {url!r} does not exist ({reason})")
    if denied:
        where = ""
        if scheme == "s3":
            where = f"; S3 credentials: {_aws_credentials()} (AWS_* variables, then ~/.aws, else unsigned)"
        return PermissionError(f"source: access to {url!r} denied ({reason}){where}")
    if isinstance(error, (NotFoundError, FileNotFoundError)):
        return FileNotFoundError(f"source: {url!r} does not exist")
    return OSError(f"source: cannot read {url!r}: {reason}")


# --- listing and versions (the process that builds the loader) ---------------------------------------


def list_shards(source: str) -> list[tuple[str, tuple[int, ...]]]:
    """The ``.tar`` shards ``source`` names, as (url, version), version being (size, ETag digest, 0, 0).

    Args:
        source: ``s3://bucket/prefix/`` or ``gs://...`` (every ``.tar`` object under the prefix), a
            shard's URL, or either with WebDataset braces (``.../train-{0000..0127}.tar``).

    Raises:
        FileNotFoundError: a bucket, prefix or shard that does not exist.
        PermissionError: access denied, naming where credentials were looked for.
        ValueError: a prefix that holds no ``.tar`` shards, an ``https://`` folder (not listable).
    """
    urls = expand_braces(source)
    scheme = _split(urls[0])[0]
    if len(urls) == 1 and not urls[0].endswith(".tar"):
        if scheme in ("http", "https"):
            raise ValueError(f"source: {source!r}: a web server's folder cannot be listed; name the "
                             "shards (https://host/train-{000000..000127}.tar)")  # fmt: skip
        return _listed(urls[0])
    return _versions(urls)


def _listed(url: str) -> list[tuple[str, tuple[int, ...]]]:
    import obstore

    scheme, bucket, prefix = _split(url)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    try:
        found = [meta for batch in obstore.list(_store(scheme, bucket), prefix=prefix or None)
                 for meta in batch]  # fmt: skip
    except Exception as error:  # obstore raises its own kinds and OSError's
        raise _refusal(url, error) from None
    shards = sorted((m for m in found if m["path"].endswith(".tar")), key=lambda m: m["path"])
    if not shards:
        raise (ValueError if found else FileNotFoundError)(
            f"source: no .tar shards under {url!r}" + (f" ({len(found)} other objects)" if found else "")
        )
    return [(f"{scheme}://{bucket}/{m['path']}", _version(m)) for m in shards]


def _versions(urls: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """The version of each named shard: one listing of their common folder where it can be listed,
    else a HEAD request each (a web server), several at once."""
    import obstore

    scheme, bucket, _ = _split(urls[0])
    folders = {u.rpartition("/")[0] for u in urls}
    if scheme in ("s3", "gs") and len(folders) == 1 and all(_split(u)[1] == bucket for u in urls):
        listed = dict(_listed_all(folders.pop() + "/"))
        missing = [u for u in urls if u not in listed]
        if missing:
            raise FileNotFoundError(f"source: {len(missing)} of {len(urls)} shards do not exist, e.g. "
                                    f"{missing[0]!r}")  # fmt: skip
        return [(u, listed[u]) for u in urls]

    def head(url: str) -> tuple[str, tuple[int, ...]]:
        scheme, bucket, key = _split(url)
        try:
            return url, _version(obstore.head(_store(scheme, bucket), key))
        except Exception as error:
            raise _refusal(url, error) from None

    with ThreadPoolExecutor(16, thread_name_prefix="dalaug-head") as threads:
        return list(threads.map(head, urls))


def _listed_all(url: str) -> list[tuple[str, tuple[int, ...]]]:
    try:
        return _listed(url)
    except ValueError:
        return []


def _version(meta: dict) -> tuple[int, int, int, int]:
    """(size, a digest of the ETag, 0, 0): the four fields a local shard's version has."""
    tag = meta.get("e_tag") or str(meta.get("last_modified"))
    return int(meta["size"]), int(hashlib.sha256(tag.encode()).hexdigest()[:15], 16), 0, 0


def item_name(url: str, version: Sequence[int]) -> str:
    """What a read worker is told to read for a shard: its URL and version (a newline cannot be in
    a URL, so the two part again unambiguously)."""
    return f"{url}\n{int(version[0]):x}-{int(version[1]):x}"


def _parse(name: str) -> tuple[str, str]:
    url, _, tag = name.partition("\n")
    return url, tag


# --- the cache (the read workers; the indexing process for shards it must index) ---------------------


def cache_root() -> Path:
    return Path(os.environ.get("DALAUG_CACHE") or Path.home() / ".cache" / "dalaug")


def cached_path(name: str) -> Path:
    """Where shard ``name`` (an :func:`item_name`) lies when cached."""
    url, tag = _parse(name)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    file_name = re.sub(r"[^\w.-]", "_", url.rpartition("/")[2])[-80:]
    return cache_root() / "shards" / f"{digest}-{tag or 'any'}-{file_name}"


def cache_limit() -> int:
    text = os.environ.get(CACHE_LIMIT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_CACHE_LIMIT
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?", text)
    if found is None:
        raise ValueError(f"{CACHE_LIMIT_VARIABLE}: expected bytes or a size such as 200G, got {text!r}")
    return int(float(found[1]) * 1024 ** " KMGT".index(found[2].upper() or " "))


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (created), shared by every thread and process of the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


_fetching: dict[str, Future] = {}  # shards this process is fetching now
_failed: dict[str, tuple[float, str]] = {}  # shards that failed here lately, with why
_fetch_lock = threading.Lock()
_threads: ThreadPoolExecutor | None = None


def fetch(name: str) -> Path:
    """The cached file of shard ``name``, fetched first when it is not cached (or waited for, when
    another thread or process of the machine is fetching it).

    Raises:
        OSError: the shard stayed unreadable after :data:`ATTEMPTS` fetches; the message names it
            and says why (and holds :data:`UNFETCHED`).
    """
    path = cached_path(name)
    if path.exists():
        return path
    with _fetch_lock:
        failed = _failed.get(name)
        if failed is not None and time.monotonic() - failed[0] < _FORGET_FAILURE:
            raise OSError(errno.EIO, failed[1])
        future = _fetching.get(name)
        mine = future is None
        if mine:
            future = _fetching[name] = Future()
    if not mine:
        return future.result()
    try:
        result = _fetch_locked(name, path)
    except OSError as error:
        with _fetch_lock:
            _failed[name] = (time.monotonic(), error.strerror or str(error))
            del _fetching[name]
        future.set_exception(error)
        raise
    with _fetch_lock:
        del _fetching[name]
    future.set_result(result)
    return result


def prefetch(names: Sequence[str]) -> None:
    """Start fetching ``names`` in this process's fetch threads (those not cached or under way)."""
    global _threads
    with _fetch_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(FETCHES, thread_name_prefix="dalaug-fetch")
        todo = [n for n in names if n not in _fetching]
    for name in todo:
        if not cached_path(name).exists():
            _threads.submit(_quietly, name)


def _quietly(name: str) -> None:
    try:
        fetch(name)
    except OSError:
        pass  # the read that needs it reports the reason


def open_shard(name: str) -> int:
    """A descriptor of the cached shard ``name`` (fetched if need be), marked as just used."""
    for _ in range(3):  # evicted between fetch and open: fetch again
        path = fetch(name)
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.utime(descriptor)  # the eviction's clock: used last, deleted last
        except OSError:
            pass
        return descriptor
    raise OSError(errno.ENOENT, f"shard {_parse(name)[0]} was evicted from the cache as fast as it was "
                  f"fetched: raise {CACHE_LIMIT_VARIABLE}")  # fmt: skip


def _fetch_locked(name: str, path: Path) -> Path:
    url = _parse(name)[0]
    with _locked(path.with_name(path.name + ".lock")):
        if path.exists():  # fetched by another process while this one waited
            return path
        reason = "no attempt made"
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(_BACKOFF * 2 ** (attempt - 1))
            try:
                _download(url, name, path)
                break
            except Exception as error:  # obstore's own kinds, OSError's, a short body
                reason = _message(error)
        else:
            raise OSError(errno.EIO, f"shard {url} {UNFETCHED} ({ATTEMPTS} attempts): {reason}")
    _evict(keep=path)
    return path


def _download(url: str, name: str, path: Path) -> None:
    import obstore

    scheme, bucket, key = _split(url)
    expected = int(_parse(name)[1].partition("-")[0] or -1, 16) if _parse(name)[1] else -1
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as file:
            result = obstore.get(_store(scheme, bucket), key)
            for chunk in result.stream(min_chunk_size=_CHUNK):
                file.write(chunk)
            size = file.tell()
        if expected >= 0 and size != expected:
            raise OSError(errno.EIO, f"got {size} bytes of {expected}: rewritten since it was indexed?")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _evict(keep: Path) -> None:
    """Delete the shards used longest ago while the cache holds more than its limit."""
    folder = keep.parent
    # One at a time, each after the shard it follows is in place: an eviction that gave way to one
    # already scanning (as it once did) could leave the shard just fetched uncounted, over the limit.
    with _locked(folder / ".evict.lock"):
        limit, files = cache_limit(), []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".lock"):
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                if entry.name.startswith("."):  # a fetch under way, or one whose process died
                    if entry.name.endswith(".tmp") and time.time() - stat.st_mtime > _STALE:
                        Path(entry.path).unlink(missing_ok=True)
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, file in sorted(files):
            if total <= limit:
                break
            if file != str(keep):
                Path(file).unlink(missing_ok=True)
                total -= size
