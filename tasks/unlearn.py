"""Step 5: bounded unlearning of the production model with the run's claimed labels, under a budget.

The candidate (weights, config, loss history) is staged in the registry's store under the run id, so the
evaluate and promote steps can run on other workers. An update that diverges or runs out of budget stages
no candidate; the gate then rejects the run with that reason. The serving model is never touched here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
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


@dataclass
class ChunkedResult:
    """The outcome of unlearning a run's labels chunk after chunk (what the staged record holds)."""

    detector: Any
    updated: bool
    converged: bool
    reason: str
    steps: int
    seconds: float
    loss_history: list[float]
    chunks: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "converged": self.converged,
            "reason": self.reason,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "final_loss": self.loss_history[-1] if self.loss_history else None,
            "chunks": self.chunks,
        }


def _unlearn_in_chunks(
    detector: Any, labels: list[Any], past: list[Any], heldout: list[Any], options: dict[str, Any], chunk: int
) -> ChunkedResult:
    """Unlearn the labels in order, ``chunk`` at a time, each update starting from the previous one.

    One bounded update over hundreds of labels must bring every one of them to its target at once and
    rarely converges within a budget; the paper updates per report. Chunks keep each update small; a chunk
    that does not converge is skipped (the original rule: a failed update changes nothing) and the gate
    later judges the final candidate on all of the run's labels. ``max_seconds`` bounds the whole run.
    """
    import time

    from lifelong.unlearning import config_for, unlearn

    start = time.perf_counter()
    current, history, chunks = detector, [], []
    steps = 0
    past_fp, past_fn = _split(past)
    for i in range(0, len(labels), chunk):
        left = options["max_seconds"] - (time.perf_counter() - start)
        if left <= 0:
            chunks.append(
                {
                    "labels": len(labels) - i,
                    "updated": False,
                    "steps": 0,
                    "indistinguishable": 0,
                    "reason": "run budget exhausted",
                }
            )
            break
        part = labels[i : i + chunk]
        fps, fns = _split(part)
        res = unlearn(
            current,
            false_positives=fps or None,
            false_negatives=fns or None,
            validation=heldout,
            past_false_positives=past_fp or None,
            past_false_negatives=past_fn or None,
            config=config_for(current, **{**options, "max_seconds": left, "seed": options["seed"] + i}),
        )
        steps += res.steps
        history += res.loss_history
        chunks.append(
            {
                "labels": len(part),
                "updated": res.updated,
                "steps": res.steps,
                "indistinguishable": res.indistinguishable,
                "reason": res.reason,
            }
        )
        if res.updated:
            current = res.detector
        # Whatever happened, these labels are now "past" for the next chunk's memory set.
        past_fp, past_fn = past_fp + fps, past_fn + fns
    n_ok = sum(1 for c in chunks if c["updated"])
    updated = current is not detector
    reason = f"{n_ok} of {len(chunks)} chunk(s) converged" if chunks else "nothing to unlearn"
    skipped = sum(c.get("indistinguishable", 0) for c in chunks)
    if skipped:
        reason += f"; {skipped} missed anomal(ies) skipped: every unit also occurs in known-normal data"
    return ChunkedResult(
        current, updated, n_ok == len(chunks), reason, steps, time.perf_counter() - start, history, chunks
    )


def run_unlearning(
    *,
    settings: Settings,
    run_id: str,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    lam: float | None = None,
    lr: float | None = None,
    guard_units: int | None = None,
    chunk: int | None = None,
) -> dict:
    """Unlearn the labels claimed by ``run_id`` from the production model and stage the candidate."""
    from lifelong.unlearning import config_for

    reg = registry(settings)
    serving = require_production(settings, reg)
    with label_store(settings) as store:
        mine = [lb for lb in store.list_labels(stream=settings.stream) if lb.claimed_by == run_id]
        past = store.past_labels(settings.stream)
    fps, fns = _split(mine)
    chunk = chunk or settings.unlearn_chunk
    options: dict[str, Any] = {
        "max_seconds": max_seconds or settings.max_seconds,
        "max_samples": settings.max_samples,
        "seed": settings.seed,
    }
    step_cap = max_steps or settings.max_steps
    if step_cap:  # else the detector kind's own budget (config_for)
        options["max_steps"] = step_cap
    if lam is not None:
        options["lam"] = lam
    if lr is not None:
        options["lr"] = lr
    if guard_units is not None:
        options["guard_units"] = guard_units
    result = _unlearn_in_chunks(
        serving.detector, mine, past, load_heldout(settings, serving.version, reg), options, chunk
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
        # The effective options (the detector kind's defaults under the explicit ones), for the audit trail.
        "unlearn_config": asdict(config_for(serving.detector, **options)),
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
