"""Step 4 (unlearning DAG): claim the pending labels of the stream for this run, atomically.

Short-circuits (claims nothing) when fewer than ``min_errors`` are pending, unless forced. Claiming is
idempotent per run id: a retried task gets the same labels back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lifelong.settings import Settings
from tasks.context import label_store, to_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullSummary:
    stream: str
    run_id: str
    pending: int
    claimed: int
    n_fp: int
    n_fn: int
    enough: bool
    reason: str


def pull_labels(
    *,
    settings: Settings,
    run_id: str,
    min_errors: int | None = None,
    force: bool = False,
    incident: str | None = None,
    max_samples: int | None = None,
) -> dict:
    """Claim up to ``max_samples`` pending labels (optionally of one incident) for ``run_id``."""
    need = settings.min_errors if min_errors is None else min_errors
    limit = max_samples or settings.max_samples
    with label_store(settings) as store:
        pending = store.pending_count(settings.stream, incident=incident)
        held = [
            lb
            for lb in store.list_labels(stream=settings.stream, status="claimed")
            if lb.claimed_by == run_id
        ]
        if not held and pending < need and not force:
            reason = f"{pending} pending label(s) < min_errors {need}: nothing to do"
            log.info(reason)
            return to_summary(PullSummary(settings.stream, run_id, pending, 0, 0, 0, False, reason))
        labels = store.claim_pending(settings.stream, run_id, limit=limit, incident=incident)
    n_fp = sum(1 for lb in labels if lb.kind == "FP")
    enough = bool(labels)
    reason = f"claimed {len(labels)} label(s)" if labels else "no pending labels to claim"
    log.info("%s for run %s (%d FP, %d FN)", reason, run_id, n_fp, len(labels) - n_fp)
    return to_summary(
        PullSummary(settings.stream, run_id, pending, len(labels), n_fp, len(labels) - n_fp, enough, reason)
    )
