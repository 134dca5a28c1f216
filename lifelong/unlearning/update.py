"""One bounded unlearning update: correct a model with labelled mistakes only (paper section 3).

The loss is ReLU(BND - l * L(x)) over the units of the labelled samples (Eq. 17) plus the forgetting penalty
(Eq. 19, or Eq. 18 for the ablation) anchored at the parameters before the update. It steps with a small
learning rate (1% of training by default), re-evaluates after every step, and stops as soon as every false
negative is past BND and every false positive is decided normal. An update whose loss or parameters become
non-finite, or that runs out of budget before converging, returns the *original* model and the reason.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from lifelong.models.base import Detector, take, unit_keys
from lifelong.unlearning.ewc import ForgettingPenalty, RegularizerMode, fisher_diagonal
from lifelong.unlearning.flat import FlatParameters
from lifelong.unlearning.guard import NoHarmGuard
from lifelong.unlearning.loss import FN_LABEL, FP_LABEL, bounded_unlearning_loss

log = logging.getLogger(__name__)

FnUnits = Literal["all", "max", "topk"]


@dataclass
class UnlearnConfig:
    """Options of one update. Every field has the default the benchmark measured best (see README).

    Attributes:
        bnd_factor: BND = bnd_factor * tau' (the paper recommends 2).
        fp_margin: a false positive counts as relearnt once its score is <= fp_margin * tau' (1.0 = just
            decided normal, the paper's rule; a margin makes the fix generalise to similar samples).
        lr_scale: with ``lr=None``, learning rate = lr_scale * the detector's training learning rate (the
            paper's 1%). Our detectors train with Adam; an SGD step of 1% of that (1e-5) did not move a missed
            anomaly to BND within 100 steps on any benchmark, so the default is an explicit ``lr``.
        lr: an explicit learning rate (default 1e-2, SGD: 1-20 steps per update, as in the paper).
        optimizer: 'sgd' or 'adam'.
        lam: lambda of the forgetting penalty (paper: 5e3 on HDFS).
        regularizer: 'fisher' (Eq. 19), 'l2' (Eq. 18) or 'none'.
        memory_units: units sampled from the held-out normals for the Fisher weights, per update.
        past_units: units sampled from all past labelled mistakes for the Fisher weights, per update.
        fn_units: which units of a false-negative sample are pushed away: 'max' (the least likely one),
            'topk' (the k least likely), or 'all'. Irrelevant for vectors (one unit per sample).
        fn_k: k for 'topk'.
        fn_skip_normal_units: never push a false negative's unit that is identical to a unit of known-normal
            data (the held-out normals, this update's and past false positives): the model cannot score the
            same input two ways, so pushing it flags that normal data too. The FN's next-worst distinct unit is
            pushed instead; an FN with none left is skipped and counted as ``indistinguishable`` (on event
            sessions: a loop run far longer than normal, whose every window also occurs in normal sessions).
        rehearse_units: past labelled mistakes sampled per update into the loss as soft constraints (0 = off):
            a past false positive adds ReLU(L(x) - fp_margin * tau'), a past false negative ReLU(tau' - L(x)),
            so an update does not undo earlier corrections. Soft: they never block convergence (as hard
            targets, conflicting past labels made nearly every update exhaust its budget).
        rehearse_weight: weight of the rehearsal term (averaged over the sampled units).
        max_heldout_harm: the largest share of the held-out normals an update may newly decide abnormal; a
            converged update over it is rejected (None = no check). Pushing a false negative that sits close
            to normal data up drags its normal neighbours over the threshold with it; the soft guard cannot
            stop that, this check does (the missed anomaly then stays missed instead).
        guard_units: held-out normal units sampled per update as a no-harm guard (0 = off): each adds
            ReLU(L(x) - L_before(x)) to the loss, so the update may not make a held-out normal worse than the
            serving model did (rehearsal beside the Fisher penalty, which vanishes at a minimum).
        guard_weight: weight of the guard term (per guard unit, averaged).
        guard_floor: a guarded row is free to rise up to guard_floor * tau' (0 = not above its score before).
        guard_strict: the update converges only once no guarded unit that was normal (<= tau') is abnormal:
            the soft guard alone cannot act when large steps reach the targets within a few steps.
        proximal: with SGD, apply the penalty as an exact proximal step (stable for large lambda).
        max_steps, max_seconds, max_samples: the budget.
        seed: memory-set sampling seed.
    """

    bnd_factor: float = 2.0
    fp_margin: float = 0.5
    lr_scale: float = 0.01
    lr: float | None = 1e-2
    optimizer: Literal["sgd", "adam"] = "sgd"
    lam: float = 100.0
    regularizer: RegularizerMode = "fisher"
    memory_units: int = 64
    past_units: int = 64
    fn_units: FnUnits = "max"
    fn_k: int = 3
    fn_skip_normal_units: bool = True
    rehearse_units: int = 0
    rehearse_weight: float = 1.0
    max_heldout_harm: float | None = None
    guard_units: int = 0
    guard_weight: float = 1.0
    guard_floor: float = 0.0
    guard_strict: bool = False
    proximal: bool = True
    max_steps: int = 300
    max_seconds: float = 60.0
    max_samples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bnd_factor <= 0:
            raise ValueError(f"bnd_factor must be > 0, got {self.bnd_factor}")
        if self.fn_units not in ("all", "max", "topk"):
            raise ValueError(f"fn_units must be 'all', 'max' or 'topk', got {self.fn_units!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if min(self.guard_units, self.guard_weight, self.guard_floor, self.rehearse_units, self.rehearse_weight) < 0:
            raise ValueError("guard_units, guard_weight, guard_floor, rehearse_units and rehearse_weight must be >= 0")
        if self.max_heldout_harm is not None and not 0 <= self.max_heldout_harm <= 1:
            raise ValueError(f"max_heldout_harm must be in [0, 1] or None, got {self.max_heldout_harm}")
        if self.max_steps < 1 or self.max_seconds <= 0 or self.max_samples < 1:
            raise ValueError("max_steps, max_seconds and max_samples must be positive")


def config_for(detector: Detector, **options: Any) -> UnlearnConfig:
    """The options of an update of ``detector``: its kind's measured defaults, then ``options`` on top."""
    return UnlearnConfig(**{**type(detector).unlearn_defaults, **options})


@dataclass
class UnlearnResult:
    """What an update produced. ``detector`` is the original object whenever ``updated`` is False."""

    detector: Detector
    updated: bool
    converged: bool
    reason: str
    steps: int
    seconds: float
    bound: float
    loss_history: list[float] = field(default_factory=list)
    n_fp: int = 0
    n_fn: int = 0
    deferred: int = 0
    indistinguishable: int = 0

    @property
    def skipped(self) -> bool:
        """Nothing was tried: every missed anomaly shares all its units with known-normal data (not a failure)."""
        return not self.updated and self.steps == 0 and self.indistinguishable > 0

    def summary(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "converged": self.converged,
            "reason": self.reason,
            "steps": self.steps,
            "seconds": round(self.seconds, 4),
            "bound": self.bound,
            "n_fp": self.n_fp,
            "n_fn": self.n_fn,
            "deferred": self.deferred,
            "indistinguishable": self.indistinguishable,
            "final_loss": self.loss_history[-1] if self.loss_history else None,
        }


def _training_lr(det: Detector) -> float:
    return float(getattr(det.config, "lr", 1e-3))


def _select_fn_units(
    det: Detector,
    units: tuple[torch.Tensor, ...],
    owner: np.ndarray,
    mode: FnUnits,
    k: int,
    normal_keys: set[bytes] | None = None,
) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
    """Keep, per FN sample, the unit(s) the model finds least likely (highest loss), never one identical to a
    unit in ``normal_keys``. A sample whose every unit is known-normal keeps none."""
    if normal_keys and len(owner):
        distinct = torch.as_tensor([key not in normal_keys for key in unit_keys(units)], device=units[0].device)
        units, owner = tuple(u[distinct] for u in units), owner[distinct.cpu().numpy()]
    if mode == "all" or len(owner) == 0:
        return units, owner
    with torch.no_grad():
        losses = det.unit_losses(units).double().cpu().numpy()
    keep: list[int] = []
    kk = 1 if mode == "max" else k
    for s in np.unique(owner):
        idx = np.flatnonzero(owner == s)
        keep.extend(idx[np.argsort(-losses[idx], kind="stable")[:kk]].tolist())
    sel = torch.as_tensor(np.sort(keep), device=units[0].device)
    return tuple(u[sel] for u in units), owner[sel.cpu().numpy()]


def _cat_units(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...] | None:
    parts = [p for p in parts if p and p[0].shape[0] > 0]
    if not parts:
        return None
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))


def _sample_units(units: tuple[torch.Tensor, ...] | None, n: int, rng: np.random.Generator):
    if units is None or units[0].shape[0] == 0:
        return None
    total = units[0].shape[0]
    if total <= n:
        return units
    idx = torch.as_tensor(np.sort(rng.choice(total, size=n, replace=False)), device=units[0].device)
    return tuple(u[idx] for u in units)


def _subset(samples: Any, n: int) -> Any:
    return samples.iloc[:n] if hasattr(samples, "iloc") else list(samples)[:n]


def _length(samples: Any) -> int:
    return 0 if samples is None else len(samples)


def _optimizer(kind: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """The update's optimizer, fused into one kernel where torch has one for these tensors (3x faster per
    step than the per-tensor loop on a small model, where a step is mostly overhead), else multi-tensor."""
    opt_cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    try:
        return opt_cls(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return opt_cls(params, lr=lr, foreach=True)


def _rehearsal_units(
    det: Detector,
    past_fp: Any,
    past_fn: Any,
    cfg: UnlearnConfig,
    rng: np.random.Generator,
    normal_keys: set[bytes] | None = None,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor] | None:
    """Up to ``cfg.rehearse_units`` units of past mistakes: (units, sign, target) with sign +1 for a past
    FN (keep L >= tau') and -1 for a past FP (keep L <= fp_margin * tau').

    Samples are drawn before they are encoded, so the cost stays flat however long the history grows."""
    n_fp, n_fn = _length(past_fp), _length(past_fn)
    if not n_fp + n_fn:
        return None
    pick = np.sort(rng.choice(n_fp + n_fn, size=min(cfg.rehearse_units, n_fp + n_fn), replace=False))
    tau = det.loss_threshold
    parts: list[tuple[torch.Tensor, ...]] = []
    signs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    for samples, idx, sign, target in (
        (past_fp, pick[pick < n_fp], FP_LABEL, cfg.fp_margin * tau),
        (past_fn, pick[pick >= n_fp] - n_fp, FN_LABEL, tau),
    ):
        if not len(idx):
            continue
        unit_t, owner = det.units(take(samples, idx))
        if sign == FN_LABEL:  # the same units an FN update pushes
            unit_t, owner = _select_fn_units(det, unit_t, owner, cfg.fn_units, cfg.fn_k, normal_keys)
        n = int(unit_t[0].shape[0])
        if n == 0:
            continue
        parts.append(unit_t)
        signs.append(torch.full((n,), sign, device=unit_t[0].device))
        targets.append(torch.full((n,), target, device=unit_t[0].device))
    units = _cat_units(parts)
    if units is None:
        return None
    sign_t, target_t = torch.cat(signs), torch.cat(targets)
    total = int(sign_t.shape[0])
    if total > cfg.rehearse_units:  # sessions with several units each ('all', 'topk')
        idx = torch.as_tensor(np.sort(rng.choice(total, size=cfg.rehearse_units, replace=False)), device=sign_t.device)
        units, sign_t, target_t = tuple(u[idx] for u in units), sign_t[idx], target_t[idx]
    return units, sign_t, target_t


def _left(done: np.ndarray, crossed: int) -> str:
    """What an update that ran out of budget still lacked, for its reason."""
    left = f"{int((~done).sum())} sample(s) left"
    return left + (f", {crossed} guarded normal unit(s) over tau'" if crossed else "")


def _heldout_harm(before: Detector, after: Detector, validation: Any, cfg: UnlearnConfig) -> str:
    """Why ``after`` harms the held-out normals too much ('' when it does not, or when not checked)."""
    n = _length(validation)
    if cfg.max_heldout_harm is None or not n:
        return ""
    was, now = int(before.decide(validation).sum()), int(after.decide(validation).sum())
    if now - was > cfg.max_heldout_harm * n:
        return (
            f"it would decide {now - was} more of {n} held-out normals abnormal ({was} -> {now}; "
            f"at most {cfg.max_heldout_harm:.1%} allowed)"
        )
    return ""


def unlearn(
    detector: Detector,
    *,
    false_positives: Any = None,
    false_negatives: Any = None,
    validation: Any = None,
    past_false_positives: Any = None,
    past_false_negatives: Any = None,
    config: UnlearnConfig | None = None,
) -> UnlearnResult:
    """Correct ``detector`` with labelled mistakes; the original is never modified.

    Args:
        detector: the serving model (left untouched).
        false_positives: normal samples the model flagged (relearnt).
        false_negatives: anomalies the model passed (pushed away, bounded).
        validation: held-out normal samples; a random subsample joins the memory set.
        past_false_positives, past_false_negatives: earlier labelled mistakes (memory set; replay if asked).
        config: options and budget.

    Returns:
        An :class:`UnlearnResult`; ``result.detector`` is a new model only when ``result.updated``.
    """
    cfg = config or config_for(detector)
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_fp, n_fn = _length(false_positives), _length(false_negatives)
    deferred = max(0, n_fp + n_fn - cfg.max_samples)
    if deferred:  # the budget caps the samples of one run; the rest wait for the next one
        n_fp = min(n_fp, cfg.max_samples)
        n_fn = min(n_fn, cfg.max_samples - n_fp)
        false_positives = _subset(false_positives, n_fp) if n_fp else None
        false_negatives = _subset(false_negatives, n_fn) if n_fn else None
    bound = cfg.bnd_factor * detector.loss_threshold
    indistinguishable = 0  # missed anomalies with no unit unlike known-normal data (skipped)

    def result(det: Detector, updated: bool, converged: bool, reason: str, steps: int, hist: list[float]):
        return UnlearnResult(
            det,
            updated,
            converged,
            reason,
            steps,
            time.perf_counter() - start,
            bound,
            hist,
            n_fp,
            n_fn,
            deferred,
            indistinguishable,
        )

    if n_fp + n_fn == 0:
        return result(detector, False, True, "nothing to unlearn", 0, [])
    if not math.isfinite(bound):
        return result(detector, False, False, "the detector has no finite threshold; cannot bound the loss", 0, [])

    cand = detector.clone()
    module = cand.module_

    # Held-out normal units, encoded once for every use below (the Fisher memory set, the guard, and the
    # known-normal units a false negative may not be pushed through); past mistakes likewise.
    rehearses_fn = cfg.rehearse_units > 0 and _length(past_false_negatives) > 0
    skip_normal = cfg.fn_skip_normal_units and (n_fn > 0 or rehearses_fn)
    uses_heldout = (cfg.regularizer == "fisher" and cfg.lam > 0) or cfg.guard_units > 0 or skip_normal
    heldout = cand.units(validation)[0] if uses_heldout and _length(validation) else None
    uses_past = (cfg.regularizer == "fisher" and cfg.lam > 0) or skip_normal
    past_fp_units = cand.units(past_false_positives)[0] if uses_past and _length(past_false_positives) else None
    past_fn_units = cand.units(past_false_negatives)[0] if uses_past and _length(past_false_negatives) else None
    fp_units = cand.units(false_positives)[0] if n_fp and skip_normal else None
    normal_keys: set[bytes] = set()
    if skip_normal:
        for known_normal in (heldout, past_fp_units, fp_units):
            if known_normal is not None:
                normal_keys.update(unit_keys(known_normal))

    # Units to unlearn now, with their labels (+1 FN, -1 FP), the sample each belongs to, and per sample the
    # loss it must reach: an FN's largest unit loss >= BND, an FP's largest <= fp_margin * tau'.
    tau = detector.loss_threshold
    parts: list[tuple[torch.Tensor, ...]] = []
    labels: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    targets: list[float] = []

    def add(samples: Any, kind: float, target: float, select: bool) -> None:
        nonlocal indistinguishable
        unit_t, owner = cand.units(samples)
        if select:
            unit_t, owner = _select_fn_units(cand, unit_t, owner, cfg.fn_units, cfg.fn_k, normal_keys)
            indistinguishable = _length(samples) - len(np.unique(owner))
        if unit_t[0].shape[0] == 0:
            return
        _, local = np.unique(owner, return_inverse=True)
        parts.append(unit_t)
        labels.append(np.full(unit_t[0].shape[0], kind))
        owners.append(local.reshape(-1) + len(targets))
        targets.extend([target] * int(local.max() + 1))

    if n_fp:
        add(false_positives, FP_LABEL, cfg.fp_margin * tau, False)
    if n_fn:
        add(false_negatives, FN_LABEL, bound, True)
    units = _cat_units(parts)
    if units is None:
        why = "the labelled samples have no usable units"
        if indistinguishable:
            why = (
                f"nothing to unlearn: every unit of the {indistinguishable} missed anomal(ies) also occurs in "
                "known-normal data, so no update can flag them without flagging that data"
            )
        return result(detector, False, True, why, 0, [])
    label_np = np.concatenate(labels)
    label_t = torch.as_tensor(label_np, dtype=torch.float32, device=units[0].device)
    owner_np = np.concatenate(owners)
    target_np = np.asarray(targets)
    is_fn_sample = np.zeros(len(target_np), dtype=bool)
    is_fn_sample[owner_np[label_np == FN_LABEL]] = True

    # Memory set M_t: held-out normals + past mistakes, sampled afresh for this update (Eq. 20).
    penalty = None
    if cfg.regularizer != "none" and cfg.lam > 0:
        fisher = None
        if cfg.regularizer == "fisher":
            mem_parts = [_sample_units(heldout, cfg.memory_units, rng)]
            past_units = _cat_units([p for p in (past_fp_units, past_fn_units) if p is not None])
            mem_parts.append(_sample_units(past_units, cfg.past_units, rng))
            memory = _cat_units([m for m in mem_parts if m is not None])
            fisher = (
                fisher_diagonal(module, cand.unit_losses, memory)
                if memory is not None
                else {n: torch.zeros_like(p) for n, p in module.named_parameters()}
            )
        penalty = ForgettingPenalty(module, cfg.lam, cfg.regularizer, fisher)

    # No-harm guard: held-out normals may not get worse than under the serving model.
    guard = None
    if cfg.guard_units and heldout is not None and heldout[0].shape[0]:
        guard = NoHarmGuard.sample(
            cand,
            heldout,
            cfg.guard_units,
            rng,
            weight=cfg.guard_weight,
            floor=cfg.guard_floor,
            strict=cfg.guard_strict,
        )

    # Rehearsal: a sample of past mistakes, each held softly on its side of the threshold.
    rehearsal = None
    if cfg.rehearse_units:
        rehearsal = _rehearsal_units(cand, past_false_positives, past_false_negatives, cfg, rng, normal_keys)

    # One forward pass per step over everything the loss looks at (labelled units, guard, rehearsal): on a
    # small model the per-call overhead, not the arithmetic, is what a step costs.
    n_lab = int(units[0].shape[0])

    def fused_units() -> tuple[tuple[torch.Tensor, ...], int]:
        guarded = [guard.units] if guard is not None else []
        return _cat_units([units, *guarded, *([rehearsal[0]] if rehearsal else [])]), guard.size if guard else 0

    step_units, n_guard = fused_units()

    lr = cfg.lr if cfg.lr is not None else cfg.lr_scale * _training_lr(detector)
    # Parameters as views into one buffer: gradient zeroing, optimizer step and penalty gradient are one
    # tensor operation each. Released (own storage per parameter again) however the loop ends.
    flat = FlatParameters(module)
    opt = _optimizer(cfg.optimizer, [flat.param], lr)
    history: list[float] = []
    proximal = penalty is not None and cfg.optimizer == "sgd" and cfg.proximal

    module.train()
    steps = 0
    reason = ""
    try:
        while True:
            step_losses = cand.unit_losses(step_units)
            losses = step_losses[:n_lab]  # (U,)
            # Which samples still miss their target (measured before this step's update).
            with torch.no_grad():
                worst = np.full(len(target_np), -np.inf)
                np.maximum.at(worst, owner_np, losses.detach().double().cpu().numpy())
            done = np.where(is_fn_sample, worst >= target_np, worst <= target_np)
            crossed = guard.crossed(step_losses[n_lab : n_lab + n_guard]) if guard is not None else 0
            if done.all() and not crossed:
                if guard is not None and guard.grow(cand):
                    # A strict guard found held-out units outside its sample that this candidate harms: they
                    # join the guard and the update goes on (the losses are recomputed over the new set).
                    step_units, n_guard = fused_units()
                    continue
                module.eval()
                # Checked here rather than after every step: a non-finite weight that touches the loss shows
                # up as a non-finite loss at the next step (caught below); this catches the rest.
                if not cand.parameters_finite():
                    return result(
                        detector, False, False, f"parameters became non-finite by step {steps}", steps, history
                    )
                harm = _heldout_harm(detector, cand, validation, cfg)
                if harm:
                    return result(detector, False, True, f"rejected after {steps} steps: {harm}", steps, history)
                skipped = f" ({indistinguishable} missed anomal(ies) skipped: no unit unlike normal data)"
                why = f"converged in {steps} steps" + (skipped if indistinguishable else "")
                return result(cand, True, True, why, steps, history)
            if steps >= cfg.max_steps:
                reason = f"budget exhausted: {steps} steps without converging ({_left(done, crossed)})"
                break
            if time.perf_counter() - start > cfg.max_seconds:
                reason = f"budget exhausted: {cfg.max_seconds:g} s without converging ({_left(done, crossed)})"
                break
            # Only samples still short of their target train, averaged per sample: a batch of hundreds of labels
            # takes steps of the same size as a single label (a plain sum would make the step hundreds of times
            # larger), and a sample that is done stops pulling the model.
            active = torch.as_tensor(~done[owner_np], device=losses.device)
            loss = bounded_unlearning_loss(losses[active], label_t[active], bound) / max(1, int((~done).sum()))
            if guard is not None:
                loss = loss + guard.penalty(step_losses[n_lab : n_lab + n_guard])
            if rehearsal is not None:
                _, r_sign, r_target = rehearsal
                slack = torch.relu(r_sign * (r_target - step_losses[n_lab + n_guard :]))
                loss = loss + cfg.rehearse_weight * slack.mean()
            flat.zero_grad()
            loss.backward()
            # The penalty is a quadratic with a closed-form gradient: added to .grad, outside autograd.
            reg_value = penalty.value(flat, add_gradient=not proximal) if penalty is not None else 0.0
            history.append(float(loss.detach()) + reg_value)
            if not math.isfinite(history[-1]):
                module.eval()
                return result(detector, False, False, f"loss became non-finite at step {steps}", steps, history)
            opt.step()
            if proximal:
                # SGD: gradient step on the bounded loss, then the penalty's exact proximal step (stable for
                # any lambda).
                penalty.proximal_step(module, lr)
            steps += 1
        module.eval()
        return result(detector, False, False, reason, steps, history)
    finally:
        flat.release()
