"""Fisher-weighted regulariser against catastrophic forgetting (Eq. 19/20), and its plain-L2 ablation (Eq. 18).

w_i = (1/|M|) * sum_{x in M} (dL(x)/d theta_i)^2 is the diagonal empirical Fisher over the memory set M; the
penalty (lambda/2) * sum_i w_i (theta_i - theta*_i)^2 anchors each parameter in proportion to how much the
memory set's loss depends on it. ``mode="l2"`` sets every w_i = 1; ``mode="none"`` disables the penalty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from lifelong.unlearning.flat import FlatParameters

log = logging.getLogger(__name__)

RegularizerMode = Literal["fisher", "l2", "none"]
UnitLossFn = Callable[[tuple[torch.Tensor, ...], Any], torch.Tensor]


def fisher_diagonal(
    model: nn.Module, unit_losses: UnitLossFn, units: tuple[torch.Tensor, ...], *, chunk: int = 128
) -> dict[str, torch.Tensor]:
    """Mean squared per-unit gradient of L(x) for every trainable parameter of ``model``.

    Per-unit gradients come from ``torch.func`` (vmap over grad of a functional call), a few batched
    passes instead of one backward pass per unit. A parameter no memory unit's loss depends on gets 0.

    Args:
        model: the module whose parameters are weighted.
        unit_losses: ``(units, forward) -> (U,)`` losses, calling ``forward`` in place of ``model``.
        units: the memory set's unit tensors, leading dim U.
        chunk: units per vmapped batch.

    Returns:
        Parameter name -> Fisher diagonal, same shape as the parameter.
    """
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n_units = int(units[0].shape[0]) if units else 0
    if n_units == 0:
        model.train(was_training)
        return fisher

    # A module whose forward has a vmap-friendly path says so (the LSTM: its fused kernel has no batching rule).
    forward_kwargs = getattr(model, "VMAP_FORWARD_KWARGS", {})

    def loss_of_one(p: dict[str, torch.Tensor], *unit: torch.Tensor) -> torch.Tensor:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (p, buffers), (x,), forward_kwargs)

        return unit_losses(tuple(u.unsqueeze(0) for u in unit), forward).sum()

    per_unit_grad = vmap(grad(loss_of_one), in_dims=(None, *([0] * len(units))))
    for i in range(0, n_units, chunk):
        grads = per_unit_grad(params, *(u[i : i + chunk] for u in units))
        for name, g in grads.items():
            fisher[name] += (g.detach() ** 2).sum(0)
    for name in fisher:
        fisher[name] /= n_units
    model.train(was_training)
    return fisher


class ForgettingPenalty:
    """(lambda/2) * sum_i w_i (theta_i - theta*_i)^2 with theta* = the parameters before this update.

    Args:
        model: the module being updated; its current parameters become the anchor theta*.
        lam: lambda >= 0.
        mode: 'fisher' (Eq. 19, weights from ``fisher``), 'l2' (Eq. 18, all weights 1) or 'none'.
        fisher: the Fisher diagonal, required for mode 'fisher'.
    """

    def __init__(
        self,
        model: nn.Module,
        lam: float,
        mode: RegularizerMode = "fisher",
        fisher: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        if mode not in ("fisher", "l2", "none"):
            raise ValueError(f"mode must be 'fisher', 'l2' or 'none', got {mode!r}")
        if mode == "fisher" and fisher is None:
            raise ValueError("mode 'fisher' needs the Fisher diagonal")
        self.lam, self.mode = lam, mode
        with torch.no_grad():
            self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            if mode == "fisher":
                assert fisher is not None
                self.weights = {n: fisher[n].detach().clone() for n in self.anchor if n in fisher}
            else:
                self.weights = {n: torch.ones_like(a) for n, a in self.anchor.items()}
        self._flat: tuple[FlatParameters, torch.Tensor, torch.Tensor] | None = None

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The penalty at the model's current parameters (differentiable)."""
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        if self.mode == "none" or self.lam == 0:
            return total
        for name, p in model.named_parameters():
            if name not in self.weights:  # no anchor: nothing to hold it to
                continue
            total = total + (self.weights[name] * (p - self.anchor[name]) ** 2).sum()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def value(self, flat: FlatParameters, *, add_gradient: bool = False) -> float:
        """The penalty's value at the parameters behind ``flat``; with ``add_gradient`` also add its exact
        gradient lam * w * (theta - theta*) to ``flat.param.grad``.

        The unlearning loop uses this instead of differentiating :meth:`penalty`: the quadratic's gradient is
        known in closed form, so it stays out of the autograd graph, and on the flat buffer it is three
        tensor operations per step whatever the number of parameter tensors.
        """
        if self.mode == "none" or self.lam == 0:
            return 0.0
        if self._flat is None or self._flat[0] is not flat:  # laid out once per update
            self._flat = (flat, flat.flatten(self.anchor), flat.flatten(self.weights, missing=0.0))
        _, anchor, weights = self._flat
        diff = flat.param.detach() - anchor
        weighted = weights * diff
        if add_gradient:
            flat.param.grad.add_(weighted, alpha=self.lam)
        return 0.5 * self.lam * float(weighted.dot(diff))

    @torch.no_grad()
    def proximal_step(self, model: nn.Module, lr: float) -> None:
        """Apply the penalty as an exact proximal step after a plain gradient step of size ``lr``.

        argmin_p (lambda/2) w (p - anchor)^2 + (p - p_sgd)^2 / (2 lr)
        = (p_sgd + lr lambda w anchor) / (1 + lr lambda w).
        Stable for any lambda and learning rate, unlike adding the penalty's gradient explicitly (SGD on a
        quadratic of curvature lambda*w diverges once lr*lambda*w > 2, which is what paper-sized lambdas do).
        """
        if self.mode == "none" or self.lam == 0:
            return
        for name, p in model.named_parameters():
            if name not in self.weights:
                continue
            k = lr * self.lam * self.weights[name]
            p.copy_((p + k * self.anchor[name]) / (1 + k))
