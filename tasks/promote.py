"""Step 7: promote the candidate (compare-and-swap of the production pointer) or reject it; audit either way.

The candidate is stored as an immutable version in both cases (a rejected candidate is evidence too), with
the manifest holding its parent, options, labels, metrics and verdict. Labels become ``consumed`` only when
their candidate is promoted; on a rejection, a dry run or a lost race they go back to ``pending``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lifelong.errors import ConflictError
from lifelong.settings import Settings
from tasks.context import HELDOUT_FILE, label_store, registry, stage_get, to_summary
from tasks.evaluate import EVALUATION, REPORT_INDEX, load_candidate
from tasks.unlearn import UNLEARN_RESULT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromoteSummary:
    run_id: str
    decision: str  # promoted | rejected | dry_run | conflict
    version: str | None
    production_version: str | None
    reason: str


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lifelong-anomaly")
    except PackageNotFoundError:
        return "unknown"


def promote_or_reject(
    *,
    settings: Settings,
    run_id: str,
    dry_run: bool = False,
    actor: str = "airflow",
    reason: str = "",
    params: dict[str, Any] | None = None,
) -> dict:
    """Store the candidate, then move the pointer if the gate passed (and this is no dry run)."""
    reg = registry(settings)
    model = settings.resolved_model_name
    evaluation = json.loads(stage_get(settings, run_id, EVALUATION, reg))
    unlearned = json.loads(stage_get(settings, run_id, UNLEARN_RESULT, reg))
    verdict, metrics = evaluation["verdict"], evaluation["metrics"]
    parent = evaluation["production_version"]
    why = reason or "scheduled unlearning"
    candidate = load_candidate(settings, run_id, reg)
    version = None
    if candidate is not None:
        weights, config = candidate.to_artifacts()
        report_names = json.loads(stage_get(settings, run_id, REPORT_INDEX, reg))
        extra = {name: stage_get(settings, run_id, name, reg) for name in report_names}
        extra[HELDOUT_FILE] = reg.get_file(model, parent, HELDOUT_FILE)
        manifest = {
            "parent": parent,
            "kind": "unlearned",
            "stream": settings.stream,
            "unlearning": {k: v for k, v in unlearned.items() if k != "loss_history"},
            "labels": evaluation["label_ids"],
            "metrics": metrics,
            "verdict": verdict,
            "thresholds": evaluation["thresholds"],
            "params": params or {},
            "code_version": code_version(),
            "airflow_run_id": run_id,
            "trigger": {"actor": actor, "reason": why},
        }
        version = reg.put_version(model, weights, config, manifest, extra_files=extra)

    with label_store(settings) as store:
        if dry_run or not verdict["passed"] or version is None:
            decision = "dry_run" if dry_run else "rejected"
            text = (
                f"dry run ({'gate passed' if verdict['passed'] else verdict['reason']})"
                if dry_run
                else verdict["reason"]
            )
            reg.reject(
                model,
                version or parent,
                actor=actor,
                reason=f"{why}: {text}",
                run_id=run_id,
                metrics=metrics,
                verdict=verdict,
            )
            store.release(run_id, text)
            log.info("run %s %s: %s", run_id, decision, text)
            return to_summary(PromoteSummary(run_id, decision, version, parent, text))
        pointer = reg.production(model)
        # A retry of this run's own promotion (the pointer moved, then the task died before it finished)
        # is not a stale verdict: reg.promote recognises the run and returns its record, and the labels
        # are marked consumed below, instead of being released while their model serves.
        ours = pointer is not None and pointer.version == version and pointer.run_id == run_id
        if not ours and (pointer is None or pointer.version != parent):
            # Production moved after the gate compared against it: the verdict is stale.
            text = f"production moved from {parent[:12]} to {pointer.version[:12] if pointer else None} during the run"
            reg.reject(
                model,
                version,
                actor=actor,
                reason=f"{why}: {text}",
                run_id=run_id,
                metrics=metrics,
                verdict=verdict,
            )
            store.release(run_id, text)
            return to_summary(PromoteSummary(run_id, "rejected", version, parent, text))
        try:
            reg.promote(
                model,
                version,
                expected_etag=pointer.etag,
                actor=actor,
                reason=why,
                run_id=run_id,
                metrics=metrics,
                verdict=verdict,
            )
        except ConflictError as exc:
            store.release(run_id, f"lost the promotion race: {exc}")
            return to_summary(PromoteSummary(run_id, "conflict", version, parent, str(exc)))
        store.mark_consumed(run_id, version)
    log.info("run %s promoted %s (parent %s) at %s", run_id, version[:12], parent[:12], datetime.now(UTC))
    return to_summary(PromoteSummary(run_id, "promoted", version, parent, verdict["reason"]))


def release_claimed(*, settings: Settings, run_id: str, reason: str) -> int:
    """Give a failed run's claimed labels back to ``pending`` (the DAG's cleanup on failure)."""
    with label_store(settings) as store:
        return store.release(run_id, reason)
