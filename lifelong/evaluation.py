"""The promotion gate (design.md): a candidate serves only if it forgot nothing that matters and fixed the
mistakes it was trained on. Every metric, its threshold and the verdict are returned as data, for the
manifest and the audit record; a failed gate is a verdict, never an exception.

Checks (all must hold):
* forgetting: false-positive rate on held-out normal data <= production's + ``fp_tolerance``;
* fix rate: share of the new labelled mistakes the candidate decides correctly >= ``min_fix_rate``;
* no regression: past labelled mistakes production decides correctly that the candidate gets wrong
  <= ``max_regressions``;
* numerics: every parameter and the final unlearning loss are finite.
Fail closed: a missing threshold fails its check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lifelong.models.base import Detector


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds of the gate; ``None`` fails the check (fail closed)."""

    fp_tolerance: float | None
    min_fix_rate: float | None
    max_regressions: int | None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> GateThresholds:
        values = {
            "fp_tolerance": settings.gate_fp_tolerance,
            "min_fix_rate": settings.gate_min_fix_rate,
            "max_regressions": settings.gate_max_regressions,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class LabelledSet:
    """Labelled mistakes: kinds ('FP'/'FN') and samples (sessions, or feature rows as dicts)."""

    kinds: list[str] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)

    @property
    def abnormal(self) -> np.ndarray:
        return np.asarray([k == "FN" for k in self.kinds], dtype=bool)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass
class GateResult:
    """Metrics, verdict, and the scores behind them (for the evaluation report)."""

    metrics: dict[str, Any]
    verdict: dict[str, Any]
    scores: dict[str, list[float]]

    @property
    def passed(self) -> bool:
        return bool(self.verdict["passed"])


def _decide(det: Detector | None, samples: list[Any]) -> np.ndarray | None:
    if det is None:
        return None
    if not samples:
        return np.zeros(0, dtype=bool)
    return det.decide(samples)


def _scores(det: Detector | None, samples: list[Any]) -> list[float]:
    if det is None or not samples:
        return []
    return [float(s) for s in det.sample_scores(samples)]


def _check(name: str, value: float | int | None, threshold: float | int | None, ok: bool, why: str) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "passed": bool(ok), "explanation": why}


def evaluate_gate(
    production: Detector | None,
    candidate: Detector,
    *,
    heldout: list[Any],
    new_labels: LabelledSet,
    past_labels: LabelledSet,
    final_loss: float | None,
    thresholds: GateThresholds,
) -> GateResult:
    """Measure the candidate against production and decide.

    Args:
        production: the serving model (None when there is none yet: the forgetting check compares with 0).
        candidate: the model that would replace it.
        heldout: held-out normal samples.
        new_labels: the mistakes this candidate was trained on.
        past_labels: earlier (consumed) mistakes.
        final_loss: the unlearning loss at the last step (None for a freshly trained model).
        thresholds: the gate's thresholds.

    Returns:
        A :class:`GateResult`.
    """
    n_held = len(heldout)
    cand_held = _decide(candidate, heldout)
    prod_held = _decide(production, heldout)
    fp_rate_cand = float(cand_held.mean()) if n_held else 0.0
    fp_rate_prod = float(prod_held.mean()) if (n_held and prod_held is not None) else 0.0

    truth_new = new_labels.abnormal
    cand_new = _decide(candidate, new_labels.samples)
    prod_new = _decide(production, new_labels.samples)
    fixed = int((cand_new == truth_new).sum()) if len(new_labels) else 0
    fix_rate = fixed / len(new_labels) if len(new_labels) else 1.0

    truth_past = past_labels.abnormal
    cand_past = _decide(candidate, past_labels.samples)
    prod_past = _decide(production, past_labels.samples)
    if len(past_labels) and prod_past is not None:
        regressions = int(((prod_past == truth_past) & (cand_past != truth_past)).sum())
    else:
        regressions = 0
    past_correct = int((cand_past == truth_past).sum()) if len(past_labels) else 0

    params_finite = candidate.parameters_finite()
    loss_finite = final_loss is None or math.isfinite(final_loss)

    metrics: dict[str, Any] = {
        "n_heldout": n_held,
        "fp_rate_production": round(fp_rate_prod, 6),
        "fp_rate_candidate": round(fp_rate_cand, 6),
        "n_new_labels": len(new_labels),
        "new_labels_fixed": fixed,
        "new_labels_correct_production": int((prod_new == truth_new).sum()) if prod_new is not None else None,
        "fix_rate": round(fix_rate, 6),
        "n_past_labels": len(past_labels),
        "past_labels_correct_candidate": past_correct,
        "regressions": regressions,
        "params_finite": params_finite,
        "final_loss": final_loss if final_loss is None or math.isfinite(final_loss) else str(final_loss),
        "threshold": candidate.loss_threshold,
    }
    t = thresholds
    checks = [
        _check(
            "forgetting",
            round(fp_rate_cand, 6),
            None if t.fp_tolerance is None else round(fp_rate_prod + t.fp_tolerance, 6),
            t.fp_tolerance is not None and fp_rate_cand <= fp_rate_prod + t.fp_tolerance + 1e-12,
            "held-out normal FP rate must not exceed production's plus the tolerance",
        ),
        _check(
            "fix_rate",
            round(fix_rate, 6),
            t.min_fix_rate,
            t.min_fix_rate is not None and fix_rate >= t.min_fix_rate,
            "share of the new labelled mistakes decided correctly",
        ),
        _check(
            "no_regression",
            regressions,
            t.max_regressions,
            t.max_regressions is not None and regressions <= t.max_regressions,
            "past labels production gets right that the candidate gets wrong",
        ),
        _check(
            "numerics",
            bool(params_finite and loss_finite),
            True,
            params_finite and loss_finite,
            "every parameter and the final loss are finite",
        ),
    ]
    failed = [c["name"] for c in checks if not c["passed"]]
    verdict = {
        "passed": not failed,
        "checks": checks,
        "reason": "all checks passed" if not failed else "failed: " + ", ".join(failed),
    }
    scores = {
        "heldout_production": _scores(production, heldout),
        "heldout_candidate": _scores(candidate, heldout),
        "labels_production": _scores(production, new_labels.samples),
        "labels_candidate": _scores(candidate, new_labels.samples),
        "past_production": _scores(production, past_labels.samples),
        "past_candidate": _scores(candidate, past_labels.samples),
    }
    return GateResult(metrics, verdict, scores)
