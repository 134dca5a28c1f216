"""The model registry contract, run on moto's S3 server over HTTP and on a local folder; plus its CLI."""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from botocore.exceptions import ClientError
from safetensors.numpy import save as st_save
from typer.testing import CliRunner

from lifelong.constants import MANIFEST_FILE, WEIGHTS_FILE
from lifelong.errors import ConfigError, ConflictError, IntegrityError, NotFoundError, RegistryError
from lifelong.stores import objectstore
from lifelong.stores.objectstore import (
    LocalObjectStore,
    PreconditionFailedError,
    S3ObjectStore,
    check_key,
)
from lifelong.stores.registry import (
    CONFIG_FILE,
    ModelRegistry,
    canonical_json,
    content_address,
)

MODEL = "events"
CONFIG = {"kind": "lstm", "window": 10, "hidden": 8, "threshold": 2.5, "vocab": {"a": 1, "b": 2}}


def make_weights(seed: int) -> bytes:
    """Small real safetensors bytes, distinct per seed."""
    rng = np.random.default_rng(seed)
    return st_save({"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.full(3, seed, np.float32)})


def put(registry: ModelRegistry, seed: int, **manifest: Any) -> str:
    return registry.put_version(
        MODEL,
        make_weights(seed),
        CONFIG,
        {"parent": None, "run_id": f"bootstrap-{seed}", **manifest},
        extra_files={"report.json": json.dumps({"seed": seed}).encode()},
    )


@dataclass
class Backend:
    """A registry on one backend, plus a way to write behind its back."""

    name: str
    registry: ModelRegistry
    overwrite: Callable[[str, bytes], None]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        registry = ModelRegistry(str(tmp_path / "registry"))

        def overwrite(key: str, data: bytes) -> None:
            Path(registry.store.location(key)).write_bytes(data)

    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        client = request.getfixturevalue("s3_client")
        registry = ModelRegistry(f"s3://{bucket}/registry", endpoint_url=endpoint)

        def overwrite(key: str, data: bytes) -> None:
            client.put_object(Bucket=bucket, Key=f"registry/{key}", Body=data)  # no condition: a tamperer

    yield Backend(request.param, registry, overwrite)


# -- content address --------------------------------------------------------------------------------------
def test_content_address_is_sha256_of_length_prefixed_weights_and_canonical_config() -> None:
    weights = make_weights(1)
    expected = hashlib.sha256(
        len(weights).to_bytes(8, "big")
        + weights
        + b'{"hidden":8,"kind":"lstm","threshold":2.5,"vocab":{"a":1,"b":2},"window":10}'
    ).hexdigest()
    assert content_address(weights, CONFIG) == expected
    reordered = dict(reversed(list(CONFIG.items())))
    assert content_address(weights, reordered) == expected  # key order is irrelevant
    assert content_address(weights, {**CONFIG, "threshold": 2.6}) != expected
    assert content_address(make_weights(2), CONFIG) != expected
    with pytest.raises(RegistryError, match="not plain JSON"):
        canonical_json({"threshold": float("nan")})


# -- versions ---------------------------------------------------------------------------------------------
def test_put_and_load_roundtrip(backend: Backend) -> None:
    reg = backend.registry
    weights = make_weights(1)
    version = reg.put_version(
        MODEL,
        weights,
        CONFIG,
        {"parent": None, "metrics": {"fp_rate": 0.01}},
        extra_files={"split.json": b"[1,2]"},
    )
    assert version == content_address(weights, CONFIG)

    loaded = reg.load_version(MODEL, version)
    assert loaded.weights == weights
    assert loaded.config == CONFIG
    assert loaded.version == version
    manifest = loaded.manifest
    assert (manifest["model"], manifest["version"], manifest["sha256"]) == (MODEL, version, version)
    assert manifest["metrics"] == {"fp_rate": 0.01}
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert manifest["files"]["split.json"] == {"sha256": hashlib.sha256(b"[1,2]").hexdigest(), "size": 5}
    assert set(manifest["files"]) == {WEIGHTS_FILE, CONFIG_FILE, "split.json"}
    assert reg.get_file(MODEL, version, "split.json") == b"[1,2]"
    assert reg.get_manifest(MODEL, version) == manifest
    assert reg.has_version(MODEL, version)
    assert reg.list_models() == [MODEL]
    assert [m["version"] for m in reg.list_versions(MODEL)] == [version]


def test_put_is_idempotent_and_versions_are_immutable(backend: Backend) -> None:
    reg = backend.registry
    first = put(reg, 1)
    keys = reg.store.list_keys("models")
    manifest = reg.get_manifest(MODEL, first)

    assert put(reg, 1) == first  # same bytes, same manifest: a no-op
    assert reg.store.list_keys("models") == keys
    assert reg.get_manifest(MODEL, first) == manifest  # created_at kept from the first put

    with pytest.raises(IntegrityError, match="different manifest.*run_id"):
        put(reg, 1, run_id="another-run")
    with pytest.raises(IntegrityError, match="different content"):
        reg.put_file(MODEL, first, "report.json", b"something else")
    reg.put_file(MODEL, first, "report.json", json.dumps({"seed": 1}).encode())  # identical: fine
    reg.put_file(MODEL, first, "notes.txt", b"added later")
    assert reg.get_file(MODEL, first, "notes.txt") == b"added later"


def test_interrupted_upload_is_invisible_until_completed(backend: Backend) -> None:
    reg = backend.registry
    weights = make_weights(3)
    version = content_address(weights, CONFIG)
    # A writer crashed after the weights: no manifest, so the version does not exist for readers.
    reg.store.put_if_absent(f"models/{MODEL}/{version}/{WEIGHTS_FILE}", weights)
    with pytest.raises(NotFoundError, match="incomplete"):
        reg.load_version(MODEL, version)
    assert reg.list_versions(MODEL) == []
    assert not reg.has_version(MODEL, version)

    assert reg.put_version(MODEL, weights, CONFIG, {}) == version
    assert reg.load_version(MODEL, version).weights == weights


def test_missing_version_and_bad_inputs(backend: Backend) -> None:
    reg = backend.registry
    with pytest.raises(NotFoundError, match=f"no version {'0' * 64}"):
        reg.load_version(MODEL, "0" * 64)
    with pytest.raises(NotFoundError, match="not a full version"):
        reg.load_version(MODEL, "abc")
    with pytest.raises(RegistryError, match="not safetensors"):
        reg.put_version(MODEL, pickle.dumps({"w": [1.0]}), CONFIG, {})
    with pytest.raises(RegistryError, match="collides"):
        reg.put_version(MODEL, make_weights(1), CONFIG, {}, extra_files={MANIFEST_FILE: b"{}"})
    with pytest.raises(ConfigError, match="invalid model name"):
        reg.list_versions("../etc")
    assert reg.production(MODEL) is None
    assert reg.audit(MODEL) == []


def test_tampered_weights_are_refused_on_load(backend: Backend) -> None:
    reg = backend.registry
    version = put(reg, 1)
    good = make_weights(1)
    backend.overwrite(f"models/{MODEL}/{version}/{WEIGHTS_FILE}", good[:-4] + b"\x00\x00\x80\x7f")

    with pytest.raises(IntegrityError, match=f"version {version} failed its sha256 check"):
        reg.load_version(MODEL, version)
    # A tampered version can never become production either.
    with pytest.raises(IntegrityError):
        reg.promote(MODEL, version, expected_etag=None, actor="t", reason="r", run_id="run-1")
    assert reg.production(MODEL) is None


def test_tampered_config_and_report_are_refused(backend: Backend) -> None:
    reg = backend.registry
    version = put(reg, 1)
    backend.overwrite(f"models/{MODEL}/{version}/report.json", b'{"seed": 999}')
    with pytest.raises(IntegrityError, match="report.json failed its sha256 check"):
        reg.get_file(MODEL, version, "report.json")
    backend.overwrite(
        f"models/{MODEL}/{version}/{CONFIG_FILE}", canonical_json({**CONFIG, "threshold": 99.0})
    )
    with pytest.raises(IntegrityError, match=version):
        reg.load_version(MODEL, version)


def test_resolve_version_prefix(backend: Backend) -> None:
    reg = backend.registry
    versions = [put(reg, seed) for seed in range(17)]  # 17 versions: two must share a first hex digit
    target = versions[5]
    assert reg.resolve_version(MODEL, target[:10]) == target
    assert reg.resolve_version(MODEL, target) == target
    first_digits = [v[0] for v in versions]
    shared = next(d for d in first_digits if first_digits.count(d) > 1)
    with pytest.raises(RegistryError, match="ambiguous"):
        reg.resolve_version(MODEL, shared)
    missing = next(
        p
        for p in (f"{a}{b}" for a in "0123456789abcdef" for b in "0123456789abcdef")
        if not any(v.startswith(p) for v in versions)
    )
    with pytest.raises(NotFoundError, match="no version starting with"):
        reg.resolve_version(MODEL, missing)
    listed = reg.list_versions(MODEL)
    assert sorted(m["version"] for m in listed) == sorted(versions)
    created = [m["created_at"] for m in listed]
    assert created == sorted(created)


# -- the production pointer -------------------------------------------------------------------------------
def test_promote_moves_pointer_and_audits(backend: Backend) -> None:
    reg = backend.registry
    v1, v2 = put(reg, 1), put(reg, 2)
    first = reg.promote(MODEL, v1, expected_etag=None, actor="airflow:boot", reason="bootstrap", run_id="r1")
    assert (first.decision, first.from_version, first.to_version) == ("promoted", None, v1)
    pointer = reg.production(MODEL)
    assert pointer is not None and (pointer.version, pointer.previous, pointer.run_id) == (v1, None, "r1")

    second = reg.promote(
        MODEL,
        v2,
        expected_etag=pointer.etag,
        actor="airflow:unlearn",
        reason="gate passed",
        run_id="r2",
        metrics={"fp_rate": 0.02, "loss": float("nan")},
        verdict={"passed": True, "checks": ["fp", "fix"]},
    )
    assert (second.from_version, second.to_version) == (v1, v2)
    now = reg.production(MODEL)
    assert now is not None and (now.version, now.previous, now.actor) == (v2, v1, "airflow:unlearn")
    assert now.etag != pointer.etag

    history = reg.audit(MODEL)
    assert [(r.decision, r.to_version) for r in history] == [("promoted", v1), ("promoted", v2)]
    assert history[1].metrics == {"fp_rate": 0.02, "loss": "NaN"}  # recorded faithfully, valid JSON
    assert history[1].verdict == {"passed": True, "checks": ["fp", "fix"]}
    assert history[1] == second

    # A stale ETag loses, and the loss is audited.
    with pytest.raises(ConflictError, match="lost a race"):
        reg.promote(MODEL, v1, expected_etag=pointer.etag, actor="late", reason="stale", run_id="r3")
    assert reg.production(MODEL).version == v2  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        reg.promote(MODEL, "f" * 64, expected_etag=now.etag, actor="t", reason="r", run_id="r4")
    with pytest.raises(RegistryError, match="already is production"):
        reg.promote(MODEL, v2, expected_etag=now.etag, actor="t", reason="r", run_id="r5")
    assert [r.decision for r in reg.audit(MODEL)] == ["promoted", "promoted", "conflict"]


def test_promote_rerun_with_same_run_id_is_idempotent(backend: Backend) -> None:
    reg = backend.registry
    v1 = put(reg, 1)
    first = reg.promote(MODEL, v1, expected_etag=None, actor="a", reason="r", run_id="run-7")
    again = reg.promote(MODEL, v1, expected_etag=None, actor="a", reason="r", run_id="run-7")
    assert again == first and again.key == first.key
    assert len(reg.audit(MODEL)) == 1


def _race(reg: ModelRegistry, expected_etag: str | None, attempts: dict[str, str]) -> dict[str, Any]:
    """Promote each ``{run_id: version}`` from its own thread at the same moment, all from one ETag."""
    barrier = threading.Barrier(len(attempts))
    outcomes: dict[str, Any] = {}

    def attempt(run_id: str, version: str) -> None:
        # Each worker has its own registry object (its own S3 client), as two Airflow workers would.
        mine = ModelRegistry(reg.url, endpoint_url=getattr(reg.store, "endpoint_url", None))
        barrier.wait()
        try:
            mine.promote(
                MODEL, version, expected_etag=expected_etag, actor=run_id, reason="race", run_id=run_id
            )
            outcomes[run_id] = "won"
        except Exception as exc:  # collected and asserted by the caller
            outcomes[run_id] = exc

    threads = [threading.Thread(target=attempt, args=item) for item in attempts.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_concurrent_promotions_exactly_one_wins(backend: Backend) -> None:
    reg = backend.registry
    candidates = [put(reg, seed) for seed in range(6)]
    # Round 0 starts with no pointer at all (both expect none); later rounds both hold the same ETag.
    for round_no in range(3):
        left, right = candidates[2 * round_no], candidates[2 * round_no + 1]
        current = reg.production(MODEL)
        before = current.version if current else None
        runs = {f"race{round_no}-left": left, f"race{round_no}-right": right}
        outcomes = _race(reg, current.etag if current else None, runs)

        winners = [run for run, result in outcomes.items() if result == "won"]
        losers = {run: result for run, result in outcomes.items() if result != "won"}
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and all(isinstance(exc, ConflictError) for exc in losers.values()), outcomes
        winner_version = runs[winners[0]]
        loser_run, loser_exc = next(iter(losers.items()))
        assert winner_version[:12] in str(loser_exc) and winners[0] in str(loser_exc)  # who holds it now

        pointer = reg.production(MODEL)
        assert pointer is not None and (pointer.version, pointer.previous) == (winner_version, before)
        records = reg.audit(MODEL)
        promoted = [r for r in records if r.decision == "promoted" and r.run_id == winners[0]]
        conflicts = [r for r in records if r.decision == "conflict" and r.run_id == loser_run]
        assert len(promoted) == 1 and len(conflicts) == 1
        assert conflicts[0].detail["holder"]["version"] == winner_version
        assert conflicts[0].to_version == runs[loser_run]
    # Within a round the two records may land in either order; in all, one win and one loss per round.
    assert sorted(r.decision for r in reg.audit(MODEL)) == ["conflict"] * 3 + ["promoted"] * 3


def test_cas_conflict_detected_by_the_store(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone moves the pointer between our read and our write: the store's precondition catches it."""
    reg = backend.registry
    v1, v2, v3 = put(reg, 1), put(reg, 2), put(reg, 3)
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="boot")
    etag = reg.production(MODEL).etag  # type: ignore[union-attr]
    rival = ModelRegistry(reg.url, endpoint_url=getattr(reg.store, "endpoint_url", None))
    original = reg.store.put_if_match

    def sneaky(key: str, data: bytes, expected: str | None) -> str:
        if key.endswith("production.json"):
            rival.promote(MODEL, v3, expected_etag=expected, actor="rival", reason="faster", run_id="rival")
        return original(key, data, expected)

    monkeypatch.setattr(reg.store, "put_if_match", sneaky)
    with pytest.raises(ConflictError, match="set by 'rival'"):
        reg.promote(MODEL, v2, expected_etag=etag, actor="slow", reason="slower", run_id="slow")
    assert reg.production(MODEL).version == v3  # type: ignore[union-attr]
    conflict = reg.audit(MODEL)[-1]
    assert (conflict.decision, conflict.run_id, conflict.from_version, conflict.to_version) == (
        "conflict",
        "slow",
        v1,
        v2,
    )


def _break_pointer_writes(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store fail when the production pointer is written, the way each backend really fails."""
    store = backend.registry.store
    if isinstance(store, S3ObjectStore):
        original = store.client.put_object

        def put_object(**kwargs: Any) -> Any:
            if kwargs["Key"].endswith("production.json"):
                raise ClientError(
                    {
                        "Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
                        "ResponseMetadata": {"HTTPStatusCode": 500},
                    },
                    "PutObject",
                )
            return original(**kwargs)

        monkeypatch.setattr(store.client, "put_object", put_object)
    else:

        def replace(src: Path, dst: Path) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))

        monkeypatch.setattr(objectstore, "_atomic_replace", replace)


def test_store_failure_during_promotion_leaves_pointer_and_log_unchanged(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = backend.registry
    v1, v2 = put(reg, 1), put(reg, 2)
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="boot")
    before = reg.production(MODEL)
    assert before is not None

    with monkeypatch.context() as mp:
        _break_pointer_writes(backend, mp)
        with pytest.raises(RegistryError, match="failed while writing the production pointer") as info:
            reg.promote(MODEL, v2, expected_etag=before.etag, actor="a", reason="r", run_id="run-9")
    assert not isinstance(info.value, ConflictError)
    assert f"still names {v1[:12]}" in str(info.value)
    assert "InternalError" in str(info.value) or "No space left" in str(info.value)

    assert reg.production(MODEL) == before  # same version, same ETag
    assert [r.decision for r in reg.audit(MODEL)] == ["promoted"]  # nothing was decided
    if backend.name == "local":  # no temporary file left behind
        folder = Path(reg.store.location(f"models/{MODEL}/aliases"))
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []

    # The retry (same run) goes through once the store is healthy again.
    record = reg.promote(MODEL, v2, expected_etag=before.etag, actor="a", reason="r", run_id="run-9")
    assert (record.from_version, record.to_version) == (v1, v2)
    assert reg.production(MODEL).version == v2  # type: ignore[union-attr]


def test_audit_failure_after_pointer_move_is_reported_and_repaired_by_rerun(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = backend.registry
    v1, v2 = put(reg, 1), put(reg, 2)
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="boot")
    etag = reg.production(MODEL).etag  # type: ignore[union-attr]
    original = reg.store.put_if_absent

    def failing_audit(key: str, data: bytes) -> str:
        if key.startswith("audit/"):
            raise RegistryError(f"S3 PUT of {key} failed: SlowDown (HTTP 503)")
        return original(key, data)

    with monkeypatch.context() as mp:
        mp.setattr(reg.store, "put_if_absent", failing_audit)
        with pytest.raises(RegistryError, match=f"now names {v2[:12]}.*Re-run with the same run id"):
            reg.promote(MODEL, v2, expected_etag=etag, actor="a", reason="r", run_id="run-5")

    # The Airflow retry: same run id, the ETag it read before (now stale). No second pointer move.
    record = reg.promote(MODEL, v2, expected_etag=etag, actor="a", reason="r", run_id="run-5")
    assert (record.decision, record.from_version, record.to_version) == ("promoted", v1, v2)
    pointer = reg.production(MODEL)
    assert pointer is not None and (pointer.version, pointer.previous) == (v2, v1)
    assert [(r.decision, r.run_id) for r in reg.audit(MODEL)] == [("promoted", "boot"), ("promoted", "run-5")]


def test_rollback_moves_pointer_to_previous_and_is_audited(backend: Backend) -> None:
    reg = backend.registry
    v1, v2, v3 = put(reg, 1), put(reg, 2), put(reg, 3)
    with pytest.raises(NotFoundError, match="no production pointer"):
        reg.rollback(MODEL, actor="ops", reason="r", run_id="rb0")
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="p1")
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback(MODEL, actor="ops", reason="r", run_id="rb1")
    reg.promote(MODEL, v2, expected_etag=reg.production(MODEL).etag, actor="x", reason="b", run_id="p2")  # type: ignore[union-attr]

    record = reg.rollback(MODEL, actor="ops", reason="FP spike after v2", run_id="rb2")
    assert (record.decision, record.from_version, record.to_version) == ("rolled_back", v2, v1)
    assert (record.actor, record.reason) == ("ops", "FP spike after v2")
    pointer = reg.production(MODEL)
    assert pointer is not None
    assert (pointer.version, pointer.previous, pointer.decision) == (v1, v2, "rolled_back")
    assert reg.rollback(MODEL, actor="ops", reason="FP spike after v2", run_id="rb2") == record  # re-run

    explicit = reg.rollback(MODEL, to_version=v3, actor="ops", reason="pin v3", run_id="rb3")
    assert (explicit.from_version, explicit.to_version) == (v1, v3)
    with pytest.raises(RegistryError, match="already is production"):
        reg.rollback(MODEL, to_version=v3, actor="ops", reason="again", run_id="rb4")
    assert [r.decision for r in reg.audit(MODEL)] == ["promoted", "promoted", "rolled_back", "rolled_back"]


def test_reject_records_without_moving_the_pointer(backend: Backend) -> None:
    reg = backend.registry
    v1, v2 = put(reg, 1), put(reg, 2)
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="p1")
    before = reg.production(MODEL)
    record = reg.reject(
        MODEL,
        v2,
        actor="airflow:unlearn",
        reason="forgetting: FP 0.05 > 0.02",
        run_id="u1",
        metrics={"fp_rate": 0.05},
        verdict={"passed": False, "failed": ["forgetting"]},
    )
    assert (record.decision, record.from_version, record.to_version) == ("rejected", v1, v2)
    assert reg.production(MODEL) == before
    assert reg.reject(MODEL, v2, actor="airflow:unlearn", reason="same", run_id="u1") == record  # idempotent
    assert reg.audit(MODEL)[-1].verdict == {"passed": False, "failed": ["forgetting"]}
    assert len(reg.audit(MODEL)) == 2


def test_audit_history_is_complete_and_chronological(backend: Backend) -> None:
    reg = backend.registry
    written = [
        reg.reject(
            MODEL,
            f"{i:064x}",
            actor="gate",
            reason=f"attempt {i}",
            run_id=f"manual__2026-12-03T18:00:{i:02d}+00:00",
        )
        for i in range(40)
    ]
    history = reg.audit(MODEL)
    assert [r.reason for r in history] == [f"attempt {i}" for i in range(40)]
    assert history == written
    stamps = [r.timestamp for r in history]
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))
    assert history[3].run_id == "manual__2026-12-03T18:00:03+00:00"  # exact, though the key is sanitised

    assert reg.audit(MODEL, since=stamps[30]) == history[30:]
    assert reg.audit(MODEL, since=stamps[-1] + timedelta(seconds=1)) == []
    naive = stamps[35].astimezone(UTC).replace(tzinfo=None)
    assert reg.audit(MODEL, since=naive) == history[35:]  # naive means UTC
    assert reg.audit("other-model") == []


# -- the object store contract ----------------------------------------------------------------------------
def test_object_store_conditional_puts(backend: Backend) -> None:
    store = backend.registry.store
    etag = store.put_if_absent("a/b/c.json", b"one")
    with pytest.raises(PreconditionFailedError):
        store.put_if_absent("a/b/c.json", b"two")
    assert store.get("a/b/c.json").data == b"one"
    assert objectstore.same_etag(store.head("a/b/c.json") or "", etag)

    new = store.put_if_match("a/b/c.json", b"two", etag)
    with pytest.raises(PreconditionFailedError):
        store.put_if_match("a/b/c.json", b"three", etag)  # stale
    with pytest.raises(PreconditionFailedError):
        store.put_if_match("a/b/c.json", b"three", None)  # exists
    with pytest.raises(PreconditionFailedError):
        store.put_if_match("a/b/gone.json", b"x", new)  # does not exist
    assert store.get("a/b/c.json").data == b"two"
    store.put_if_match("a/b/d.json", b"x", None)

    assert store.head("a/b/missing") is None
    with pytest.raises(NotFoundError):
        store.get("a/b/missing")
    assert store.list_keys("a") == ["a/b/c.json", "a/b/d.json"]
    assert store.list_children("a") == ["b"]
    assert store.list_children("a/b") == ["c.json", "d.json"]
    assert store.list_children("nothing") == [] and store.list_keys("nothing") == []


def test_object_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    for bad in ("../x", "/abs", "a//b", "a/./b", "a/.hidden", "a\\b", ""):
        with pytest.raises(RegistryError, match="invalid object key"):
            check_key(bad)
    store = LocalObjectStore(tmp_path)
    with pytest.raises(RegistryError):
        store.put_if_absent("../outside", b"x")
    assert not (tmp_path.parent / "outside").exists()


def test_s3_client_is_configured_for_s3_compatible_stores(moto_server: str) -> None:
    store = S3ObjectStore.from_url("s3://some-bucket/a/prefix", endpoint_url=moto_server)
    assert (store.bucket, store.prefix, store.url) == ("some-bucket", "a/prefix", "s3://some-bucket/a/prefix")
    config = store.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    # botocore counts max_attempts=3 as 3 retries: 4 attempts in all.
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    with pytest.raises(RegistryError, match="bucket 'some-bucket' does not exist"):
        store.put_if_absent("k", b"x")


def test_from_settings_picks_backend(tmp_path: Path, s3_endpoint: str) -> None:
    from lifelong.settings import Settings

    local = ModelRegistry.from_settings(Settings(home=tmp_path))
    assert isinstance(local.store, LocalObjectStore)
    assert local.store.url == str((tmp_path / "registry").resolve())
    remote = ModelRegistry.from_settings(Settings(home=tmp_path, registry_url="s3://models-bucket/lifelong"))
    assert isinstance(remote.store, S3ObjectStore)
    assert remote.store.endpoint_url == s3_endpoint  # from AWS_ENDPOINT_URL
    explicit = Settings(registry_url="s3://models-bucket/x", s3_endpoint_url="http://127.0.0.1:1")
    assert ModelRegistry.from_settings(explicit).store.endpoint_url == "http://127.0.0.1:1"  # type: ignore[attr-defined]


# -- CLI --------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    from lifelong.settings import get_settings

    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    for name in ("LIFELONG_REGISTRY_URL", "LIFELONG_MODEL_NAME", "LIFELONG_STREAM"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield ModelRegistry.from_settings(get_settings())
    get_settings.cache_clear()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    from rich.console import Console

    from lifelong.cli import registry as cli_module

    monkeypatch.setattr(cli_module, "console", Console(width=200))  # no folding of table cells
    app = typer.Typer()
    register = cli_module.register
    register(app)
    return app


def _two_promotions(reg: ModelRegistry) -> tuple[str, str]:
    v1, v2 = put(reg, 1), put(reg, 2)
    reg.promote(MODEL, v1, expected_etag=None, actor="boot", reason="bootstrap", run_id="p1")
    reg.promote(
        MODEL, v2, expected_etag=reg.production(MODEL).etag, actor="gate", reason="passed", run_id="p2"
    )  # type: ignore[union-attr]
    return v1, v2


def test_cli_list_and_show(cli_registry: ModelRegistry, app: typer.Typer) -> None:
    runner = CliRunner()
    empty = runner.invoke(app, ["registry", "list"])
    assert empty.exit_code == 0 and "has no versions" in empty.output

    v1, v2 = _two_promotions(cli_registry)
    result = runner.invoke(app, ["registry", "list", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["model"] == MODEL  # LIFELONG_STREAM's default names the model
    assert [(v["version"], v["production"]) for v in payload["versions"]] == [(v1, False), (v2, True)]
    assert payload["production"]["previous"] == v1

    table = runner.invoke(app, ["registry", "list"])
    assert table.exit_code == 0 and v1[:12] in table.output and v2[:12] in table.output
    assert f"production: {v2[:12]}" in table.output

    shown = runner.invoke(app, ["registry", "show", v1[:8], "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == cli_registry.get_manifest(MODEL, v1)
    pretty = runner.invoke(app, ["registry", "show", v2[:8]])
    assert pretty.exit_code == 0 and "(production)" in pretty.output and "bootstrap-2" in pretty.output

    missing = runner.invoke(app, ["registry", "show", "ffffffff" if not v1.startswith("f") else "00000000"])
    assert missing.exit_code == 1 and isinstance(missing.exception, NotFoundError)


def test_cli_rollback_and_audit(cli_registry: ModelRegistry, app: typer.Typer) -> None:
    runner = CliRunner()
    v1, v2 = _two_promotions(cli_registry)
    result = runner.invoke(app, ["registry", "rollback", "--reason", "FP spike"])
    assert result.exit_code == 0, result.output
    assert f"{v2[:12]} -> {v1[:12]}" in result.output
    pointer = cli_registry.production(MODEL)
    assert pointer is not None and (pointer.version, pointer.actor, pointer.reason) == (
        v1,
        "alice",
        "FP spike",
    )

    to = runner.invoke(app, ["registry", "rollback", "--to", v2[:10], "--reason", "pin", "--actor", "bob"])
    assert to.exit_code == 0, to.output
    assert cli_registry.production(MODEL).version == v2  # type: ignore[union-attr]

    audit = runner.invoke(app, ["audit", "--json"])
    assert audit.exit_code == 0, audit.output
    records = json.loads(audit.output)
    assert [(r["decision"], r["actor"], r["to_version"]) for r in records] == [
        ("promoted", "boot", v1),
        ("promoted", "gate", v2),
        ("rolled_back", "alice", v1),
        ("rolled_back", "bob", v2),
    ]
    since = runner.invoke(app, ["audit", "--json", "--since", records[2]["timestamp"]])
    assert [r["actor"] for r in json.loads(since.output)] == ["alice", "bob"]
    table = runner.invoke(app, ["audit"])
    assert table.exit_code == 0 and "rolled_back" in table.output and "FP spike" in table.output
    bad = runner.invoke(app, ["audit", "--since", "yesterday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_cli_refusal_exits_nonzero_with_one_line(
    cli_registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    from lifelong.cli import main

    v1 = put(cli_registry, 1)
    cli_registry.promote(MODEL, v1, expected_etag=None, actor="boot", reason="b", run_id="p1")
    with pytest.raises(SystemExit) as info:
        main(["registry", "rollback", "--reason", "oops"])
    assert info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "error:" in err and "no previous version to roll back to" in err and "Traceback" not in err
    assert cli_registry.production(MODEL).version == v1  # type: ignore[union-attr]
    assert [r.decision for r in cli_registry.audit(MODEL)] == ["promoted"]
