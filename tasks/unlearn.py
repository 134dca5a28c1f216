"""Step 5: bounded unlearning of the production model with the run's claimed labels, under a budget.

The candidate (weights, config, loss history) is staged in the registry's store under the run id, so the
evaluate and promote steps can run on other workers. An update that diverges or runs out of budget stages
no candidate; the gate then rejects the run with that reason. The serving model is never touched here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from lifelong.settings import Settings
from tasks.context import label_store, load_heldout, registry, require_production, stage_put, to_summary

log = logging.getLogger(__name__)

CANDIDATE_WEIGHTS = "candidate.safetensors"
CANDIDATE_CONFIG = "candidate.json"
UNLEARN_RESULT = "unlearn.json"


@dataclass(frozen=True)
class UnlearnSummary:
    run_id: str
    production_version: str
    updated: bool
    converged: bool
    reason: str
    steps: int
    seconds: float
    n_fp: int
    n_fn: int
    options: dict[str, Any] = field(default_factory=dict)


def _split(labels: list[Any]) -> tuple[list[Any], list[Any]]:
    return [lb.sample for lb in labels if lb.kind == "FP"], [lb.sample for lb in labels if lb.kind == "FN"]


def run_unlearning(
    *,
    settings: Settings,
    run_id: str,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    lam: float | None = None,
    lr: float | None = None,
) -> dict:
    """Unlearn the labels claimed by ``run_id`` from the production model and stage the candidate."""
    from lifelong.unlearning import UnlearnConfig, unlearn

    reg = registry(settings)
    serving = require_production(settings, reg)
    with label_store(settings) as store:
        mine = [lb for lb in store.list_labels(stream=settings.stream) if lb.claimed_by == run_id]
        past = store.past_labels(settings.stream)
    fps, fns = _split(mine)
    past_fps, past_fns = _split(past)
    options = {
        "max_steps": max_steps or settings.max_steps,
        "max_seconds": max_seconds or settings.max_seconds,
        "max_samples": settings.max_samples,
        "seed": settings.seed,
    }
    if lam is not None:
        options["lam"] = lam
    if lr is not None:
        options["lr"] = lr
    result = unlearn(
        serving.detector,
        false_positives=fps or None,
        false_negatives=fns or None,
        validation=load_heldout(settings, serving.version, reg),
        past_false_positives=past_fps or None,
        past_false_negatives=past_fns or None,
        config=UnlearnConfig(**options),
    )
    if result.updated:
        weights, config = result.detector.to_artifacts()
        stage_put(settings, run_id, CANDIDATE_WEIGHTS, weights, reg)
        stage_put(settings, run_id, CANDIDATE_CONFIG, json.dumps(config).encode(), reg)
    record = {
        **result.summary(),
        "loss_history": result.loss_history,
        "production_version": serving.version,
        "label_ids": [lb.id for lb in mine],
        "options": options,
    }
    stage_put(settings, run_id, UNLEARN_RESULT, json.dumps(record, default=str).encode(), reg)
    log.info("run %s: %s (%d FP, %d FN, %d steps)", run_id, result.reason, len(fps), len(fns), result.steps)
    return to_summary(
        UnlearnSummary(
            run_id,
            serving.version,
            result.updated,
            result.converged,
            result.reason,
            result.steps,
            round(result.seconds, 3),
            len(fps),
            len(fns),
            options,
        )
    )
