"""The candidate evaluation report: four plots, the numbers behind them and one HTML page per unlearning run.

An unlearning run produces a candidate; the gate compares it with production; the registry stores the
candidate with this report as extra files of the version, named with
:data:`~lifelong.constants.REPORT_PREFIX` in front (``report-index.html``, ...). ``lifelong report VERSION``
fetches them into a folder to open in a browser.

Decisions follow the detectors' rule: a sample is abnormal when its score is *strictly above* the threshold.
So a NaN score is decided normal (a normal sample with a NaN score is not a false positive, an anomaly with a
NaN score is missed) and an infinite score is abnormal; the plots draw infinite scores at the edge of the axis
and count them in the legend, and leave NaN scores out with a count.

:func:`build_report` is deterministic: the same :class:`EvaluationData` gives the same bytes. That matters
because registry versions are immutable and a retried run must put byte-identical extra files.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from lifelong.constants import FN, FP, REPORT_PREFIX

if TYPE_CHECKING:
    import jinja2
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: Version of the ``data.json`` layout.
SCHEMA_VERSION = 1

#: File names inside the report (stored with :data:`REPORT_PREFIX` in front).
INDEX_FILE = "index.html"
DATA_FILE = "data.json"
PLOT_HELDOUT = "scores_heldout.png"
PLOT_LABELS = "scores_labels.png"
PLOT_ERRORS = "errors_vs_threshold.png"
PLOT_LOSS = "loss.png"
REPORT_FILES = (INDEX_FILE, PLOT_HELDOUT, PLOT_LABELS, PLOT_ERRORS, PLOT_LOSS, DATA_FILE)

_DPI = 100
_PROD_COLOR = "#4C72B0"
_CAND_COLOR = "#DD8452"
_GOOD_COLOR = "#2CA02C"
_BAD_COLOR = "#D62728"
_THRESHOLD_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1.2}
_SWEEP_QUANTILES = 201
# Positive scores whose largest / smallest value is at least this get a log axis (losses often span decades).
_LOG_SPAN = 100.0
_HIST_BINS = 40


# --------------------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------------------
def _scores(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"EvaluationData.{name} must hold numbers ({exc})") from None
    if array.ndim != 1:
        raise ValueError(f"EvaluationData.{name} must be one score per sample (1-D), got shape {array.shape}")
    return array


def _kinds(values: Sequence[str], name: str) -> list[str]:
    kinds = [str(v) for v in values]
    bad = sorted({k for k in kinds if k not in (FP, FN)})
    if bad:
        raise ValueError(f"EvaluationData.{name} holds {bad}; each label kind must be {FP!r} or {FN!r}")
    return kinds


@dataclass
class EvaluationData:
    """Everything the report shows about one candidate; built by the evaluation step.

    Scores are per sample, higher is more anomalous, and a sample is abnormal when its score is above
    ``threshold``. Arrays are converted to float64 and checked for matching lengths on construction.

    Attributes:
        model: Registry name of the model.
        candidate_version: The candidate's version, or ``None`` before it is known
            (``lifelong.stores.registry.content_address(weights, config)`` gives it before ``put_version``).
        production_version: The production version it was compared with; ``None`` for a first model.
        threshold: The decision threshold (tau') shared by both models.
        heldout_prod: Scores of held-out normal samples under production, shape (N,).
        heldout_cand: The same samples under the candidate, shape (N,).
        labels_kind: Per labelled mistake of this run, ``"FP"`` or ``"FN"``, length M.
        labels_prod: Their scores under production, shape (M,).
        labels_cand: Their scores under the candidate, shape (M,).
        past_kind: Per past (consumed) label, ``"FP"`` or ``"FN"``, length P (may be 0).
        past_prod: Their scores under production, shape (P,).
        past_cand: Their scores under the candidate, shape (P,).
        loss_history: The unlearning loss per optimiser step (may be empty).
        metrics: The gate's metrics (``fp_rate_prod``, ``fp_rate_cand``, ``fix_rate``, ``regressions``...).
        verdict: The gate's verdict: ``{"passed": bool, "checks": [{"name", "value", "threshold",
            "passed"}, ...], "reason": str}``.
        run_id: The Airflow run id (or CLI invocation id) that built the candidate.
        created_at: When the run made the candidate (ISO 8601); shown as is, never ``now()``.
        extra: Anything else worth showing: run params, the unlearning summary...
    """

    model: str
    candidate_version: str | None
    production_version: str | None
    threshold: float
    heldout_prod: np.ndarray
    heldout_cand: np.ndarray
    labels_kind: list[str]
    labels_prod: np.ndarray
    labels_cand: np.ndarray
    past_kind: list[str]
    past_prod: np.ndarray
    past_cand: np.ndarray
    loss_history: list[float]
    metrics: dict[str, float | int | None]
    verdict: dict[str, Any]
    run_id: str
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.threshold = float(self.threshold)
        if not math.isfinite(self.threshold):
            raise ValueError(f"EvaluationData.threshold must be a finite number, got {self.threshold}")
        self.heldout_prod = _scores(self.heldout_prod, "heldout_prod")
        self.heldout_cand = _scores(self.heldout_cand, "heldout_cand")
        if len(self.heldout_prod) != len(self.heldout_cand):
            raise ValueError(
                "heldout_prod and heldout_cand must score the same held-out samples: got "
                f"{len(self.heldout_prod)} and {len(self.heldout_cand)} scores"
            )
        for prefix in ("labels", "past"):
            kinds = _kinds(getattr(self, f"{prefix}_kind"), f"{prefix}_kind")
            prod = _scores(getattr(self, f"{prefix}_prod"), f"{prefix}_prod")
            cand = _scores(getattr(self, f"{prefix}_cand"), f"{prefix}_cand")
            if not len(kinds) == len(prod) == len(cand):
                raise ValueError(
                    f"{prefix}_kind, {prefix}_prod and {prefix}_cand must describe the same labels: got "
                    f"{len(kinds)} kinds, {len(prod)} and {len(cand)} scores"
                )
            setattr(self, f"{prefix}_kind", kinds)
            setattr(self, f"{prefix}_prod", prod)
            setattr(self, f"{prefix}_cand", cand)
        self.loss_history = [float(v) for v in self.loss_history]
        self.metrics = dict(self.metrics)
        self.verdict = dict(self.verdict)
        self.extra = dict(self.extra)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON data (non-finite floats as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
        return {
            "model": self.model,
            "candidate_version": self.candidate_version,
            "production_version": self.production_version,
            "threshold": self.threshold,
            "heldout_prod": _json_floats(self.heldout_prod),
            "heldout_cand": _json_floats(self.heldout_cand),
            "labels_kind": list(self.labels_kind),
            "labels_prod": _json_floats(self.labels_prod),
            "labels_cand": _json_floats(self.labels_cand),
            "past_kind": list(self.past_kind),
            "past_prod": _json_floats(self.past_prod),
            "past_cand": _json_floats(self.past_cand),
            "loss_history": _json_floats(self.loss_history),
            "metrics": _to_json(self.metrics),
            "verdict": _to_json(self.verdict),
            "run_id": self.run_id,
            "created_at": self.created_at,
            "extra": _to_json(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationData:
        """Rebuild the data from :meth:`to_dict` output (e.g. ``data.json``'s ``"data"``).

        Args:
            data: The mapping :meth:`to_dict` returned, possibly through JSON.

        Returns:
            Equal data (arrays as float64, non-finite values restored; metrics' non-finite strings too).

        Raises:
            ValueError: A field is missing or malformed.
        """
        try:
            return cls(
                model=str(data["model"]),
                candidate_version=data.get("candidate_version"),
                production_version=data.get("production_version"),
                threshold=_from_json_float(data["threshold"]),
                heldout_prod=_from_json_floats(data["heldout_prod"]),
                heldout_cand=_from_json_floats(data["heldout_cand"]),
                labels_kind=list(data["labels_kind"]),
                labels_prod=_from_json_floats(data["labels_prod"]),
                labels_cand=_from_json_floats(data["labels_cand"]),
                past_kind=list(data.get("past_kind") or []),
                past_prod=_from_json_floats(data.get("past_prod") or []),
                past_cand=_from_json_floats(data.get("past_cand") or []),
                loss_history=list(_from_json_floats(data.get("loss_history") or [])),
                metrics={str(k): _from_json_metric(v) for k, v in (data.get("metrics") or {}).items()},
                verdict=dict(data.get("verdict") or {}),
                run_id=str(data["run_id"]),
                created_at=str(data["created_at"]),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"evaluation data is malformed ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------------------
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_float(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _json_floats(values: Any) -> list[float | str]:
    return [_json_float(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def _from_json_float(value: Any) -> float:
    if isinstance(value, str):
        if value not in _NONFINITE:
            raise ValueError(f"{value!r} is not a number")
        return _NONFINITE[value]
    return float(value)


def _from_json_floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([_from_json_float(v) for v in values], dtype=np.float64)


def _from_json_metric(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def _to_json(value: Any) -> Any:
    """Plain strict-JSON data; objects JSON cannot hold are shown by their ``str`` (this is for display)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_to_json(v) for v in sorted(value, key=repr)]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _to_json(value.tolist())
    return str(value)


def _dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------------------------------------
# Derived numbers (what the plots and tables show)
# --------------------------------------------------------------------------------------------------------
def _abnormal(scores: np.ndarray, threshold: float) -> np.ndarray:
    return scores > threshold  # NaN compares False: decided normal, as the detectors decide


def _correct(kinds: Sequence[str], scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where a labelled sample is decided as its label says (FP: normal, FN: abnormal)."""
    is_fn = np.array([k == FN for k in kinds], dtype=bool)
    abnormal = _abnormal(scores, threshold)
    return np.where(is_fn, abnormal, ~abnormal)


def _nonfinite(values: np.ndarray) -> dict[str, int]:
    return {
        "inf": int(np.count_nonzero(np.isposinf(values))),
        "-inf": int(np.count_nonzero(np.isneginf(values))),
        "nan": int(np.count_nonzero(np.isnan(values))),
    }


def _label_outcomes(kinds: list[str], prod: np.ndarray, cand: np.ndarray, threshold: float) -> dict[str, Any]:
    ok_prod, ok_cand = _correct(kinds, prod, threshold), _correct(kinds, cand, threshold)
    kind_arr = np.array(kinds, dtype=object)
    out: dict[str, Any] = {}
    for kind in (FP, FN):
        mask = kind_arr == kind
        out[kind] = {
            "n": int(mask.sum()),
            "correct_prod": int((ok_prod & mask).sum()),
            "correct_cand": int((ok_cand & mask).sum()),
            "fixed": int((~ok_prod & ok_cand & mask).sum()),
            "broken": int((ok_prod & ~ok_cand & mask).sum()),
        }
    return out


def _sweep(data: EvaluationData) -> dict[str, list[Any]]:
    """FP count (held-out normals) and FN count (FN labels, new and past) per threshold, both models."""
    fn_prod, fn_cand = _fn_scores(data)
    heldout = np.concatenate([data.heldout_prod, data.heldout_cand])
    heldout = heldout[np.isfinite(heldout)]
    labelled = np.concatenate([fn_prod, fn_cand])
    parts = [labelled[np.isfinite(labelled)], np.array([data.threshold])]  # FN labels are few: all of them
    if heldout.size:
        # Evenly spaced quantiles, plus a denser upper tail where FP rates of 0.01 % to 0.5 % live.
        levels = np.concatenate([np.linspace(0.0, 1.0, _SWEEP_QUANTILES), 1.0 - np.geomspace(5e-3, 1e-4, 15)])
        parts.append(np.quantile(heldout, levels))
    grid = np.unique(np.concatenate(parts))

    def above(scores: np.ndarray) -> np.ndarray:
        ordered = np.sort(scores[~np.isnan(scores)])
        return len(ordered) - np.searchsorted(ordered, grid, side="right")

    return {
        "thresholds": grid.tolist(),
        "fp_prod": above(data.heldout_prod).tolist(),
        "fp_cand": above(data.heldout_cand).tolist(),
        # An anomaly is missed unless its score is above the threshold (a NaN score is missed too).
        "fn_prod": (len(fn_prod) - above(fn_prod)).tolist(),
        "fn_cand": (len(fn_cand) - above(fn_cand)).tolist(),
    }


def _fn_scores(data: EvaluationData) -> tuple[np.ndarray, np.ndarray]:
    new = np.array([k == FN for k in data.labels_kind], dtype=bool)
    past = np.array([k == FN for k in data.past_kind], dtype=bool)
    return (
        np.concatenate([data.labels_prod[new], data.past_prod[past]]),
        np.concatenate([data.labels_cand[new], data.past_cand[past]]),
    )


def _derived(data: EvaluationData) -> dict[str, Any]:
    n = len(data.heldout_prod)
    fp_prod = int(_abnormal(data.heldout_prod, data.threshold).sum())
    fp_cand = int(_abnormal(data.heldout_cand, data.threshold).sum())
    losses = np.asarray(data.loss_history, dtype=np.float64)
    finite_losses = losses[np.isfinite(losses)]
    return {
        "heldout": {
            "n": n,
            "fp_prod": fp_prod,
            "fp_cand": fp_cand,
            "fp_rate_prod": fp_prod / n if n else None,
            "fp_rate_cand": fp_cand / n if n else None,
            "nonfinite_prod": _nonfinite(data.heldout_prod),
            "nonfinite_cand": _nonfinite(data.heldout_cand),
        },
        "labels": _label_outcomes(data.labels_kind, data.labels_prod, data.labels_cand, data.threshold),
        "past": _label_outcomes(data.past_kind, data.past_prod, data.past_cand, data.threshold),
        "sweep": _sweep(data),
        "loss": {
            "steps": len(losses),
            "first": _json_float(losses[0]) if len(losses) else None,
            "final": _json_float(losses[-1]) if len(losses) else None,
            "min": float(finite_losses.min()) if finite_losses.size else None,
            "nonfinite": int(len(losses) - finite_losses.size),
        },
    }


# --------------------------------------------------------------------------------------------------------
# Plot helpers
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Scale:
    """One score axis: linear or log, and where infinite scores are drawn (just past the finite range)."""

    log: bool
    lo: float
    hi: float

    def _beyond(self, value: float, share: float, up: bool) -> float:
        if self.log:
            factor = (self.hi / self.lo) ** share if self.hi > self.lo else 2.0**share
            return value * factor if up else value / factor
        step = share * ((self.hi - self.lo) or max(abs(value), 1.0))
        return value + step if up else value - step

    @property
    def top(self) -> float:
        """Where +inf is drawn."""
        return self._beyond(self.hi, 0.05, up=True)

    @property
    def bottom(self) -> float:
        """Where -inf (and, on a log axis, non-positive values) are drawn."""
        return self._beyond(self.lo, 0.05, up=False)

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Values to draw: NaN left out, +-inf at the axis edges (and non-positive ones too on a log axis)."""
        shown = values[~np.isnan(values)]
        shown = np.where(np.isposinf(shown), self.top, shown)
        shown = np.where(np.isneginf(shown), self.bottom, shown)
        if self.log:
            shown = np.where(shown <= 0, self.bottom, shown)
        return shown

    @property
    def limits(self) -> tuple[float, float]:
        """The axis range: a little room past the clip positions, so points drawn there are seen whole."""
        return self._beyond(self.bottom, 0.03, up=False), self._beyond(self.top, 0.03, up=True)

    def apply(self, ax: Axes, axis: str) -> None:
        if self.log:
            (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        (ax.set_xlim if axis == "x" else ax.set_ylim)(*self.limits)


def _scale_of(*arrays: np.ndarray, threshold: float) -> _Scale:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.array([threshold])])
    lo, hi = float(finite.min()), float(finite.max())
    log = lo > 0 and hi / lo >= _LOG_SPAN
    return _Scale(log=log, lo=lo, hi=hi)


def _clip_note(values: np.ndarray) -> str:
    counts = _nonfinite(values)
    parts = []
    if counts["inf"]:
        parts.append(f"{counts['inf']} inf at right edge")
    if counts["-inf"]:
        parts.append(f"{counts['-inf']} -inf at left edge")
    if counts["nan"]:
        parts.append(f"{counts['nan']} NaN left out")
    return "; " + "; ".join(parts) if parts else ""


def _new_figure(width: float, height: float) -> Figure:
    # The object-oriented API without pyplot: no global backend switch, no figure registry, thread-safe.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" entry: the bytes should not change with the matplotlib version string alone.
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


def _pct(count: int, n: int) -> str:
    return f"{count / n:.1%}" if n else "n/a"


# --------------------------------------------------------------------------------------------------------
# The four plots
# --------------------------------------------------------------------------------------------------------
def plot_heldout(data: EvaluationData) -> bytes:
    """Held-out normal scores under both models: a histogram and the share above each score.

    Args:
        data: The evaluation data.

    Returns:
        PNG bytes.
    """
    from matplotlib.ticker import NullFormatter

    fig = _new_figure(10.0, 3.8)
    hist_ax, surv_ax = fig.subplots(1, 2)
    n = len(data.heldout_prod)
    if n == 0:
        _no_data(hist_ax, "no held-out normal data")
        _no_data(surv_ax, "no held-out normal data")
        return _png(fig)
    scale = _scale_of(data.heldout_prod, data.heldout_cand, threshold=data.threshold)
    edges = (
        np.geomspace(scale.bottom, scale.top, _HIST_BINS + 1)
        if scale.log
        else np.linspace(scale.bottom, scale.top, _HIST_BINS + 1)
    )
    for name, scores, color in (
        ("production", data.heldout_prod, _PROD_COLOR),
        ("candidate", data.heldout_cand, _CAND_COLOR),
    ):
        shown = scale.clip(scores)
        above = int(_abnormal(scores, data.threshold).sum())
        label = f"{name}: {_pct(above, n)} above threshold{_clip_note(scores)}"
        hist_ax.hist(shown, bins=edges, histtype="step", linewidth=1.5, color=color)
        # Share of samples scoring above x; at x = threshold this is the FP rate.
        ordered = np.sort(shown)
        share = (len(ordered) - np.arange(1, len(ordered) + 1)) / n
        xs = np.concatenate([[scale.bottom], ordered])
        ys = np.concatenate([[len(ordered) / n], share])
        surv_ax.step(xs, ys, where="post", color=color, linewidth=1.5, label=label)
        if above:
            surv_ax.plot([data.threshold], [above / n], "o", color=color, markersize=5)
    for ax in (hist_ax, surv_ax):
        scale.apply(ax, "x")
        ax.axvline(data.threshold, **_THRESHOLD_STYLE, label="threshold")
        ax.set_xlabel("anomaly score" + (" (log)" if scale.log else ""))
        ax.grid(alpha=0.3)
    hist_ax.set_yscale("log")
    hist_ax.set_ylabel("samples per bin (log)")
    hist_ax.set_title(f"held-out normal samples (n={n})")
    surv_ax.set_yscale("log")
    surv_ax.set_ylim(0.5 / n, 1.5)
    for ax in (hist_ax, surv_ax):  # "6x10^-1" minor labels clutter a log axis spanning under a decade
        ax.yaxis.set_minor_formatter(NullFormatter())
    surv_ax.set_ylabel("share scoring above x (log)")
    surv_ax.set_title("share above x; at the threshold: FP rate")
    surv_ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def plot_labels(data: EvaluationData) -> bytes:
    """Per labelled mistake, its score under production and under the candidate, joined by a line.

    Four panels: this run's FP and FN labels, then the past ones. A line is green when the candidate decides
    the sample as labelled, red when it does not; the shaded side of the threshold is the correct one.

    Args:
        data: The evaluation data.

    Returns:
        PNG bytes.
    """
    from matplotlib.collections import LineCollection

    fig = _new_figure(12.0, 3.9)
    axes = fig.subplots(1, 4, sharey=True)
    scale = _scale_of(
        data.labels_prod, data.labels_cand, data.past_prod, data.past_cand, threshold=data.threshold
    )
    panels = [
        ("new FP", FP, data.labels_kind, data.labels_prod, data.labels_cand),
        ("new FN", FN, data.labels_kind, data.labels_prod, data.labels_cand),
        ("past FP", FP, data.past_kind, data.past_prod, data.past_cand),
        ("past FN", FN, data.past_kind, data.past_prod, data.past_cand),
    ]
    for ax, (title, kind, kinds, prod_all, cand_all) in zip(axes, panels, strict=True):
        mask = np.array([k == kind for k in kinds], dtype=bool)
        prod, cand = prod_all[mask], cand_all[mask]
        n = len(prod)
        ax.set_xlim(-0.5, 1.5)
        ax.set_xticks([0, 1], ["production", "candidate"])
        scale.apply(ax, "y")
        if kind == FP:  # a false alarm is fixed when it falls to or below the threshold
            ax.axhspan(scale.limits[0], data.threshold, color=_GOOD_COLOR, alpha=0.07, linewidth=0)
        else:  # a missed anomaly is fixed when it rises above it
            ax.axhspan(data.threshold, scale.limits[1], color=_GOOD_COLOR, alpha=0.07, linewidth=0)
        ax.axhline(data.threshold, **_THRESHOLD_STYLE)
        ax.grid(axis="y", alpha=0.3)
        if n == 0:
            ax.set_title(f"{title}: none", fontsize=10)
            ax.text(0.5, 0.75, "no labels", ha="center", va="center", transform=ax.transAxes, color="#777777",
                    bbox={"facecolor": "white", "edgecolor": "none"})  # fmt: skip
            continue
        ok_prod = _correct([kind] * n, prod, data.threshold)
        ok_cand = _correct([kind] * n, cand, data.threshold)
        # NaN scores cannot be drawn; they still count in the title's numbers.
        drawable = ~np.isnan(prod) & ~np.isnan(cand)
        # Spread the pairs a little sideways so that equal scores stay distinguishable (deterministic).
        offsets = np.linspace(-0.15, 0.15, n) if n > 1 else np.zeros(1)
        y0 = np.full(n, np.nan)
        y1 = np.full(n, np.nan)
        y0[~np.isnan(prod)] = scale.clip(prod)
        y1[~np.isnan(cand)] = scale.clip(cand)
        colors = np.where(ok_cand, _GOOD_COLOR, _BAD_COLOR)
        alpha = 0.8 if n <= 50 else max(0.15, 0.8 * math.sqrt(50 / n))
        segments = [[(offsets[i], y0[i]), (1 + offsets[i], y1[i])] for i in np.flatnonzero(drawable)]
        ax.add_collection(
            LineCollection(segments, colors=list(colors[drawable]), linewidths=1.0, alpha=alpha)
        )
        ax.scatter(offsets, y0, s=12, color=_PROD_COLOR, alpha=alpha, zorder=3)
        ax.scatter(1 + offsets, y1, s=12, color=colors, alpha=alpha, zorder=3)
        notes = [_clip_note(np.concatenate([prod, cand])).lstrip("; ")]
        broken = int((ok_prod & ~ok_cand).sum())
        if broken:
            notes.insert(0, f"{broken} regression{'s' * (broken != 1)}")
        note = "; ".join(n for n in notes if n).replace("right edge", "top").replace("left edge", "bottom")
        ax.set_title(
            f"{title} (n={n}): correct {int(ok_prod.sum())} → {int(ok_cand.sum())}"
            + (f"\n{note}" if note else ""),
            fontsize=10,
            color=_BAD_COLOR if broken else "black",
        )
    axes[0].set_ylabel("anomaly score" + (" (log)" if scale.log else ""))
    return _png(fig)


def plot_errors(data: EvaluationData, sweep: Mapping[str, Sequence[Any]] | None = None) -> bytes:
    """FP count on held-out normals and FN count on FN labels as the threshold moves, both models.

    Args:
        data: The evaluation data.
        sweep: Precomputed curves (from the derived data) to avoid recomputing them.

    Returns:
        PNG bytes.
    """
    sweep = sweep or _sweep(data)
    grid = np.asarray(sweep["thresholds"], dtype=np.float64)
    fn_prod_scores, _ = _fn_scores(data)
    fig = _new_figure(10.0, 3.6)
    fp_ax, fn_ax = fig.subplots(1, 2)
    scale = _scale_of(grid, threshold=data.threshold)
    at = int(np.searchsorted(grid, data.threshold))  # the threshold is on the grid by construction
    for ax, what, n, keys in (
        (fp_ax, "false positives on held-out normals", len(data.heldout_prod), ("fp_prod", "fp_cand")),
        (fn_ax, "false negatives on FN labels (new + past)", len(fn_prod_scores), ("fn_prod", "fn_cand")),
    ):
        if n == 0:
            ax.set_title(what, fontsize=10)
            _no_data(ax, "no data")
            continue
        for key, name, color in ((keys[0], "production", _PROD_COLOR), (keys[1], "candidate", _CAND_COLOR)):
            counts = np.asarray(sweep[key])
            ax.step(grid, counts, where="post", color=color, linewidth=1.5,
                    label=f"{name}: {int(counts[at])} at threshold")  # fmt: skip
            ax.plot([data.threshold], [counts[at]], "o", color=color, markersize=5)
        ax.axvline(data.threshold, **_THRESHOLD_STYLE, label="actual threshold")
        scale.apply(ax, "x")
        if n > 50:  # counts over many samples: the few at a useful threshold would sit on the axis
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("threshold" + (" (log)" if scale.log else ""))
        ax.set_ylabel(f"count (of {n})")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_loss(data: EvaluationData) -> bytes:
    """The unlearning loss per optimiser step; non-finite steps marked in red.

    Args:
        data: The evaluation data.

    Returns:
        PNG bytes.
    """
    fig = _new_figure(6.5, 3.4)
    ax = fig.subplots()
    losses = np.asarray(data.loss_history, dtype=np.float64)
    if losses.size == 0:
        _no_data(ax, "no unlearning steps recorded")
        ax.set_title("unlearning loss", fontsize=10)
        return _png(fig)
    steps = np.arange(1, losses.size + 1)
    finite = np.isfinite(losses)
    positive = losses[finite]
    # A log axis only pays off for a positive loss that falls by a decade or more.
    log = bool(positive.size) and bool((positive > 0).all()) and positive.max() >= 10 * positive.min()
    ax.plot(steps[finite], losses[finite], color=_CAND_COLOR, marker="." if losses.size <= 50 else None,
            linewidth=1.3, label=f"loss ({losses.size} steps)")  # fmt: skip
    bad = int((~finite).sum())
    if bad:
        for step in steps[~finite]:
            ax.axvline(step, color=_BAD_COLOR, alpha=0.4, linewidth=0.8)
        ax.plot([], [], color=_BAD_COLOR, label=f"{bad} non-finite step{'s' * (bad != 1)}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + (" (log)" if log else ""))
    last = losses[-1]
    ax.set_title(f"unlearning loss; final {_fmt(float(last))}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    """A number for people: ints as is, floats to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_to_json(value), sort_keys=True, ensure_ascii=False)
    return str(value)


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("lifelong.reports", "templates"),
        autoescape=True,  # run ids, reasons, params are data: never markup
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _verdict_word(verdict: Mapping[str, Any]) -> str:
    passed = verdict.get("passed")
    if passed is True:
        return "PASSED"
    if passed is False:
        return "REJECTED"
    return "NO VERDICT"


def _short(version: str | None, missing: str) -> str:
    return version[:12] if version else missing


def render_html(data: EvaluationData, derived: Mapping[str, Any]) -> str:
    """The report page; images are referenced as files beside it.

    Args:
        data: The evaluation data.
        derived: The derived numbers (``data.json``'s ``"derived"``).

    Returns:
        The HTML text.
    """
    checks = [
        {
            "name": str(check.get("name", "?")),
            "value": _fmt(check.get("value")),
            "threshold": _fmt(check.get("threshold")),
            "passed": check.get("passed") is True,
        }
        for check in data.verdict.get("checks") or []
        if isinstance(check, Mapping)
    ]
    outcome_rows = []
    for group, title in (("labels", "new"), ("past", "past")):
        for kind in (FP, FN):
            row = derived[group][kind]
            outcome_rows.append({"label": f"{title} {kind}", **row})
    heldout = derived["heldout"]
    plots = [
        {
            "file": PLOT_HELDOUT,
            "title": "Held-out normal data",
            "caption": (
                "Scores of held-out normal samples (never used for training or unlearning) under both "
                "models. Everything right of the dashed threshold is a false positive. Left: histogram; "
                "right: the share of samples scoring above each value, which reads as the FP rate where it "
                "crosses the threshold. Forgetting shows as the candidate's curve moving right of "
                "production's: more normal data flagged."
            ),
        },
        {
            "file": PLOT_LABELS,
            "title": "Labelled mistakes",
            "caption": (
                "Each line joins one labelled sample's score under production (left) and the candidate "
                "(right). The shaded side of the threshold is the correct one: below it for FP labels "
                "(confirmed normal), above it for FN labels (missed anomalies). Green: the candidate now "
                "decides it correctly; red: it does not. New labels should mostly turn green; a past label "
                "that production got right and the candidate gets wrong is a regression."
            ),
        },
        {
            "file": PLOT_ERRORS,
            "title": "Errors against the threshold",
            "caption": (
                "False positives on held-out normals and false negatives on all FN labels (this run's and "
                "past ones) for every threshold between the pooled scores' quantiles. The dashed line is the "
                "threshold in use. A candidate that sits left of and below production in both panels makes "
                "fewer mistakes at any threshold, not only at this one."
            ),
        },
        {
            "file": PLOT_LOSS,
            "title": "Unlearning loss",
            "caption": (
                "The unlearning objective per optimiser step. It should fall and flatten; a rising or "
                "non-finite loss (red) means the step size or regularisation is wrong and the gate's "
                "numerics check rejects the candidate."
            ),
        },
    ]
    template = _environment().get_template("report.html.j2")
    return template.render(
        model=data.model,
        candidate=_short(data.candidate_version, "(not stored yet)"),
        candidate_full=data.candidate_version or "",
        production=_short(data.production_version, "(none)"),
        production_full=data.production_version or "",
        verdict_word=_verdict_word(data.verdict),
        verdict_class=_verdict_word(data.verdict).lower().replace(" ", "-"),
        reason=str(data.verdict.get("reason") or ""),
        checks=checks,
        metrics=[{"name": str(k), "value": _fmt(v)} for k, v in data.metrics.items()],
        threshold=_fmt(data.threshold),
        heldout={
            "n": heldout["n"],
            "fp_prod": heldout["fp_prod"],
            "fp_cand": heldout["fp_cand"],
            "rate_prod": _pct(heldout["fp_prod"], heldout["n"]),
            "rate_cand": _pct(heldout["fp_cand"], heldout["n"]),
        },
        outcomes=outcome_rows,
        loss=derived["loss"],
        loss_final=_fmt(data.loss_history[-1]) if data.loss_history else "—",
        run_id=data.run_id,
        created_at=data.created_at,
        extra_json=_dump_json(_to_json(data.extra)),
        verdict_json=_dump_json(_to_json(data.verdict)),
        plots=plots,
        data_file=DATA_FILE,
    )


# --------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------
def build_report(data: EvaluationData) -> dict[str, bytes]:
    """Build the report's files, ready for ``ModelRegistry.put_version(..., extra_files=...)``.

    Args:
        data: The evaluation data.

    Returns:
        File name -> bytes, every name prefixed with :data:`REPORT_PREFIX`: ``index.html``, the four PNGs
        (``scores_heldout.png``, ``scores_labels.png``, ``errors_vs_threshold.png``, ``loss.png``) and
        ``data.json`` (``{"schema", "data", "derived"}``: the inputs and the numbers behind the plots).
        Equal data gives equal bytes.
    """
    derived = _derived(data)
    payload = {"schema": SCHEMA_VERSION, "data": data.to_dict(), "derived": _to_json(derived)}
    files = {
        PLOT_HELDOUT: plot_heldout(data),
        PLOT_LABELS: plot_labels(data),
        PLOT_ERRORS: plot_errors(data, derived["sweep"]),
        PLOT_LOSS: plot_loss(data),
        # Compact: the held-out arrays hold thousands of numbers, one per line would triple the size.
        DATA_FILE: (
            json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            + "\n"
        ).encode("utf-8"),
        INDEX_FILE: render_html(data, derived).encode("utf-8"),
    }
    logger.info(
        "built evaluation report of model %s candidate %s (%d files, %d bytes)",
        data.model,
        _short(data.candidate_version, "(unstored)"),
        len(files),
        sum(len(b) for b in files.values()),
    )
    return {REPORT_PREFIX + name: content for name, content in files.items()}


def report_file_names(names: Sequence[str]) -> list[str]:
    """The report files among a version's file names (e.g. the keys of its manifest's ``files``).

    Args:
        names: File names of a registry version.

    Returns:
        Those that belong to the evaluation report, sorted.
    """
    return sorted(name for name in names if name.startswith(REPORT_PREFIX))


def write_report(files: Mapping[str, bytes], folder: Path) -> Path:
    """Write report files into a folder, without their prefix, so that ``index.html`` finds its images.

    Each file is written to a temporary name and renamed, and ``index.html`` last, so a page that exists
    has its images beside it.

    Args:
        files: Output of :func:`build_report` (or the same files fetched from the registry).
        folder: Where to write; created if missing. Existing files of the same names are replaced.

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: A name lacks the report prefix or is not a plain file name, or there is no index.html.
    """
    plain: dict[str, bytes] = {}
    for name, content in files.items():
        if not name.startswith(REPORT_PREFIX):
            raise ValueError(f"{name!r} is not a report file (report files start with {REPORT_PREFIX!r})")
        local = name[len(REPORT_PREFIX) :]
        # Names may come from a remote manifest: never let one climb out of the folder.
        if not local or local in (".", "..") or PurePath(local).name != local or "\\" in local:
            raise ValueError(f"report file {name!r} does not name a plain file")
        plain[local] = bytes(content)
    if INDEX_FILE not in plain:
        raise ValueError(f"the report files hold no {REPORT_PREFIX}{INDEX_FILE}: {sorted(files)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for local in sorted(plain, key=lambda n: n == INDEX_FILE):
        target = folder / local
        partial = folder / f".{local}.partial"
        partial.write_bytes(plain[local])
        os.replace(partial, target)
    logger.info("wrote %d report files to %s", len(plain), folder)
    return folder / INDEX_FILE
