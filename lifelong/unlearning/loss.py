"""The paper's bounded unlearning loss (Eq. 16/17)."""

from __future__ import annotations

import torch

FN_LABEL = 1.0  # an anomaly the model missed: push its loss up, but only to the bound
FP_LABEL = -1.0  # normal data the model flagged: ordinary training on it ("relearning")


def bounded_unlearning_loss(losses: torch.Tensor, labels: torch.Tensor, bound: float) -> torch.Tensor:
    """sum_t ReLU(BND - l_t * L(x_t)).

    Args:
        losses: per-unit loss L(x_t), shape (U,).
        labels: l_t per unit, +1 for a false negative, -1 for a false positive, shape (U,).
        bound: BND; an FN unit whose loss reached it contributes exactly 0 and no gradient.

    Returns:
        The scalar loss.
    """
    if losses.shape != labels.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and labels {tuple(labels.shape)} differ in shape")
    return torch.relu(bound - labels * losses).sum()
