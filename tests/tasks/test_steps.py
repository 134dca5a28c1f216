"""The pipeline steps (tasks/) called directly against temporary stores: outcomes, audit, and idempotence.

One module-scoped "world" is built once (about 20 s on 2 cores): two simulated hours with drift in a local lake,
a bootstrapped model (the synthetic source, 4 epochs: the smallest that flags drifted sessions), those hours
scored, and an FP label for every drifted session that was flagged. Each test that changes state works on its
own copy of that home (local ETags are content hashes, so a copy is a faithful store).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lifelong.errors import ConfigError, DataValidationError, NotFoundError
from lifelong.settings import Settings, get_settings
from lifelong.simulation import read_truth, simulate
from lifelong.stores.labels import LabelStore
from lifelong.stores.lake import TelemetryLake
from lifelong.stores.registry import ModelRegistry
from tasks.bootstrap import bootstrap_model
from tasks.context import HELDOUT_FILE, stage_get
from tasks.demo import land_bad_batch
from tasks.evaluate import evaluate_candidate
from tasks.ingest import ingest
from tasks.promote import promote_or_reject, release_claimed
from tasks.pull_labels import pull_labels
from tasks.runner import run_step
from tasks.score import score_shard
from tasks.unlearn import UNLEARN_RESULT, run_unlearning
from tasks.validate import validate

STREAM = "events"
T_SCORE = datetime(2026, 1, 5, 0, tzinfo=UTC)  # two scored hours, drifting from the first
HOUR = timedelta(hours=1)
BOOT_EPOCHS = 4


class StepFailed(Exception):
    """Stands in for AirflowFailException (tasks/ never import Airflow)."""


def make_settings(home: Path, **overrides: Any) -> Settings:
    return Settings(home=home, stream=STREAM, stream_kind="events", torch_threads=1, seed=0, **overrides)


@pytest.fixture(autouse=True)
def _no_lifelong_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's LIFELONG_* variables must not redirect the stores of a test."""
    for name in [n for n in os.environ if n.startswith("LIFELONG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LIFELONG_TORCH_THREADS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def score_interval(settings: Settings, start: datetime) -> dict[str, dict]:
    """ingest -> validate -> score every shard of [start, start + 1 h), as the scoring DAG does."""
    files = ingest(settings=settings, interval_start=start, interval_end=start + HOUR)["files"]
    checked = validate(settings=settings, interval_start=start, interval_end=start + HOUR, files=files)
    return {
        shard: score_shard(settings=settings, interval_start=start, interval_end=start + HOUR, shard=shard)
        for shard in checked["shards"]
    }


def alerts(settings: Settings) -> list[Any]:
    with LabelStore.from_settings(settings) as store:
        return store.list_alerts(stream=STREAM, limit=None)


def labels(settings: Settings, **filters: Any) -> list[Any]:
    with LabelStore.from_settings(settings) as store:
        return store.list_labels(stream=STREAM, **filters)


@dataclass
class World:
    home: Path
    boot: dict[str, Any]
    scored: dict[str, dict]  # shard -> score summary of the first scoring
    n_fp_labels: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    import torch

    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("world") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LIFELONG_")]:
            mp.delenv(name)
        settings = make_settings(home)
        simulate(
            settings, stream=STREAM, kind="events", hours=2, start=T_SCORE, sessions_per_hour=100, drift_from_hour=0
        )
        boot = bootstrap_model(settings=settings, run_id="bootstrap-run", source="synthetic", epochs=BOOT_EPOCHS)
        scored = {**score_interval(settings, T_SCORE), **score_interval(settings, T_SCORE + HOUR)}
        # The analysts mark every flagged drifted session as a false positive (drift is the new normal).
        truth = read_truth(settings, STREAM).set_index("entity_id")["kind"]
        with LabelStore.from_settings(settings) as store:
            drifted = [a for a in store.list_alerts(stream=STREAM, limit=None) if truth[a.entity_id] == "drift"]
            for alert in drifted:
                store.add_label(stream=STREAM, entity_id=alert.entity_id, kind="FP", analyst="test")
    assert boot["decision"] == "promoted", boot
    assert len(drifted) >= 10, "the bootstrapped model should flag drifted sessions"
    return World(home, boot, scored, len(drifted))


@pytest.fixture
def copy(world: World, tmp_path: Path) -> Settings:
    """Settings on a private copy of the world's stores."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home)
    return make_settings(home)


def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry.from_settings(settings)


# --- bootstrap --------------------------------------------------------------------------------------------
def test_bootstrap_promotes_with_audit_manifest_and_heldout(world: World) -> None:
    settings = make_settings(world.home)
    reg = registry(settings)
    boot = world.boot
    version = boot["version"]
    assert boot["decision"] == "promoted" and boot["reason"] == "all checks passed"
    # The synthetic source: 2400 normal sessions, 20 % kept aside.
    assert (boot["n_train"], boot["n_heldout"]) == (1920, 480)
    assert boot["metrics"]["fp_rate_candidate"] <= 0.05
    pointer = reg.production(STREAM)
    assert pointer is not None and pointer.version == version and pointer.previous is None
    assert pointer.run_id == "bootstrap-run"
    manifest = reg.get_manifest(STREAM, version)
    assert manifest["kind"] == "bootstrap" and manifest["parent"] is None
    assert manifest["airflow_run_id"] == "bootstrap-run"
    assert manifest["verdict"]["passed"] is True
    assert "synthetic" in manifest["data_window"]
    assert (manifest["n_train"], manifest["n_heldout"]) == (1920, 480)
    heldout = json.loads(reg.get_file(STREAM, version, HELDOUT_FILE))
    assert len(heldout) == 480 and all(isinstance(k, int) for k in heldout[0])
    (record,) = reg.audit(STREAM)
    assert (record.decision, record.to_version, record.run_id) == ("promoted", version, "bootstrap-run")
    assert record.metrics["n_heldout"] == 480 and record.verdict["passed"] is True


def test_bootstrap_again_is_skipped(copy: Settings, world: World) -> None:
    reg = registry(copy)
    before = (len(reg.list_versions(STREAM)), len(reg.audit(STREAM)), reg.production(STREAM))
    again = bootstrap_model(settings=copy, run_id="bootstrap-run-2", source="synthetic", epochs=BOOT_EPOCHS)
    assert again["decision"] == "skipped"
    assert again["version"] == world.boot["version"]
    assert "force" in again["reason"]
    assert (len(reg.list_versions(STREAM)), len(reg.audit(STREAM)), reg.production(STREAM)) == before


def test_bootstrap_from_the_lake(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    settings = make_settings(tmp_path / "home")
    start = datetime(2026, 1, 4, tzinfo=UTC)
    simulate(settings, stream=STREAM, kind="events", hours=2, start=start, sessions_per_hour=60, anomaly_rate=0.0)
    with pytest.raises(ConfigError, match="train_start and train_end"):
        bootstrap_model(settings=settings, run_id="b0", source="lake", epochs=1)
    with pytest.raises(ConfigError, match="no telemetry of events"):
        bootstrap_model(
            settings=settings, run_id="b0", source="lake", train_start="2025-01-01T00:00", train_end="2025-01-01T01:00"
        )
    out = bootstrap_model(
        settings=settings,
        run_id="b1",
        source="lake",
        train_start=start.isoformat(),
        train_end=(start + 2 * HOUR).isoformat(),
        heldout_fraction=0.25,
        epochs=1,
    )
    assert out["decision"] == "promoted", out
    assert (out["n_train"], out["n_heldout"]) == (90, 30)
    manifest = registry(settings).get_manifest(STREAM, out["version"])
    assert manifest["data_window"].startswith("lake events [2026-01-04T00:00:00+00:00, 2026-01-04T02:00:00+00:00)")


# --- ingest and validate ----------------------------------------------------------------------------------
def test_ingest_lists_the_files_of_the_interval(world: World) -> None:
    settings = make_settings(world.home)
    hour0 = ingest(settings=settings, interval_start=T_SCORE, interval_end=T_SCORE + HOUR)
    assert hour0["files"] == [
        "raw/events/date=2026-01-05/hour=00/part-000.parquet",
        "raw/events/date=2026-01-05/hour=00/part-001.parquet",
    ]
    assert hour0["interval_start"] == "2026-01-05T00:00:00+00:00" and hour0["stream"] == STREAM
    both = ingest(settings=settings, interval_start=T_SCORE.isoformat(), interval_end=(T_SCORE + 2 * HOUR).isoformat())
    assert len(both["files"]) == 4 and both["files"] == sorted(both["files"])
    quiet = ingest(settings=settings, interval_start=T_SCORE + 5 * HOUR, interval_end=T_SCORE + 6 * HOUR)
    assert quiet["files"] == []  # a quiet hour is not an error


def test_validate_passes_good_files(world: World) -> None:
    settings = make_settings(world.home)
    files = ingest(settings=settings, interval_start=T_SCORE, interval_end=T_SCORE + HOUR)["files"]
    out = validate(settings=settings, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, files=files)
    assert out["shards"] == files and out["quarantined"] == []
    assert out["rows"] == sum(len(TelemetryLake.from_settings(settings).read_file(f)) for f in files)


def test_validate_quarantines_a_bad_file_then_a_fixed_one_passes(copy: Settings) -> None:
    hour = T_SCORE + HOUR
    lake = TelemetryLake.from_settings(copy)
    bad = land_bad_batch(copy, hour)
    files = ingest(settings=copy, interval_start=hour, interval_end=hour + HOUR)["files"]
    assert bad in files and len(files) == 3
    with pytest.raises(DataValidationError) as caught:
        validate(settings=copy, interval_start=hour, interval_end=hour + HOUR, files=files)
    message = str(caught.value)
    assert "expect_column_values_to_not_be_null(entity_id)" in message
    assert "expect_column_values_to_be_between(event_key)" in message
    assert bad in message and "quarantine" in message
    # Nothing dropped silently: the file, its GX result and a readable summary are in quarantine.
    (entry,) = lake.list_quarantine(STREAM)
    assert entry.path == "quarantine/events/date=2026-01-05/hour=01/bad-delivery.parquet"
    assert entry.interval_start == hour and entry.report_path and entry.summary_path
    report = json.loads(lake.read_text(entry.report_path))
    assert report["file"] == bad and any("null entity_id" in f for f in report["failed"])
    assert "entity_id" in lake.read_text(entry.summary_path)
    assert len(lake.read_file(entry.path)) == 4
    # The good files of the hour are untouched; the bad one left raw/.
    assert ingest(settings=copy, interval_start=hour, interval_end=hour + HOUR)["files"] == [
        f for f in files if f != bad
    ]

    # The producer re-lands a fixed delivery under the same name; the rerun validates and scores it.
    fixed = pd.DataFrame(
        {
            "entity_id": ["fixed-1", "fixed-1", "fixed-2", "fixed-2"],
            "timestamp": [hour + timedelta(minutes=m) for m in (1, 2, 3, 4)],
            "event_key": [3, 4, 6, 5],
            "seq": [0, 1, 0, 1],
        }
    )
    assert lake.write_raw(STREAM, hour, fixed, "bad-delivery", fmt="parquet") == bad
    files = ingest(settings=copy, interval_start=hour, interval_end=hour + HOUR)["files"]
    out = validate(settings=copy, interval_start=hour, interval_end=hour + HOUR, files=files)
    assert bad in out["shards"] and out["quarantined"] == []
    scored = score_shard(settings=copy, interval_start=hour, interval_end=hour + HOUR, shard=bad)
    assert scored["scored"] == 2
    assert len(lake.list_quarantine(STREAM)) == 1  # the evidence stays


def test_run_step_fails_fast_on_bad_data_with_env_settings(copy: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELONG_HOME", str(copy.home))
    get_settings.cache_clear()
    hour = T_SCORE
    bad = land_bad_batch(copy, hour)
    with pytest.raises(StepFailed, match="failed validation") as caught:
        run_step(validate, fail_fast=StepFailed, interval_start=hour, interval_end=hour + HOUR, files=[bad])
    assert isinstance(caught.value.__cause__, DataValidationError)


def test_score_without_a_production_model_names_the_fix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    with pytest.raises(NotFoundError, match="run the bootstrap_model DAG first"):
        score_shard(settings=settings, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, shard="raw/x.parquet")


# --- score ------------------------------------------------------------------------------------------------
def test_scoring_a_shard_twice_gives_the_same_scores_and_no_duplicate_alerts(copy: Settings, world: World) -> None:
    lake = TelemetryLake.from_settings(copy)
    first = world.scored["raw/events/date=2026-01-05/hour=00/part-000.parquet"]
    assert first["scored"] == 50 and first["new_alerts"] == first["flagged"]
    before_alerts = {(a.entity_id, a.interval_start, a.score) for a in alerts(copy)}
    before_scores = lake.read_file(first["scores_path"])
    assert len(before_scores) == 50 and int(before_scores["abnormal"].sum()) == first["flagged"]

    again = score_shard(settings=copy, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, shard=first["shard"])
    assert again == {**first, "new_alerts": 0}
    assert {(a.entity_id, a.interval_start, a.score) for a in alerts(copy)} == before_alerts
    pd.testing.assert_frame_equal(lake.read_file(again["scores_path"]), before_scores)
    total_flagged = sum(s["flagged"] for s in world.scored.values())
    assert len(before_alerts) == total_flagged


# --- pull_labels ------------------------------------------------------------------------------------------
def test_pull_labels_short_circuits_then_claims_with_force_idempotently(copy: Settings, world: World) -> None:
    n = world.n_fp_labels
    few = pull_labels(settings=copy, run_id="run-a", min_errors=n + 1)
    assert (few["enough"], few["claimed"], few["pending"]) == (False, 0, n)
    assert "min_errors" in few["reason"]
    assert len(labels(copy, status="pending")) == n

    forced = pull_labels(settings=copy, run_id="run-a", min_errors=n + 1, force=True)
    assert (forced["enough"], forced["claimed"], forced["n_fp"], forced["n_fn"]) == (True, n, n, 0)
    # A retried task gets the same labels back, even though nothing is pending any more.
    retried = pull_labels(settings=copy, run_id="run-a", min_errors=n + 1)
    assert (retried["enough"], retried["claimed"]) == (True, n)
    assert {lb.claimed_by for lb in labels(copy)} == {"run-a"}
    # Another run finds nothing to do.
    other = pull_labels(settings=copy, run_id="run-b", force=True)
    assert (other["enough"], other["claimed"]) == (False, 0)

    assert release_claimed(settings=copy, run_id="run-a", reason="the unlearning run failed") == n
    assert release_claimed(settings=copy, run_id="run-a", reason="again") == 0
    assert all(lb.status == "pending" and lb.attempts == 1 for lb in labels(copy))


def test_pull_labels_uses_the_min_errors_setting(copy: Settings, world: World) -> None:
    strict = copy.model_copy(update={"min_errors": world.n_fp_labels + 1})
    assert pull_labels(settings=strict, run_id="r")["enough"] is False
    assert pull_labels(settings=copy, run_id="r")["enough"] is True  # default 5 <= labels pending


# --- unlearn -> evaluate -> promote -----------------------------------------------------------------------
def unlearning_run(settings: Settings, run_id: str, *, dry_run: bool = False, **options: Any) -> dict[str, dict]:
    pulled = pull_labels(settings=settings, run_id=run_id, force=True)
    assert pulled["enough"], pulled
    unlearned = run_unlearning(settings=settings, run_id=run_id, **options)
    evaluated = evaluate_candidate(settings=settings, run_id=run_id)
    promoted = promote_or_reject(
        settings=settings, run_id=run_id, dry_run=dry_run, actor="test", reason="step test", params={"x": 1}
    )
    return {"pull": pulled, "unlearn": unlearned, "evaluate": evaluated, "promote": promoted}


def test_normal_unlearning_run_is_promoted(copy: Settings, world: World) -> None:
    reg = registry(copy)
    parent = world.boot["version"]
    out = unlearning_run(copy, "nightly-1")
    assert out["unlearn"]["updated"] is True and out["unlearn"]["production_version"] == parent
    assert out["evaluate"]["passed"] is True, out["evaluate"]
    promoted = out["promote"]
    assert promoted["decision"] == "promoted" and promoted["production_version"] == parent
    version = promoted["version"]
    assert version != parent

    pointer = reg.production(STREAM)
    assert (pointer.version, pointer.previous, pointer.run_id) == (version, parent, "nightly-1")
    mine = labels(copy)
    assert len(mine) == world.n_fp_labels
    assert all(lb.status == "consumed" and lb.consumed_by == version for lb in mine)

    manifest = reg.get_manifest(STREAM, version)
    assert manifest["parent"] == parent and manifest["kind"] == "unlearned"
    assert manifest["airflow_run_id"] == "nightly-1" and manifest["params"] == {"x": 1}
    assert sorted(manifest["labels"]) == sorted(lb.id for lb in mine)
    assert manifest["verdict"]["passed"] is True
    assert {c["name"] for c in manifest["verdict"]["checks"]} == {"forgetting", "fix_rate", "no_regression", "numerics"}
    # The effective unlearning options are audited, the detector kind's defaults included.
    assert manifest["unlearning"]["unlearn_config"]["bnd_factor"] == 2.0
    # No LIFELONG_MAX_STEPS, no param: the budget is the detector kind's own (the LSTM's 300).
    assert "max_steps" not in manifest["unlearning"]["options"]
    assert manifest["unlearning"]["unlearn_config"]["max_steps"] == 300
    metrics = manifest["metrics"]
    assert metrics["n_new_labels"] == world.n_fp_labels and metrics["fix_rate"] >= copy.gate_min_fix_rate
    assert metrics["fp_rate_candidate"] <= metrics["fp_rate_production"] + copy.gate_fp_tolerance
    assert metrics["unlearn_steps"] > 0
    # The held-out split travels with the lineage, and the evaluation report is stored with the version.
    assert reg.get_file(STREAM, version, HELDOUT_FILE) == reg.get_file(STREAM, parent, HELDOUT_FILE)
    assert any(name.startswith("report-") for name in manifest["files"])

    record = reg.audit(STREAM)[-1]
    assert (record.decision, record.from_version, record.to_version) == ("promoted", parent, version)
    assert record.run_id == "nightly-1" and record.actor == "test"
    assert record.metrics["fix_rate"] == metrics["fix_rate"] and record.verdict["passed"] is True

    # The promoted model no longer flags the labelled sessions when their hour is scored again.
    rescored = score_interval(copy, T_SCORE)
    assert {s["model_version"] for s in rescored.values()} == {version}

    # A retried promote task (e.g. the worker died after the pointer moved) finishes the same promotion.
    n_audit = len(reg.audit(STREAM))
    retry = promote_or_reject(settings=copy, run_id="nightly-1", actor="test", reason="step test", params={"x": 1})
    assert (retry["decision"], retry["version"]) == ("promoted", version)
    assert len(reg.audit(STREAM)) == n_audit
    assert reg.production(STREAM).version == version
    assert all(lb.status == "consumed" for lb in labels(copy))


def assert_rejected_and_released(settings: Settings, out: dict[str, dict], run_id: str, before: Any) -> None:
    reg = registry(settings)
    assert reg.production(STREAM) == before  # same version, same ETag: the pointer never moved
    pending = labels(settings)
    assert pending and all(lb.status == "pending" and lb.claimed_by is None for lb in pending)
    assert all(lb.attempts == 1 and lb.last_attempt["run_id"] == run_id for lb in pending)
    record = reg.audit(STREAM)[-1]
    assert (record.decision, record.run_id, record.from_version) == ("rejected", run_id, before.version)
    assert record.verdict is not None and record.verdict["passed"] is out["evaluate"]["passed"]
    if out["promote"]["decision"] != "dry_run":
        assert record.verdict["passed"] is False and record.verdict["reason"] == out["promote"]["reason"]


def test_destructive_run_is_rejected(copy: Settings) -> None:
    before = registry(copy).production(STREAM)
    # No forgetting penalty and a huge step: each chunk diverges (no candidate) or the gate rejects what is left.
    # A small step budget keeps the test fast; the outcome is the same with the default budget.
    out = unlearning_run(copy, "destructive-1", lam=0.0, lr=5.0, guard_units=0, max_steps=40)
    assert out["evaluate"]["passed"] is False
    # The staged record says what ran: the overrides on top of the kind's defaults, and per chunk its outcome.
    staged = json.loads(stage_get(copy, "destructive-1", UNLEARN_RESULT))
    assert (staged["unlearn_config"]["guard_units"], staged["unlearn_config"]["lam"]) == (0, 0.0)
    keys = {"labels", "updated", "steps", "indistinguishable", "reason"}
    assert staged["chunks"] and all(keys <= set(chunk) for chunk in staged["chunks"])
    assert out["evaluate"]["reason"].startswith(("failed:", "no candidate:")), out["evaluate"]
    assert out["promote"]["decision"] == "rejected"
    assert out["promote"]["reason"] == out["evaluate"]["reason"]
    assert_rejected_and_released(copy, out, "destructive-1", before)
    record = registry(copy).audit(STREAM)[-1]
    assert out["evaluate"]["reason"] in record.reason
    if out["promote"]["version"] is not None:
        # A rejected candidate is kept as evidence, its failed verdict in the manifest.
        manifest = registry(copy).get_manifest(STREAM, out["promote"]["version"])
        assert manifest["verdict"]["passed"] is False and record.to_version == out["promote"]["version"]
    # Rejecting again for the same run records nothing new.
    n_audit = len(registry(copy).audit(STREAM))
    again = promote_or_reject(settings=copy, run_id="destructive-1", actor="test", reason="step test", params={"x": 1})
    assert again["decision"] == "rejected" and len(registry(copy).audit(STREAM)) == n_audit


def test_dry_run_is_audited_and_never_promotes(copy: Settings) -> None:
    before = registry(copy).production(STREAM)
    out = unlearning_run(copy, "dry-1", dry_run=True)
    assert out["promote"]["decision"] == "dry_run"
    assert out["promote"]["reason"].startswith("dry run (")
    assert_rejected_and_released(copy, out, "dry-1", before)
    record = registry(copy).audit(STREAM)[-1]
    assert "dry run" in record.reason and record.metrics["n_new_labels"] == len(labels(copy))


# --- S3: the registry and the lake on an S3 API (moto's server over HTTP) ---------------------------------
def test_bootstrap_and_score_against_s3(
    s3_endpoint: str, s3_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))  # the label store stays a local SQLite file
    monkeypatch.setenv("LIFELONG_REGISTRY_URL", f"s3://{s3_bucket}/registry")
    monkeypatch.setenv("LIFELONG_LAKE_URL", f"s3://{s3_bucket}/lake")
    get_settings.cache_clear()
    settings = get_settings()
    start = datetime(2026, 1, 4, tzinfo=UTC)
    simulate(settings, stream=STREAM, kind="events", hours=2, start=start, sessions_per_hour=40, anomaly_rate=0.0)
    simulate(settings, stream=STREAM, kind="events", hours=1, start=T_SCORE, sessions_per_hour=40)

    boot = run_step(
        bootstrap_model,
        fail_fast=StepFailed,
        run_id="s3-boot",
        source="lake",
        train_start=start.isoformat(),
        train_end=(start + 2 * HOUR).isoformat(),
        epochs=1,
    )
    assert boot["decision"] == "promoted", boot
    again = run_step(bootstrap_model, fail_fast=StepFailed, run_id="s3-boot-2", source="lake", epochs=1)
    assert again["decision"] == "skipped"

    files = run_step(ingest, fail_fast=StepFailed, interval_start=T_SCORE, interval_end=T_SCORE + HOUR)["files"]
    assert len(files) == 2
    shards = run_step(validate, fail_fast=StepFailed, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, files=files)[
        "shards"
    ]
    first = [
        run_step(score_shard, fail_fast=StepFailed, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, shard=s)
        for s in shards
    ]
    n_alerts = len(alerts(settings))
    second = [
        run_step(score_shard, fail_fast=StepFailed, interval_start=T_SCORE, interval_end=T_SCORE + HOUR, shard=s)
        for s in shards
    ]
    assert sum(r["scored"] for r in first) == 40
    assert [r["new_alerts"] for r in second] == [0, 0] and len(alerts(settings)) == n_alerts
    assert [r["scores_path"] for r in first] == [r["scores_path"] for r in second]

    keys = {
        obj["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for obj in page.get("Contents", [])
    }
    version = boot["version"]
    for name in ("weights.safetensors", "manifest.json", HELDOUT_FILE):
        assert f"registry/models/{STREAM}/{version}/{name}" in keys
    assert f"registry/models/{STREAM}/aliases/production.json" in keys
    assert any(k.startswith(f"registry/audit/{STREAM}/") for k in keys)
    for r in first:
        assert f"lake/{r['scores_path']}" in keys
    assert not (tmp_path / "home" / "registry").exists() and not (tmp_path / "home" / "lake").exists()
