"""Object stores with write-once and compare-and-swap puts: S3 (boto3, any S3 API) and a local folder.

Both backends offer the same small contract, which is all the model registry needs:

* ``get(key)`` returns the bytes and an ETag (an opaque version tag of the current content);
* ``head(key)`` returns the ETag or ``None`` when the object does not exist;
* ``put_if_absent(key, data)`` creates an object and never replaces one (S3 ``IfNoneMatch="*"``);
* ``put_if_match(key, data, etag)`` replaces an object only if its ETag is still ``etag``
  (``etag=None`` means "only if it does not exist yet"); S3 ``IfMatch``, locally a file lock;
* ``list_keys(prefix)`` / ``list_children(prefix)`` enumerate what is stored.

Keys are ``/``-separated paths relative to the store root. Segments starting with ``.`` are reserved: the
local backend keeps its temporary and lock files under such names, and they never show up in listings.

A refused precondition raises :class:`PreconditionFailedError` (a :class:`~lifelong.errors.ConflictError`);
a missing object raises :class:`~lifelong.errors.NotFoundError`; any other failure of the store (network,
permissions, disk full) raises :class:`~lifelong.errors.RegistryError` naming the operation and location.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.errors import ConflictError, NotFoundError, RegistryError

logger = logging.getLogger(__name__)

#: Seconds the local backend waits for another writer's lock before giving up.
LOCK_TIMEOUT_S = 30.0


class PreconditionFailedError(ConflictError):
    """A conditional put was refused: the object exists (put-if-absent) or has changed (put-if-match)."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class StoredObject:
    """The content of an object and the ETag that identifies that content."""

    data: bytes
    etag: str


def content_etag(data: bytes) -> str:
    """The ETag the local backend gives ``data``: quoted MD5 hex, the same form S3 uses for single-part puts.

    Args:
        data: Object bytes.

    Returns:
        ``'"<md5 hex>"'``.
    """
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def same_etag(a: str, b: str) -> bool:
    """Whether two ETags name the same content; S3 ignores the quotes around an ETag, and so do we."""
    return a.strip().strip('"') == b.strip().strip('"')


def check_key(key: str) -> str:
    """Validate an object key: relative, ``/``-separated, no empty, ``.``/``..`` or hidden segments.

    Args:
        key: The key to check.

    Returns:
        The key unchanged.

    Raises:
        RegistryError: The key could escape the store root or collide with reserved names.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise RegistryError(f"invalid object key {key!r}: must be a relative '/'-separated path")
    for segment in key.split("/"):
        if not segment or segment in {".", ".."} or segment.startswith("."):
            raise RegistryError(
                f"invalid object key {key!r}: empty, '.'/'..' or hidden ('.'-prefixed) segment {segment!r}"
            )
    return key


class ObjectStore(ABC):
    """The backend contract the registry is written against (see the module docstring)."""

    #: Root of the store as a URL or path, for messages.
    url: str

    def location(self, key: str) -> str:
        """Full, human-readable location of ``key`` (``s3://bucket/prefix/key`` or a file path)."""
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    def get(self, key: str) -> StoredObject:
        """Read an object.

        Args:
            key: Object key.

        Returns:
            Its bytes and ETag.

        Raises:
            NotFoundError: No object has this key.
            RegistryError: The store failed.
        """

    @abstractmethod
    def head(self, key: str) -> str | None:
        """The ETag of an object, or ``None`` when it does not exist.

        Raises:
            RegistryError: The store failed.
        """

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create an object; never replace an existing one.

        Args:
            key: Object key.
            data: Object bytes.

        Returns:
            The ETag of the new object.

        Raises:
            PreconditionFailedError: An object with this key exists already (its content is untouched).
            RegistryError: The store failed.
        """

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Compare-and-swap: replace an object only if its current ETag is ``etag``.

        Args:
            key: Object key.
            data: New bytes.
            etag: The ETag read before the decision, or ``None`` to require that the object does not exist.

        Returns:
            The ETag of the new content.

        Raises:
            PreconditionFailedError: The object changed (or appeared, or vanished) since ``etag`` was read.
            RegistryError: The store failed; the object may or may not have been replaced (S3 cannot say).
        """

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key below the folder ``prefix`` (recursively), sorted.

        Args:
            prefix: A folder key such as ``"audit/m"`` (no trailing slash needed).

        Returns:
            Full keys (relative to the store root), sorted lexicographically; empty when there are none.
        """

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names of the immediate children (objects and folders) of the folder ``prefix``, sorted.

        Args:
            prefix: A folder key, or ``""`` for the root.

        Returns:
            Child names without the prefix and without trailing slashes.
        """


# --------------------------------------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------------------------------------
def _atomic_replace(src: Path, dst: Path) -> None:
    """``os.replace``, named so that a test can simulate a failing disk at exactly this step."""
    os.replace(src, dst)


def _fsync_dir(path: Path) -> None:
    # Make the rename durable; best effort (not every platform or filesystem lets a folder be opened).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """A folder with the same layout and semantics as the S3 backend (the embedded default).

    Write-once puts write a hidden temporary file and hard-link it into place: ``os.link`` fails if the
    target exists, so an existing object is never replaced, and readers never see a partial file.
    Compare-and-swap puts hold a per-object :class:`filelock.FileLock` while they compare the content ETag
    (MD5, as S3's) and rename the new content into place. Several processes on one host, or on a shared
    filesystem with working ``flock``, may write concurrently.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Open (not create) a folder store; folders are created on the first write.

        Args:
            root: The store's root folder; ``file://`` URLs are accepted.
        """
        text = os.fspath(root)
        if text.startswith("file://"):
            text = text[len("file://") :]
        self.root = Path(text).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def location(self, key: str) -> str:
        return str(self._path(key))

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"no object at {path}") from None
        except OSError as exc:
            raise RegistryError(f"reading {path} failed: {exc}") from exc
        return StoredObject(data=data, etag=content_etag(data))

    def head(self, key: str) -> str | None:
        try:
            return self.get(key).etag
        except NotFoundError:
            return None

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def _lock(self, path: Path) -> Any:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        # Kept on disk after release: deleting a lock file lets a waiter lock a stale inode.
        return FileLock(path.with_name(f".{path.name}.lock"), timeout=LOCK_TIMEOUT_S, preserve_lock_file=True)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp: Path | None = None
        try:
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PreconditionFailedError(f"{path} exists already", key=key) from None
            except OSError as exc:
                if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}:
                    raise
                # Filesystems without hard links (some FUSE or SMB mounts): check-and-rename under the lock.
                with self._lock(path):
                    if path.exists():
                        raise PreconditionFailedError(f"{path} exists already", key=key) from None
                    _atomic_replace(tmp, path)
                    tmp = None
            _fsync_dir(path.parent)
        except (PreconditionFailedError, RegistryError):
            raise
        except OSError as exc:
            raise RegistryError(f"writing {path} failed: {exc}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return content_etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        from filelock import Timeout

        if etag is None:
            # "Only if absent" needs no lock: the hard link is atomic against every other writer.
            return self.put_if_absent(key, data)
        path = self._path(key)
        tmp: Path | None = None
        try:
            with self._lock(path):
                current = self.head(key)
                if current is None:
                    raise PreconditionFailedError(f"{path} no longer exists (expected ETag {etag})", key=key)
                if not same_etag(current, etag):
                    raise PreconditionFailedError(
                        f"{path} changed: its ETag is {current}, expected {etag}", key=key
                    )
                tmp = self._write_temp(path, data)
                _atomic_replace(tmp, path)
                tmp = None
                _fsync_dir(path.parent)
        except Timeout as exc:
            raise RegistryError(
                f"could not lock {path} within {LOCK_TIMEOUT_S:.0f} s: another writer holds {exc.lock_file}"
            ) from exc
        except OSError as exc:
            raise RegistryError(f"writing {path} failed: {exc}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return content_etag(data)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith("."):
                    keys.append(name if rel == "." else f"{rel}/{name}")
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        try:
            return sorted(name for name in os.listdir(base) if not name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise RegistryError(f"listing {base} failed: {exc}") from exc


# --------------------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------------------
def make_s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client configured for S3-compatible stores.

    Args:
        endpoint_url: S3 API endpoint (MinIO, moto, ...); ``None`` for AWS (or ``AWS_ENDPOINT_URL``).

    Returns:
        A thread-safe boto3 S3 client.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        # boto3 >= 1.36 adds CRC32 checksums to every upload and validates them on every download by
        # default. Several S3-compatible stores (older MinIO, Ceph RGW, some gateways) reject or mangle
        # those headers, so checksums are only sent where an API requires them; the registry checks its
        # own sha256 on every load anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        # Path-style URLs (endpoint/bucket/key) work on every S3 API; virtual hosts need DNS per bucket,
        # which a local MinIO or moto endpoint does not have.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _error_code(exc: Exception) -> tuple[str, int | None]:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


class S3ObjectStore(ObjectStore):
    """Objects in ``s3://bucket/prefix`` through boto3; conditional writes use S3's own preconditions.

    ``put_if_absent`` sends ``IfNoneMatch="*"`` and ``put_if_match`` sends ``IfMatch=<etag>``: S3 (and
    MinIO, and moto) evaluate the condition atomically with the write and answer 412 when it does not hold.
    """

    #: 409 ConditionalRequestConflict: S3 saw a concurrent conditional write to the key; retry this often.
    _CONFLICT_RETRIES = 3

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, client: Any = None):
        """Open an S3 store (creates nothing; the bucket must exist).

        Args:
            bucket: Bucket name.
            prefix: Key prefix inside the bucket (no leading or trailing slash needed).
            endpoint_url: S3 API endpoint; ``None`` for AWS or ``AWS_ENDPOINT_URL``.
            client: A ready boto3 S3 client (tests, custom sessions); built from ``endpoint_url`` otherwise.
        """
        if not bucket:
            raise RegistryError("an S3 store needs a bucket: use s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.client = client if client is not None else make_s3_client(endpoint_url)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3ObjectStore:
        """Open ``s3://bucket/prefix``.

        Args:
            url: The store URL.
            endpoint_url: S3 API endpoint, if not AWS.

        Returns:
            The store.
        """
        if not url.startswith("s3://"):
            raise RegistryError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        return cls(bucket, prefix, endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, prefix: str) -> str:
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        return self._key(prefix).rstrip("/") + "/"

    def _fail(self, op: str, key: str, exc: Exception) -> RegistryError:
        code, status = _error_code(exc)
        where = self.location(key)
        endpoint = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if code == "NoSuchBucket":
            return RegistryError(
                f"S3 {op} of {where} failed: bucket {self.bucket!r} does not exist{endpoint}; "
                "create it or fix LIFELONG_REGISTRY_URL"
            )
        if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return RegistryError(f"S3 {op} of {where} was refused ({code}){endpoint}: check the credentials")
        detail = f"{code} (HTTP {status})" if code else f"{type(exc).__name__}: {exc}"
        return RegistryError(f"S3 {op} of {where} failed{endpoint}: {detail}")

    def get(self, key: str) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in {"NoSuchKey", "404"} or (status == 404 and code != "NoSuchBucket"):
                raise NotFoundError(f"no object at {self.location(key)}") from None
            raise self._fail("GET", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("GET", key, exc) from exc
        return StoredObject(data=data, etag=response["ETag"])

    def head(self, key: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            code, status = _error_code(exc)
            # HEAD has no body, so a missing bucket is a bare 404 too; a later write names the bucket.
            if code in {"NoSuchKey", "404", "NotFound"} or status == 404:
                return None
            raise self._fail("HEAD", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("HEAD", key, exc) from exc
        return str(response["ETag"])

    def _put(self, key: str, data: bytes, condition: dict[str, str]) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self._CONFLICT_RETRIES + 1):
            try:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, **condition
                )
                return str(response["ETag"])
            except ClientError as exc:
                code, status = _error_code(exc)
                retry = attempt < self._CONFLICT_RETRIES
                if status == 409 and code == "ConditionalRequestConflict" and retry:
                    time.sleep(0.05 * 2**attempt)
                    continue
                if status == 412 or code == "PreconditionFailed":
                    raise PreconditionFailedError(
                        f"S3 refused the conditional put of {self.location(key)} ({condition})", key=key
                    ) from None
                # IfMatch on a key that no longer exists: the precondition failed, whatever S3 calls it.
                vanished = code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket")
                if "IfMatch" in condition and vanished:
                    raise PreconditionFailedError(f"{self.location(key)} no longer exists", key=key) from None
                raise self._fail("PUT", key, exc) from exc
            except BotoCoreError as exc:
                raise self._fail("PUT", key, exc) from exc
        raise PreconditionFailedError(  # pragma: no cover - the loop returns or raises
            f"S3 kept answering ConditionalRequestConflict for {self.location(key)}", key=key
        )

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put(key, data, {"IfNoneMatch": "*"})

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        if etag is None:
            return self._put(key, data, {"IfNoneMatch": "*"})
        return self._put(key, data, {"IfMatch": etag})

    def _paginate(self, op: str, prefix: str, **kwargs: Any) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._folder(prefix), **kwargs
            )
            return list(pages)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(op, prefix or ".", exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._paginate("LIST", prefix)
        keys = [obj["Key"][strip:] for page in pages for obj in page.get("Contents", [])]
        return sorted(k for k in keys if not any(s.startswith(".") for s in k.split("/")))

    def list_children(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        names: set[str] = set()
        for page in self._paginate("LIST", prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(folder) :].rstrip("/"))
            for obj in page.get("Contents", []):
                names.add(obj["Key"][len(folder) :])
        return sorted(n for n in names if n and not n.startswith("."))


def open_store(url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """Open the store a URL names: ``s3://bucket/prefix`` is S3, anything else a local folder.

    Args:
        url: ``s3://bucket/prefix``, a folder path, or a ``file://`` URL.
        endpoint_url: S3 API endpoint for ``s3://`` URLs (ignored for folders).

    Returns:
        The store.
    """
    if url.startswith("s3://"):
        return S3ObjectStore.from_url(url, endpoint_url=endpoint_url)
    return LocalObjectStore(url)
