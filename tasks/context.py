"""What every step needs: the stores, the serving model, its held-out data, and the run's staging area."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lifelong.errors import NotFoundError
from lifelong.settings import Settings

log = logging.getLogger(__name__)

HELDOUT_FILE = "heldout.json"
STAGING = "staging"


def to_summary(obj: Any) -> dict[str, Any]:
    """A step result as a JSON-able dict (what goes through XCom)."""
    return json.loads(json.dumps(asdict(obj), default=str))


def as_utc(value: datetime | str) -> datetime:
    """Parse an ISO string or take a datetime, and make it timezone-aware UTC."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def registry(settings: Settings):
    from lifelong.stores.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def label_store(settings: Settings):
    from lifelong.stores.labels import LabelStore

    return LabelStore.from_settings(settings)


def lake(settings: Settings):
    from lifelong.stores.lake import TelemetryLake

    return TelemetryLake.from_settings(settings)


@dataclass
class ServingModel:
    """The production model as loaded from the registry (sha256 verified)."""

    detector: Any
    version: str
    manifest: dict[str, Any]
    etag: str


def load_production(settings: Settings, reg: Any = None) -> ServingModel | None:
    """The production model, or None when nothing was promoted yet."""
    from lifelong.models.base import Detector

    reg = reg or registry(settings)
    model = settings.resolved_model_name
    pointer = reg.production(model)
    if pointer is None:
        return None
    loaded = reg.load_version(model, pointer.version)
    det = Detector.from_artifacts(loaded.weights, loaded.config, settings.device)
    return ServingModel(det, pointer.version, loaded.manifest, pointer.etag)


def require_production(settings: Settings, reg: Any = None) -> ServingModel:
    serving = load_production(settings, reg)
    if serving is None:
        raise NotFoundError(
            f"no production model for {settings.resolved_model_name!r}: run the bootstrap_model DAG first"
        )
    return serving


def load_heldout(settings: Settings, version: str, reg: Any = None) -> list[Any]:
    """The held-out normal samples kept beside a version (the forgetting gate and the memory set)."""
    reg = reg or registry(settings)
    try:
        return json.loads(reg.get_file(settings.resolved_model_name, version, HELDOUT_FILE))
    except NotFoundError:
        log.warning("version %s has no held-out split; the forgetting gate has nothing to measure", version)
        return []


# --- the run's staging area (in the registry's store, so every worker sees it) --------------------------
def _staging_key(settings: Settings, run_id: str, name: str) -> str:
    from lifelong.stores.objectstore import check_key

    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return check_key(f"{STAGING}/{settings.resolved_model_name}/{safe_run}/{name}")


def stage_put(settings: Settings, run_id: str, name: str, data: bytes, reg: Any = None) -> str:
    """Write (or overwrite: a rerun of the same step replaces its own output) a staged file of a run."""
    store = (reg or registry(settings)).store
    key = _staging_key(settings, run_id, name)
    store.put_if_match(key, data, store.head(key))
    return key


def stage_get(settings: Settings, run_id: str, name: str, reg: Any = None) -> bytes:
    store = (reg or registry(settings)).store
    return store.get(_staging_key(settings, run_id, name)).data


def stage_exists(settings: Settings, run_id: str, name: str, reg: Any = None) -> bool:
    store = (reg or registry(settings)).store
    return store.head(_staging_key(settings, run_id, name)) is not None
