"""Step 6: the promotion gate. Measures the staged candidate against production on held-out normal data,
the run's labels and all past labels, and stages the metrics, the verdict and the evaluation report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lifelong.settings import Settings
from tasks.context import (
    label_store,
    load_heldout,
    registry,
    require_production,
    stage_exists,
    stage_get,
    stage_put,
    to_summary,
)
from tasks.unlearn import CANDIDATE_CONFIG, CANDIDATE_WEIGHTS, UNLEARN_RESULT

log = logging.getLogger(__name__)

EVALUATION = "evaluation.json"
REPORT_INDEX = "report_files.json"


@dataclass(frozen=True)
class EvaluateSummary:
    run_id: str
    production_version: str
    has_candidate: bool
    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


def _labelled(labels: list[Any]):
    from lifelong.evaluation import LabelledSet

    return LabelledSet([lb.kind for lb in labels], [lb.sample for lb in labels])


def load_candidate(settings: Settings, run_id: str, reg: Any):
    from lifelong.models.base import Detector

    if not stage_exists(settings, run_id, CANDIDATE_WEIGHTS, reg):
        return None
    config = json.loads(stage_get(settings, run_id, CANDIDATE_CONFIG, reg))
    return Detector.from_artifacts(
        stage_get(settings, run_id, CANDIDATE_WEIGHTS, reg), config, settings.device
    )


def evaluate_candidate(
    *,
    settings: Settings,
    run_id: str,
    fp_tolerance: float | None = None,
    min_fix_rate: float | None = None,
    max_regressions: int | None = None,
) -> dict:
    """Run the gate; thresholds default to the settings, a DAG param may override each for one run."""
    import numpy as np

    from lifelong.evaluation import GateThresholds, evaluate_gate

    reg = registry(settings)
    serving = require_production(settings, reg)
    unlearned = json.loads(stage_get(settings, run_id, UNLEARN_RESULT, reg))
    thresholds = GateThresholds.from_settings(
        settings, fp_tolerance=fp_tolerance, min_fix_rate=min_fix_rate, max_regressions=max_regressions
    )
    with label_store(settings) as store:
        mine = [lb for lb in store.list_labels(stream=settings.stream) if lb.claimed_by == run_id]
        past = store.past_labels(settings.stream)
    candidate = load_candidate(settings, run_id, reg)
    heldout = load_heldout(settings, serving.version, reg)
    if candidate is None:
        metrics: dict[str, Any] = {"unlearning": unlearned.get("reason")}
        verdict = {
            "passed": False,
            "checks": [
                {
                    "name": "candidate",
                    "value": False,
                    "threshold": True,
                    "passed": False,
                    "explanation": "unlearning produced a usable candidate",
                }
            ],
            "reason": f"no candidate: {unlearned.get('reason')}",
        }
        scores: dict[str, list[float]] = {}
    else:
        gate = evaluate_gate(
            serving.detector,
            candidate,
            heldout=heldout,
            new_labels=_labelled(mine),
            past_labels=_labelled(past),
            final_loss=unlearned.get("final_loss"),
            thresholds=thresholds,
        )
        metrics, verdict, scores = gate.metrics, gate.verdict, gate.scores
    metrics["unlearn_steps"] = unlearned.get("steps")
    metrics["unlearn_seconds"] = unlearned.get("seconds")
    evaluation = {
        "run_id": run_id,
        "production_version": serving.version,
        "production_etag": serving.etag,
        "thresholds": thresholds.__dict__,
        "metrics": metrics,
        "verdict": verdict,
        "label_ids": [lb.id for lb in mine],
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    stage_put(settings, run_id, EVALUATION, json.dumps(evaluation, default=str).encode(), reg)
    if candidate is not None:
        from lifelong.reports.evaluation import EvaluationData, build_report

        def arr(name: str) -> np.ndarray:
            return np.asarray(scores.get(name, []), dtype=float)

        files = build_report(
            EvaluationData(
                model=settings.resolved_model_name,
                candidate_version=None,
                production_version=serving.version,
                threshold=candidate.loss_threshold,
                heldout_prod=arr("heldout_production"),
                heldout_cand=arr("heldout_candidate"),
                labels_kind=[lb.kind for lb in mine],
                labels_prod=arr("labels_production"),
                labels_cand=arr("labels_candidate"),
                past_kind=[lb.kind for lb in past],
                past_prod=arr("past_production"),
                past_cand=arr("past_candidate"),
                loss_history=list(unlearned.get("loss_history") or []),
                metrics=metrics,
                verdict=verdict,
                run_id=run_id,
                created_at=evaluation["evaluated_at"],
                extra={"thresholds": thresholds.__dict__, "unlearning": unlearned.get("options")},
            )
        )
        for name, data in files.items():
            stage_put(settings, run_id, name, data, reg)
        stage_put(settings, run_id, REPORT_INDEX, json.dumps(sorted(files)).encode(), reg)
    log.info("run %s gate: %s %s", run_id, "PASSED" if verdict["passed"] else "REJECTED", verdict["reason"])
    return to_summary(
        EvaluateSummary(
            run_id,
            serving.version,
            candidate is not None,
            bool(verdict["passed"]),
            verdict["reason"],
            metrics,
        )
    )
