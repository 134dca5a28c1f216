"""The no-harm guard of an update: held-out normal units the update may not make worse.

Soft part: each guarded unit adds ``weight * ReLU(L(x) - L_before(x))`` (averaged) to the loss, so the update
prefers directions that leave normal data where the serving model had it. Strict part: a guarded unit the
serving model decided normal must still be normal for the update to converge. Large steps can reach the
labelled targets in a few steps, before the soft term has acted; pushing a missed anomaly's unit then drags
similar normal units over the threshold with it (on event sessions: ``read_block -> compress`` inside a read
loop pushed up, and the archive path, where that pair is normal, flagged with it).

A guard starts from a random sample of held-out units. With ``strict``, every candidate the loop would accept
is first checked against *all* held-out units; the ones it pushed over the threshold join the guard and the
update continues (constraint generation: the guard grows only where the update actually did harm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lifelong.models.base import Detector, distinct_units


def _rows(units: tuple[torch.Tensor, ...], idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(u[idx] for u in units)


@dataclass
class NoHarmGuard:
    """Guarded units with their loss under the serving model.

    Attributes:
        units: the guarded units.
        before: per unit, the loss it may not exceed (its serving loss, floored at ``floor * tau'``).
        normal: per unit, whether the serving model decided it normal (what a strict guard keeps so).
        weight: weight of the soft term.
        tau: the decision threshold tau'.
        strict: whether convergence waits for every normal guarded unit to be normal again.
        pool: with ``strict``, all held-out units and their serving losses, checked before acceptance.
    """

    units: tuple[torch.Tensor, ...]
    before: torch.Tensor
    normal: torch.Tensor
    weight: float
    tau: float
    floor: float
    strict: bool
    pool: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None

    @classmethod
    def sample(
        cls,
        det: Detector,
        heldout: tuple[torch.Tensor, ...],
        n: int,
        rng: np.random.Generator,
        *,
        weight: float,
        floor: float,
        strict: bool,
    ) -> NoHarmGuard:
        """Guard ``n`` held-out units drawn at random (all of them when there are fewer)."""
        tau = det.loss_threshold
        total = int(heldout[0].shape[0])
        pool = None
        with torch.no_grad():
            if strict:  # every distinct held-out unit with its serving loss, for the acceptance check
                distinct = distinct_units(heldout)
                pool = (distinct, det.unit_losses(distinct).detach())
            if total > n:
                idx = torch.as_tensor(np.sort(rng.choice(total, size=n, replace=False)), device=heldout[0].device)
                units = _rows(heldout, idx)
            else:
                units = heldout
            start = det.unit_losses(units).detach()
        return cls(units, start.clamp(min=floor * tau), start <= tau, weight, tau, floor, strict, pool)

    @property
    def size(self) -> int:
        return int(self.units[0].shape[0])

    def penalty(self, losses: torch.Tensor) -> torch.Tensor:
        """The soft term for the guarded units' current ``losses``."""
        return self.weight * torch.relu(losses - self.before).mean()

    def crossed(self, losses: torch.Tensor) -> int:
        """How many guarded units the serving model decided normal are now abnormal (0 unless strict)."""
        if not self.strict:
            return 0
        with torch.no_grad():
            return int(((losses > self.tau) & self.normal).sum())

    def grow(self, det: Detector) -> int:
        """Strict only: add every held-out unit ``det`` newly decides abnormal to the guard; return how many."""
        if self.pool is None:
            return 0
        units, start = self.pool
        with torch.no_grad():
            harmed = torch.nonzero((det.unit_losses(units) > self.tau) & (start <= self.tau)).flatten()
        if harmed.numel() == 0:
            return 0
        self.units = tuple(torch.cat([g, u[harmed]]) for g, u in zip(self.units, units, strict=True))
        self.before = torch.cat([self.before, start[harmed].clamp(min=self.floor * self.tau)])
        self.normal = torch.cat([self.normal, torch.ones_like(harmed, dtype=torch.bool)])
        return int(harmed.numel())
