"""Step 0 (by hand): train the first zero-positive model on normal data, keep a held-out normal split beside
it in the registry, gate it, and promote it as the first production version.

Sources of normal data: ``lake`` (an interval of raw telemetry the operator vouches for), ``synthetic`` (the
project's generator; the demo), or a dataset preset name (``hdfs``, ``banknote``, ...; their training split).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from lifelong.errors import ConfigError
from lifelong.settings import Settings
from tasks.context import HELDOUT_FILE, as_utc, lake, registry, to_summary
from tasks.promote import code_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootstrapSummary:
    run_id: str
    decision: str  # promoted | rejected | skipped
    version: str | None
    reason: str
    n_train: int = 0
    n_heldout: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def _normal_data(settings: Settings, source: str, start: Any, end: Any, seed: int) -> tuple[Any, str]:
    """(normal samples: list of sessions or a DataFrame, description of the data window)."""
    import pandas as pd

    if source == "synthetic":
        from lifelong.data import synthetic_sequences, synthetic_vectors

        ds = (
            synthetic_sequences(seed=seed)
            if settings.stream_kind == "events"
            else synthetic_vectors(seed=seed)
        )
        data = (
            ds.train + ds.validation
            if settings.stream_kind == "events"
            else pd.concat([ds.train, ds.validation])
        )
        return data, f"synthetic generator, seed {seed}"
    if source == "lake":
        if not start or not end:
            raise ConfigError("bootstrap from the lake needs train_start and train_end (the normal interval)")
        s, e = as_utc(start), as_utc(end)
        lk = lake(settings)
        frames = [df for f in lk.list_interval_files(settings.stream, s, e) for df in lk.read_file_chunks(f)]
        if not frames:
            raise ConfigError(f"no telemetry of {settings.stream} in [{s}, {e}) to bootstrap from")
        frame = pd.concat(frames, ignore_index=True)
        if settings.stream_kind == "events":
            from lifelong.telemetry import events_to_sessions

            return list(
                events_to_sessions(frame).values()
            ), f"lake {settings.stream} [{s.isoformat()}, {e.isoformat()})"
        return frame.drop(
            columns=["entity_id", "timestamp"], errors="ignore"
        ), f"lake {settings.stream} [{s}, {e})"
    from lifelong.data import load_preset

    ds = load_preset(source, seed=seed)
    data = ds.train + ds.validation if isinstance(ds.train, list) else pd.concat([ds.train, ds.validation])
    return data, f"dataset preset {source}"


def _split(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    n = len(data)
    idx = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(n * fraction)))
    held, train = np.sort(idx[:n_held]), np.sort(idx[n_held:])
    if hasattr(data, "iloc"):
        return data.iloc[train].reset_index(drop=True), data.iloc[held].reset_index(drop=True)
    return [data[i] for i in train], [data[i] for i in held]


def bootstrap_model(
    *,
    settings: Settings,
    run_id: str,
    source: str = "synthetic",
    train_start: str | datetime | None = None,
    train_end: str | datetime | None = None,
    heldout_fraction: float = 0.2,
    epochs: int | None = None,
    tp: float | None = None,
    max_fp_rate: float = 0.05,
    force: bool = False,
    actor: str = "airflow",
    reason: str = "bootstrap",
) -> dict:
    """Train, gate (finite parameters; held-out FP rate <= ``max_fp_rate``) and promote the first model."""
    from lifelong.evaluation import GateThresholds, LabelledSet, evaluate_gate

    reg = registry(settings)
    model = settings.resolved_model_name
    pointer = reg.production(model)
    if pointer is not None and not force:
        text = f"production already serves {pointer.version[:12]}; pass force to replace it"
        log.info(text)
        return to_summary(BootstrapSummary(run_id, "skipped", pointer.version, text))
    data, window = _normal_data(settings, source, train_start, train_end, settings.seed)
    train, heldout = _split(data, heldout_fraction, settings.seed)
    if settings.stream_kind == "events":
        from lifelong.models.lstm import DeepLogDetector

        kw: dict[str, Any] = {"seed": settings.seed}
        if epochs:
            kw["epochs"] = epochs
        if tp:
            kw["tp"] = tp
        det = DeepLogDetector(device=settings.device, **kw).fit(train)
        heldout_json = [list(map(int, s)) for s in heldout]
    else:
        from lifelong.models.autoencoder import AutoencoderDetector

        det = AutoencoderDetector(
            device=settings.device, seed=settings.seed, **({"epochs": epochs} if epochs else {})
        )
        det.fit(train, validation=heldout)
        heldout_json = json.loads(heldout.to_json(orient="records"))
    gate = evaluate_gate(
        None,
        det,
        heldout=heldout_json,
        new_labels=LabelledSet(),
        past_labels=LabelledSet(),
        final_loss=None,
        thresholds=GateThresholds(fp_tolerance=max_fp_rate, min_fix_rate=0.0, max_regressions=0),
    )
    weights, config = det.to_artifacts()
    manifest = {
        "parent": None,
        "kind": "bootstrap",
        "stream": settings.stream,
        "data_window": window,
        "n_train": len(train),
        "n_heldout": len(heldout_json),
        "metrics": gate.metrics,
        "verdict": gate.verdict,
        "code_version": code_version(),
        "airflow_run_id": run_id,
        "trigger": {"actor": actor, "reason": reason},
    }
    version = reg.put_version(
        model, weights, config, manifest, extra_files={HELDOUT_FILE: json.dumps(heldout_json).encode()}
    )
    if not gate.passed:
        reg.reject(
            model,
            version,
            actor=actor,
            reason=f"{reason}: {gate.verdict['reason']}",
            run_id=run_id,
            metrics=gate.metrics,
            verdict=gate.verdict,
        )
        return to_summary(
            BootstrapSummary(
                run_id,
                "rejected",
                version,
                gate.verdict["reason"],
                len(train),
                len(heldout_json),
                gate.metrics,
            )
        )
    reg.promote(
        model,
        version,
        expected_etag=pointer.etag if pointer else None,
        actor=actor,
        reason=reason,
        run_id=run_id,
        metrics=gate.metrics,
        verdict=gate.verdict,
    )
    log.info("bootstrapped %s: version %s on %d normal samples (%s)", model, version[:12], len(train), window)
    return to_summary(
        BootstrapSummary(
            run_id, "promoted", version, gate.verdict["reason"], len(train), len(heldout_json), gate.metrics
        )
    )
