"""The model registry and its audit log: content-addressed versions and a compare-and-swap production pointer.

Layout (identical on S3 and in a local folder; see design.md)::

    models/<model>/<version>/weights.safetensors   safetensors bytes, never pickle
    models/<model>/<version>/config.json           the detector config, canonical JSON
    models/<model>/<version>/<extra files>         evaluation report, held-out split, ...
    models/<model>/<version>/manifest.json         written last: the version is complete once it exists
    models/<model>/aliases/production.json         the pointer, moved only by compare-and-swap
    audit/<model>/<timestamp>-<nonce>-<run id>.json one immutable record per decision

Every object under ``models/<model>/<version>/`` and ``audit/`` is written once and never replaced (S3
``IfNoneMatch="*"``, a hard link locally). The version is the content address of the weights and config
(:func:`content_address`) and is verified on every load. The pointer is replaced only if its ETag is still the
one read before the decision (S3 ``IfMatch``, a file lock locally), so two concurrent promotions cannot both
win; the loser's attempt is audited as ``conflict``.

Order of writes, so that a crash never leaves half a decision:

* ``put_version``: the artifacts, then the manifest (the "ready" marker). A version without a manifest does
  not exist for readers; putting the same artifacts again completes it.
* ``promote`` / ``rollback``: the pointer first, then the audit record. If the store fails on the pointer,
  the pointer is where it was and there is no record (nothing was decided); if it fails on the record, the
  error says so, and re-running with the same run id writes the missing record without moving the pointer.
* A lost race writes its ``conflict`` record, then raises :class:`~lifelong.errors.ConflictError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, cast

from lifelong.constants import MANIFEST_FILE, PRODUCTION_ALIAS, WEIGHTS_FILE
from lifelong.errors import ConfigError, ConflictError, IntegrityError, NotFoundError, RegistryError
from lifelong.stores.objectstore import (
    ObjectStore,
    PreconditionFailedError,
    StoredObject,
    open_store,
    same_etag,
)

if TYPE_CHECKING:
    from lifelong.settings import Settings

logger = logging.getLogger(__name__)

#: The detector config inside a version folder (canonical JSON, part of the content address).
CONFIG_FILE = "config.json"
#: Names put_version writes itself; extra files may not use them.
RESERVED_FILES = frozenset({WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE})

Decision = Literal["promoted", "rejected", "rolled_back", "conflict"]
DECISIONS: tuple[Decision, ...] = ("promoted", "rejected", "rolled_back", "conflict")
#: Version of the audit record and pointer JSON layout.
SCHEMA_VERSION = 1

#: Audit key timestamps: UTC with microseconds, so that keys sort chronologically as plain strings.
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_RE = re.compile(r"[0-9a-f]{64}")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
_FETCH_WORKERS = 8


# --------------------------------------------------------------------------------------------------------
# Content address and JSON
# --------------------------------------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    """Canonical JSON: keys sorted, no whitespace, UTF-8, finite numbers only.

    Args:
        value: Plain JSON data (dicts with str keys, lists, str, int, float, bool, None).

    Returns:
        The encoded bytes; equal data always gives equal bytes.

    Raises:
        RegistryError: ``value`` holds something JSON cannot represent exactly (NaN, objects, mixed keys).
    """
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"detector config is not plain JSON ({exc}): use dicts with str keys, lists, str, int, bool, "
            "None and finite floats"
        ) from exc
    return text.encode("utf-8")


def content_address(weights: bytes, config: Mapping[str, Any]) -> str:
    """The version of a model: sha256 over its weights and detector config.

    The digest covers, in order: the length of ``weights`` as 8 bytes big-endian, the ``weights`` bytes, and
    :func:`canonical_json` of ``config``. The length prefix makes the split between weights and config
    unambiguous; canonical JSON makes key order and whitespace irrelevant.

    Args:
        weights: safetensors bytes.
        config: The detector config (``Detector.to_artifacts()[1]``).

    Returns:
        64 lowercase hex characters.

    Raises:
        RegistryError: ``config`` is not plain JSON.
    """
    digest = hashlib.sha256()
    digest.update(len(weights).to_bytes(8, "big"))
    digest.update(weights)
    digest.update(canonical_json(config))
    return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_safetensors(weights: bytes) -> None:
    # Structure only (8-byte little-endian header length, then a JSON object): enough to refuse a pickle or
    # a truncated file at the door, without importing torch or numpy here.
    if not isinstance(weights, bytes | bytearray | memoryview):
        raise RegistryError(f"weights must be safetensors bytes, got {type(weights).__name__}")
    if len(weights) < 8:
        raise RegistryError(
            f"weights are not safetensors bytes: {len(weights)} bytes is shorter than a header"
        )
    size = int.from_bytes(weights[:8], "little")
    if size > min(len(weights) - 8, _MAX_SAFETENSORS_HEADER):
        raise RegistryError(f"weights are not safetensors bytes: header length {size} exceeds the data")
    try:
        header = json.loads(bytes(weights[8 : 8 + size]))
    except (UnicodeDecodeError, ValueError):
        raise RegistryError("weights are not safetensors bytes: the header is not JSON") from None
    if not isinstance(header, dict):
        raise RegistryError("weights are not safetensors bytes: the header is not a JSON object")


def _jsonable(value: Any, where: str = "$") -> Any:
    """Plain, strict-JSON data for records: non-finite floats become strings, numpy scalars Python ones."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # A rejected candidate may well have a NaN loss; record it faithfully rather than fail the audit.
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _jsonable(value.tolist(), where)
    raise RegistryError(f"{where} holds a {type(value).__name__}, which cannot be stored as JSON")


def _dump(value: Any) -> bytes:
    return (json.dumps(_jsonable(value), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _load_json(data: bytes, location: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(
            f"{location} is not valid JSON ({exc}); it was corrupted or edited by hand"
        ) from None
    if not isinstance(value, dict):
        raise IntegrityError(f"{location} holds a {type(value).__name__}, expected a JSON object")
    return value


# --------------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------------
_clock_lock = threading.Lock()
_last_stamp: datetime | None = None


def _now() -> datetime:
    """UTC now, strictly increasing within this process (so that records of one process never tie)."""
    global _last_stamp
    with _clock_lock:
        now = datetime.now(UTC)
        if _last_stamp is not None and now <= _last_stamp:
            now = _last_stamp + timedelta(microseconds=1)
        _last_stamp = now
        return now


def format_timestamp(moment: datetime) -> str:
    """The sortable timestamp of audit keys, e.g. ``20261203T184512.123456Z`` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _short(version: str | None) -> str:
    return version[:12] if version else "(none)"


# --------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedVersion:
    """A version's artifacts, verified against its content address."""

    weights: bytes
    config: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        """The content address (the folder name)."""
        return str(self.manifest["version"])


@dataclass(frozen=True)
class Pointer:
    """The production alias of a model: which version serves, the one before it, and who moved it."""

    version: str
    previous: str | None
    updated_at: datetime
    actor: str
    reason: str
    run_id: str
    etag: str
    decision: str = "promoted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (``updated_at`` as ISO 8601)."""
        return {
            "version": self.version,
            "previous": self.previous,
            "updated_at": self.updated_at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "run_id": self.run_id,
            "decision": self.decision,
            "etag": self.etag,
        }


@dataclass(frozen=True)
class AuditRecord:
    """One decision about a model; stored once under ``audit/<model>/`` and never changed.

    Attributes:
        decision: ``promoted``, ``rejected``, ``rolled_back`` or ``conflict`` (a lost race).
        model: Registry name of the model.
        timestamp: When the decision was recorded (UTC).
        actor: Who or what decided: a user name, or e.g. ``airflow:lifelong_unlearning``.
        reason: Why, in words.
        run_id: The Airflow run id or CLI invocation id that made the decision.
        from_version: Production before the decision (for ``conflict``: the version the loser expected).
        to_version: Production after the decision; for ``rejected`` and ``conflict``, the candidate.
        metrics: Measured numbers (FP rate, fix rate, ...).
        verdict: The gate's verdict, if a gate ran.
        detail: Anything else (for ``conflict``: who holds the pointer now).
        key: Where the record is stored (not part of the record itself).
    """

    decision: Decision
    model: str
    timestamp: datetime
    actor: str
    reason: str
    run_id: str
    from_version: str | None = None
    to_version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    key: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: JSON-able, ``timestamp`` as ISO 8601 UTC."""
        return {
            "schema": SCHEMA_VERSION,
            "decision": self.decision,
            "model": self.model,
            "timestamp": self.timestamp.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "run_id": self.run_id,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "metrics": _jsonable(self.metrics),
            "verdict": _jsonable(self.verdict),
            "detail": _jsonable(self.detail),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, key: str | None = None) -> AuditRecord:
        """Rebuild a record from :meth:`to_dict` output.

        Raises:
            IntegrityError: A field is missing or malformed.
        """
        try:
            timestamp = _parse_time(data["timestamp"])
            if timestamp is None or data["decision"] not in DECISIONS:
                raise ValueError("bad timestamp or decision")
            return cls(
                decision=cast(Decision, data["decision"]),
                model=str(data["model"]),
                timestamp=timestamp,
                actor=str(data["actor"]),
                reason=str(data["reason"]),
                run_id=str(data["run_id"]),
                from_version=data.get("from_version"),
                to_version=data.get("to_version"),
                metrics=dict(data.get("metrics") or {}),
                verdict=data.get("verdict"),
                detail=dict(data.get("detail") or {}),
                key=key,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"audit record {key or ''} is malformed ({exc})") from None


# --------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------
class ModelRegistry:
    """Versions, the production pointer and the audit log of models, on S3 or in a local folder.

    Safe to share between threads; any number of processes may use the same registry concurrently.
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        """Open a registry (creates nothing until the first write).

        Args:
            url: ``s3://bucket/prefix`` for S3; anything else is a local folder.
            endpoint_url: S3 API endpoint (MinIO, moto); ``None`` for AWS or the ``AWS_ENDPOINT_URL`` default.
        """
        self.url = url
        self.store: ObjectStore = open_store(url, endpoint_url=endpoint_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry the settings name (``LIFELONG_REGISTRY_URL``, default ``HOME/registry``).

        Args:
            settings: Deployment settings; ``s3_endpoint_url`` or ``AWS_ENDPOINT_URL`` gives the S3 endpoint.

        Returns:
            The registry.
        """
        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        return cls(settings.resolved_registry_url, endpoint_url=endpoint)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store.url!r})"

    # --- keys ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_model(model: str) -> str:
        if not isinstance(model, str) or not _NAME_RE.fullmatch(model):
            raise ConfigError(
                f"invalid model name {model!r}: use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return model

    @staticmethod
    def _check_version(version: str) -> str:
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise NotFoundError(
                f"{version!r} is not a full version (64 lowercase hex characters); "
                "resolve a prefix with ModelRegistry.resolve_version or `lifelong registry list`"
            )
        return version

    @staticmethod
    def _check_file_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise RegistryError(
                f"invalid artifact file name {name!r}: use letters, digits, '.', '_' or '-' (no folders)"
            )
        return name

    def _file_key(self, model: str, version: str, name: str) -> str:
        return f"models/{model}/{version}/{name}"

    def _pointer_key(self, model: str) -> str:
        return f"models/{model}/aliases/{PRODUCTION_ALIAS}.json"

    def _where(self, key: str) -> str:
        return self.store.location(key)

    # --- low-level helpers ---------------------------------------------------------------------------
    def _get_many(self, keys: list[str]) -> list[StoredObject | None]:
        """Fetch objects concurrently (S3 round trips dominate listings); ``None`` where one is missing."""

        def fetch(key: str) -> StoredObject | None:
            try:
                return self.store.get(key)
            except NotFoundError:
                return None

        if len(keys) <= 1:
            return [fetch(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(_FETCH_WORKERS, len(keys))) as pool:
            return list(pool.map(fetch, keys))

    def _write_once(self, key: str, data: bytes) -> None:
        """Create an object; identical existing content is a no-op, different content an IntegrityError."""
        try:
            self.store.put_if_absent(key, data)
        except PreconditionFailedError:
            existing = self.store.get(key).data
            if existing != data:
                raise IntegrityError(
                    f"{self._where(key)} already exists with different content (sha256 "
                    f"{_sha256(existing)[:12]}, new {_sha256(data)[:12]}); registry objects are immutable"
                ) from None
            logger.debug("%s already stored with identical content", key)

    # --- versions ------------------------------------------------------------------------------------
    def put_version(
        self,
        model: str,
        weights: bytes,
        config: Mapping[str, Any],
        manifest: Mapping[str, Any],
        extra_files: Mapping[str, bytes] | None = None,
    ) -> str:
        """Store a model version: artifacts first, the manifest last as the "ready" marker.

        Putting the same artifacts and manifest again is a no-op (a manifest without ``created_at`` takes the
        stored one), and completes a version whose earlier upload was interrupted.

        Args:
            model: Registry name of the model.
            weights: safetensors bytes (``Detector.to_artifacts()[0]``).
            config: The detector config (``Detector.to_artifacts()[1]``); part of the content address.
            manifest: Provenance: parent version, training config, labels, data window, validation result,
                metrics, gate verdict, code version, run id... The stored manifest adds ``model``,
                ``version``, ``sha256`` (= version), ``files`` (sha256 and size of every artifact) and
                ``created_at`` (UTC now, unless given).
            extra_files: More artifacts by file name (evaluation report, held-out split, ...).

        Returns:
            The version (the content address of weights and config).

        Raises:
            IntegrityError: The version exists with a different manifest or different artifact bytes.
            RegistryError: The weights are not safetensors, the config is not JSON, or the store failed.
        """
        self._check_model(model)
        _check_safetensors(weights)
        weights = bytes(weights)
        config_bytes = canonical_json(dict(config))
        version = content_address(weights, config)
        files: dict[str, bytes] = {WEIGHTS_FILE: weights, CONFIG_FILE: config_bytes}
        for name, data in sorted((extra_files or {}).items()):
            self._check_file_name(name)
            if name in RESERVED_FILES:
                raise RegistryError(f"extra file {name!r} collides with a file put_version writes itself")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise RegistryError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
            files[name] = bytes(data)

        stored = dict(_jsonable(dict(manifest)))
        stored.update(
            model=model,
            version=version,
            sha256=version,
            files={name: {"sha256": _sha256(data), "size": len(data)} for name, data in files.items()},
        )
        given_created_at = "created_at" in manifest
        if not given_created_at:
            stored["created_at"] = _now().isoformat()
        manifest_key = self._file_key(model, version, MANIFEST_FILE)

        existing = self._try_get_json(manifest_key)
        if existing is not None:
            self._check_same_manifest(model, version, existing, stored, given_created_at)
            logger.info("model %s version %s is already stored; nothing to do", model, _short(version))
            return version

        for name, data in files.items():
            self._write_once(self._file_key(model, version, name), data)
        try:
            self.store.put_if_absent(manifest_key, _dump(stored))
        except PreconditionFailedError:
            # A concurrent writer finished the same version first.
            self._check_same_manifest(
                model,
                version,
                _load_json(self.store.get(manifest_key).data, self._where(manifest_key)),
                stored,
                given_created_at,
            )
        logger.info("stored model %s version %s (%d files)", model, _short(version), len(files) + 1)
        return version

    def _try_get_json(self, key: str) -> dict[str, Any] | None:
        try:
            return _load_json(self.store.get(key).data, self._where(key))
        except NotFoundError:
            return None

    def _check_same_manifest(
        self, model: str, version: str, existing: dict[str, Any], new: dict[str, Any], given_created_at: bool
    ) -> None:
        candidate = dict(new)
        if not given_created_at and "created_at" in existing:
            candidate["created_at"] = existing["created_at"]
        candidate = json.loads(_dump(candidate))
        if candidate == existing:
            return
        fields = sorted(k for k in set(candidate) | set(existing) if candidate.get(k) != existing.get(k))
        raise IntegrityError(
            f"model {model!r} version {_short(version)} already exists with a different manifest "
            f"(fields {', '.join(fields)} differ) at "
            f"{self._where(self._file_key(model, version, MANIFEST_FILE))}; "
            "versions are immutable: the same weights and config were stored before with other provenance"
        )

    def _missing(self, model: str, version: str) -> NotFoundError:
        if self.store.head(self._file_key(model, version, WEIGHTS_FILE)) is not None:
            return NotFoundError(
                f"model {model!r} version {_short(version)} is incomplete: it has no {MANIFEST_FILE} (its "
                "upload did not finish); put_version with the same artifacts completes it"
            )
        return NotFoundError(
            f"model {model!r} has no version {version} in registry {self.store.url} "
            f"(list them with `lifelong registry list --model {model}`)"
        )

    def has_version(self, model: str, version: str) -> bool:
        """Whether a complete version (its manifest written) exists.

        Args:
            model: Registry name of the model.
            version: Full version.

        Returns:
            True when the version's manifest exists.
        """
        self._check_model(model)
        if not _VERSION_RE.fullmatch(version):
            return False
        return self.store.head(self._file_key(model, version, MANIFEST_FILE)) is not None

    def get_manifest(self, model: str, version: str) -> dict[str, Any]:
        """The stored manifest of a version.

        Args:
            model: Registry name of the model.
            version: Full version.

        Returns:
            The manifest dict.

        Raises:
            NotFoundError: No such (complete) version.
            IntegrityError: The manifest is corrupt or names another version.
        """
        self._check_model(model)
        self._check_version(version)
        key = self._file_key(model, version, MANIFEST_FILE)
        try:
            manifest = _load_json(self.store.get(key).data, self._where(key))
        except NotFoundError:
            raise self._missing(model, version) from None
        if manifest.get("version") != version:
            raise IntegrityError(
                f"{self._where(key)} names version {manifest.get('version')!r}, not its folder's {version}; "
                "it was edited or copied by hand"
            )
        return manifest

    def load_version(self, model: str, version: str) -> LoadedVersion:
        """Download a version and verify its content address before returning it.

        Args:
            model: Registry name of the model.
            version: Full version.

        Returns:
            Weights, config and manifest; ``Detector.from_artifacts(weights, config)`` rebuilds the model.

        Raises:
            NotFoundError: No such (complete) version.
            IntegrityError: The weights or config do not hash to ``version`` (tampered with or corrupted).
        """
        manifest = self.get_manifest(model, version)
        weights_key = self._file_key(model, version, WEIGHTS_FILE)
        config_key = self._file_key(model, version, CONFIG_FILE)
        weights_obj, config_obj = self._get_many([weights_key, config_key])
        if weights_obj is None or config_obj is None:
            missing = WEIGHTS_FILE if weights_obj is None else CONFIG_FILE
            raise IntegrityError(
                f"model {model!r} version {version}: {missing} is missing although the manifest exists "
                f"({self._where(self._file_key(model, version, missing))}); the registry was modified by hand"
            )
        config = _load_json(config_obj.data, self._where(config_key))
        try:
            actual = content_address(weights_obj.data, config)
        except RegistryError as exc:
            raise IntegrityError(
                f"model {model!r} version {version}: stored config is unusable ({exc})"
            ) from None
        if actual != version:
            raise IntegrityError(
                f"model {model!r} version {version} failed its sha256 check: the stored weights and config "
                f"hash to {actual}; the artifacts at {self._where(f'models/{model}/{version}')} were "
                "modified or corrupted, refusing to load them"
            )
        return LoadedVersion(weights=weights_obj.data, config=config, manifest=manifest)

    def get_file(self, model: str, version: str, name: str) -> bytes:
        """One artifact of a complete version, verified against the manifest's sha256 when it lists the file.

        Args:
            model: Registry name of the model.
            version: Full version.
            name: File name inside the version folder (e.g. ``report.html``).

        Returns:
            The file's bytes.

        Raises:
            NotFoundError: No such version or file.
            IntegrityError: The file's sha256 differs from the manifest's.
        """
        self._check_file_name(name)
        manifest = self.get_manifest(model, version)
        key = self._file_key(model, version, name)
        try:
            data = self.store.get(key).data
        except NotFoundError:
            listed = ", ".join(sorted(manifest.get("files", {}))) or "none"
            raise NotFoundError(
                f"model {model!r} version {_short(version)} has no file {name!r} (manifest lists: {listed})"
            ) from None
        expected = (manifest.get("files", {}).get(name) or {}).get("sha256")
        if expected and _sha256(data) != expected:
            raise IntegrityError(
                f"{self._where(key)} failed its sha256 check (manifest {expected[:12]}, stored "
                f"{_sha256(data)[:12]}); model {model!r} version {_short(version)} was tampered with or "
                "corrupted"
            )
        return data

    def put_file(self, model: str, version: str, name: str, data: bytes) -> None:
        """Add an artifact to an existing version after the fact (write-once).

        Files added this way are not listed in the (immutable) manifest, so only their immutability is
        guaranteed, not a recorded sha256. Prefer ``put_version(..., extra_files=...)``.

        Args:
            model: Registry name of the model.
            version: Full version; it must be complete.
            name: File name (not one of the reserved names).
            data: The bytes.

        Raises:
            NotFoundError: No such version.
            IntegrityError: The file exists with different content.
        """
        self._check_file_name(name)
        if name in RESERVED_FILES:
            raise RegistryError(f"{name!r} is written by put_version only")
        self.get_manifest(model, version)
        self._write_once(self._file_key(model, version, name), bytes(data))

    def list_models(self) -> list[str]:
        """Names of the models that have at least one folder in the registry, sorted."""
        return [name for name in self.store.list_children("models") if _NAME_RE.fullmatch(name)]

    def list_versions(self, model: str) -> list[dict[str, Any]]:
        """The manifests of a model's complete versions, oldest first (by ``created_at``, then version).

        Incomplete versions (no manifest yet) are skipped with a warning.

        Args:
            model: Registry name of the model.

        Returns:
            Manifest dicts; empty when the model has none.
        """
        self._check_model(model)
        versions = [v for v in self.store.list_children(f"models/{model}") if _VERSION_RE.fullmatch(v)]
        keys = [self._file_key(model, v, MANIFEST_FILE) for v in versions]
        manifests: list[dict[str, Any]] = []
        for version, key, obj in zip(versions, keys, self._get_many(keys), strict=True):
            if obj is None:
                logger.warning(
                    "model %s version %s has no manifest (incomplete upload); skipped", model, version
                )
                continue
            manifests.append(_load_json(obj.data, self._where(key)))
        oldest = datetime.min.replace(tzinfo=UTC)
        manifests.sort(key=lambda m: (_parse_time(m.get("created_at")) or oldest, str(m.get("version"))))
        return manifests

    def resolve_version(self, model: str, prefix: str) -> str:
        """Expand a unique version prefix (as git does with commits).

        Args:
            model: Registry name of the model.
            prefix: Leading hex characters of a version, or a full version.

        Returns:
            The full version.

        Raises:
            NotFoundError: No version starts with ``prefix``.
            RegistryError: Several versions do.
        """
        self._check_model(model)
        prefix = prefix.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
            raise NotFoundError(f"{prefix!r} is not a version or version prefix (hex characters)")
        if len(prefix) == 64:
            return prefix
        matches = [
            v
            for v in self.store.list_children(f"models/{model}")
            if _VERSION_RE.fullmatch(v) and v.startswith(prefix)
        ]
        if not matches:
            raise NotFoundError(
                f"model {model!r} has no version starting with {prefix!r} in {self.store.url}"
            )
        if len(matches) > 1:
            shown = ", ".join(_short(v) for v in matches[:5])
            raise RegistryError(
                f"version prefix {prefix!r} of model {model!r} is ambiguous: {len(matches)} versions match "
                f"({shown}{', ...' if len(matches) > 5 else ''}); give more characters"
            )
        return matches[0]

    # --- the production pointer ----------------------------------------------------------------------
    def production(self, model: str) -> Pointer | None:
        """The production pointer of a model, with the ETag to pass to :meth:`promote`.

        Args:
            model: Registry name of the model.

        Returns:
            The pointer, or ``None`` when nothing was promoted yet.
        """
        self._check_model(model)
        key = self._pointer_key(model)
        try:
            obj = self.store.get(key)
        except NotFoundError:
            return None
        data = _load_json(obj.data, self._where(key))
        updated_at = _parse_time(data.get("updated_at"))
        if not isinstance(data.get("version"), str) or updated_at is None:
            raise IntegrityError(f"production pointer {self._where(key)} lacks a version or updated_at")
        return Pointer(
            version=data["version"],
            previous=data.get("previous"),
            updated_at=updated_at,
            actor=str(data.get("actor", "")),
            reason=str(data.get("reason", "")),
            run_id=str(data.get("run_id", "")),
            etag=obj.etag,
            decision=str(data.get("decision", "promoted")),
        )

    def promote(
        self,
        model: str,
        version: str,
        *,
        expected_etag: str | None,
        actor: str,
        reason: str,
        run_id: str,
        metrics: Mapping[str, Any] | None = None,
        verdict: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Move the production pointer to ``version`` if nobody moved it since ``expected_etag`` was read.

        Re-running a promotion that already happened for the same ``run_id`` returns its record (and writes it
        if an earlier attempt moved the pointer but failed to record it); the pointer does not move twice.

        Args:
            model: Registry name of the model.
            version: The candidate; it must exist and pass its sha256 check.
            expected_etag: ``production(model).etag`` read before the decision, or ``None`` when the decision
                assumed there is no production model yet.
            actor: Who or what decided (user name, ``airflow:<dag_id>``).
            reason: Why, in words.
            run_id: The run that decided (Airflow run id, CLI invocation id).
            metrics: Measured numbers to record.
            verdict: The gate's verdict to record.

        Returns:
            The ``promoted`` audit record.

        Raises:
            NotFoundError: The version does not exist.
            IntegrityError: The version fails its sha256 check.
            ConflictError: The pointer moved since ``expected_etag`` (a ``conflict`` record was written).
            RegistryError: The version already is production, or the store failed (the message says what
                state it left).
        """
        self._check_model(model)
        self.load_version(model, version)  # exists and is intact: never point production at a broken model
        current = self.production(model)
        if current is not None and (current.version, current.run_id, current.decision) == (
            version,
            run_id,
            "promoted",
        ):
            # A re-run of this very promotion (e.g. an Airflow retry after the audit write failed).
            return self._recorded_or_record(
                "promoted",
                model,
                actor=actor,
                reason=reason,
                run_id=run_id,
                from_version=current.previous,
                to_version=version,
                metrics=metrics,
                verdict=verdict,
            )
        if not _etag_holds(current, expected_etag):
            raise self._conflict(
                "promoted",
                model,
                version,
                expected_etag=expected_etag,
                expected_from=None,
                holder=current,
                actor=actor,
                reason=reason,
                run_id=run_id,
                metrics=metrics,
                verdict=verdict,
            )
        if current is not None and current.version == version:
            raise RegistryError(
                f"model {model!r} version {_short(version)} already is production (set by {current.actor!r}, "
                f"run {current.run_id!r}); nothing to promote"
            )
        return self._move_pointer(
            "promoted",
            model,
            version,
            current=current,
            expected_etag=expected_etag,
            actor=actor,
            reason=reason,
            run_id=run_id,
            metrics=metrics,
            verdict=verdict,
        )

    def rollback(
        self, model: str, *, to_version: str | None = None, actor: str, reason: str, run_id: str
    ) -> AuditRecord:
        """Move the production pointer back: to ``to_version``, or to the pointer's ``previous`` version.

        Args:
            model: Registry name of the model.
            to_version: Full version to serve; default the version production replaced.
            actor: Who rolls back.
            reason: Why.
            run_id: Id of this rollback (the CLI makes one per invocation).

        Returns:
            The ``rolled_back`` audit record.

        Raises:
            NotFoundError: No production pointer, or no such version.
            IntegrityError: The target fails its sha256 check.
            ConflictError: The pointer moved while rolling back (a ``conflict`` record was written).
            RegistryError: Nothing to roll back to, or the store failed.
        """
        self._check_model(model)
        current = self.production(model)
        if current is None:
            raise NotFoundError(
                f"model {model!r} has no production pointer in {self.store.url}; nothing to roll back"
            )
        if (
            current.run_id == run_id
            and current.decision == "rolled_back"
            and to_version in (None, current.version)
        ):
            return self._recorded_or_record(
                "rolled_back",
                model,
                actor=actor,
                reason=reason,
                run_id=run_id,
                from_version=current.previous,
                to_version=current.version,
                metrics=None,
                verdict=None,
            )
        target = to_version or current.previous
        if target is None:
            raise RegistryError(
                f"production of model {model!r} ({_short(current.version)}) has no previous version to roll "
                "back to; name one with --to VERSION (see `lifelong registry list`)"
            )
        if target == current.version:
            raise RegistryError(
                f"model {model!r} version {_short(target)} already is production; nothing to do"
            )
        self.load_version(model, target)
        return self._move_pointer(
            "rolled_back",
            model,
            target,
            current=current,
            expected_etag=current.etag,
            actor=actor,
            reason=reason,
            run_id=run_id,
            metrics=None,
            verdict=None,
        )

    def reject(
        self,
        model: str,
        version: str,
        *,
        actor: str,
        reason: str,
        run_id: str,
        metrics: Mapping[str, Any] | None = None,
        verdict: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Record that a candidate was not promoted; the pointer is untouched.

        The candidate need not be stored (one with non-finite weights may never be). Recording the same
        rejection again for the same ``run_id`` returns the first record.

        Args:
            model: Registry name of the model.
            version: The candidate's version.
            actor: Who or what decided.
            reason: Why (e.g. which gate check failed).
            run_id: The run that decided.
            metrics: Measured numbers.
            verdict: The gate's verdict.

        Returns:
            The ``rejected`` audit record.
        """
        self._check_model(model)
        current = self.production(model)
        return self._recorded_or_record(
            "rejected",
            model,
            actor=actor,
            reason=reason,
            run_id=run_id,
            from_version=current.version if current else None,
            to_version=version,
            metrics=metrics,
            verdict=verdict,
        )

    def _move_pointer(
        self,
        decision: Decision,
        model: str,
        target: str,
        *,
        current: Pointer | None,
        expected_etag: str | None,
        actor: str,
        reason: str,
        run_id: str,
        metrics: Mapping[str, Any] | None,
        verdict: Mapping[str, Any] | None,
    ) -> AuditRecord:
        key = self._pointer_key(model)
        previous = current.version if current else None
        updated_at = _now()
        body = {
            "schema": SCHEMA_VERSION,
            "version": target,
            "previous": previous,
            "updated_at": updated_at.isoformat(),
            "actor": actor,
            "reason": reason,
            "run_id": run_id,
            "decision": decision,
        }
        what = "promotion" if decision == "promoted" else "rollback"
        try:
            self.store.put_if_match(key, _dump(body), expected_etag)
        except PreconditionFailedError:
            holder = self.production(model)
            # A retried request (the first attempt landed, its answer was lost) sees its own write as a
            # conflict: recognise it by its exact content.
            ours = holder is not None and (holder.version, holder.run_id, holder.updated_at) == (
                target,
                run_id,
                updated_at,
            )
            if not ours:
                raise self._conflict(
                    decision,
                    model,
                    target,
                    expected_etag=expected_etag,
                    expected_from=previous,
                    holder=holder,
                    actor=actor,
                    reason=reason,
                    run_id=run_id,
                    metrics=metrics,
                    verdict=verdict,
                ) from None
        except RegistryError as exc:
            raise RegistryError(
                f"{what} of model {model!r} to {_short(target)} failed while writing the production pointer: "
                f"{exc}. The pointer still names {_short(previous)} unless the store applied the write "
                "before failing, and no audit record was written; re-running with the same run id "
                f"({run_id}) is safe"
            ) from exc
        logger.info(
            "model %s production %s -> %s (%s by %s)", model, _short(previous), _short(target), what, actor
        )
        try:
            return self._write_audit(
                decision,
                model,
                actor=actor,
                reason=reason,
                run_id=run_id,
                from_version=previous,
                to_version=target,
                metrics=metrics,
                verdict=verdict,
            )
        except RegistryError as exc:
            raise RegistryError(
                f"production of model {model!r} now names {_short(target)}, but the audit record of this "
                f"{what} could not be written: {exc}. Re-run with the same run id ({run_id}) to record it"
            ) from exc

    def _conflict(
        self,
        attempted: Decision,
        model: str,
        target: str,
        *,
        expected_etag: str | None,
        expected_from: str | None,
        holder: Pointer | None,
        actor: str,
        reason: str,
        run_id: str,
        metrics: Mapping[str, Any] | None,
        verdict: Mapping[str, Any] | None,
    ) -> ConflictError:
        """Audit a lost race and build the error to raise."""
        what = "promotion" if attempted == "promoted" else "rollback"
        if holder is None:
            now = "there is no production pointer (it was expected to exist)"
        else:
            now = (
                f"production now names {_short(holder.version)}, set by {holder.actor!r} "
                f"(run {holder.run_id!r}, {holder.decision} at {holder.updated_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
        message = (
            f"{what} of model {model!r} to {_short(target)} lost a race for the production pointer: {now}. "
            "The pointer was not changed by this run; re-read it and decide again"
        )
        try:
            self._write_audit(
                "conflict",
                model,
                actor=actor,
                reason=reason,
                run_id=run_id,
                from_version=expected_from,
                to_version=target,
                metrics=metrics,
                verdict=verdict,
                detail={
                    "attempted": attempted,
                    "expected_etag": expected_etag,
                    "holder": holder.to_dict() if holder else None,
                },
            )
        except RegistryError as exc:
            logger.error("could not audit the lost race of model %s: %s", model, exc)
            message += f" (this conflict could not be audited: {exc})"
        logger.warning(message)
        return ConflictError(message)

    # --- the audit log -------------------------------------------------------------------------------
    def _write_audit(
        self,
        decision: Decision,
        model: str,
        *,
        actor: str,
        reason: str,
        run_id: str,
        from_version: str | None,
        to_version: str | None,
        metrics: Mapping[str, Any] | None,
        verdict: Mapping[str, Any] | None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        record = AuditRecord(
            decision=decision,
            model=model,
            timestamp=_now(),
            actor=actor,
            reason=reason,
            run_id=run_id,
            from_version=from_version,
            to_version=to_version,
            # Normalised as stored, so the returned record equals the one audit() reads back.
            metrics=_jsonable(dict(metrics or {})),
            verdict=_jsonable(dict(verdict)) if verdict is not None else None,
            detail=_jsonable(dict(detail or {})),
        )
        data = _dump(record.to_dict())
        for _ in range(5):
            # The nonce keeps records of different processes with equal timestamps apart.
            stamp = format_timestamp(record.timestamp)
            key = f"audit/{model}/{stamp}-{secrets.token_hex(3)}-{_safe_run_id(run_id)}.json"
            try:
                self.store.put_if_absent(key, data)
            except PreconditionFailedError:
                continue
            logger.info("audit %s: model %s %s (run %s)", decision, model, _short(to_version), run_id)
            return replace(record, key=key)
        raise RegistryError(f"could not find a free audit key under {self._where(f'audit/{model}')}")

    def _recorded_or_record(
        self,
        decision: Decision,
        model: str,
        *,
        actor: str,
        reason: str,
        run_id: str,
        from_version: str | None,
        to_version: str | None,
        metrics: Mapping[str, Any] | None,
        verdict: Mapping[str, Any] | None,
    ) -> AuditRecord:
        """The record this run already wrote for this decision, or a new one (idempotent re-runs)."""
        suffix = f"-{_safe_run_id(run_id)}.json"
        keys = [k for k in self.store.list_keys(f"audit/{model}") if k.endswith(suffix)]
        for record in self._read_records(keys):
            if record.decision == decision and record.run_id == run_id and record.to_version == to_version:
                logger.info(
                    "run %s already recorded %s of model %s; not repeating it", run_id, decision, model
                )
                return record
        return self._write_audit(
            decision,
            model,
            actor=actor,
            reason=reason,
            run_id=run_id,
            from_version=from_version,
            to_version=to_version,
            metrics=metrics,
            verdict=verdict,
        )

    def _read_records(self, keys: list[str]) -> list[AuditRecord]:
        records = []
        for key, obj in zip(keys, self._get_many(keys), strict=True):
            if obj is None:  # listed a moment ago; audit records are never deleted through this API
                raise IntegrityError(f"audit record {self._where(key)} vanished while being read")
            records.append(AuditRecord.from_dict(_load_json(obj.data, self._where(key)), key=key))
        return records

    def audit(self, model: str, *, since: datetime | None = None) -> list[AuditRecord]:
        """Every decision recorded about a model, oldest first.

        Args:
            model: Registry name of the model.
            since: Only records at or after this moment (naive means UTC).

        Returns:
            The records in chronological order (ties broken by the record's nonce).
        """
        self._check_model(model)
        keys = self.store.list_keys(f"audit/{model}")
        if since is not None:
            floor = format_timestamp(since)
            keys = [k for k in keys if k.rsplit("/", 1)[-1].split("-", 1)[0] >= floor]
        return self._read_records(keys)


def _etag_holds(current: Pointer | None, expected_etag: str | None) -> bool:
    if expected_etag is None:
        return current is None
    return current is not None and same_etag(current.etag, expected_etag)


def _safe_run_id(run_id: str) -> str:
    # Airflow run ids hold ':' and '+' (manual__2026-12-03T18:45:12+00:00): fine for S3, not for every
    # filesystem. The key only needs to be recognisable; the record holds the exact run id.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._-")[:80]
    return safe or "run"
