"""Bounded unlearning with a Fisher-weighted forgetting penalty (Du et al., CCS 2019, Eq. 17 + 19)."""

from lifelong.unlearning.ewc import ForgettingPenalty, fisher_diagonal
from lifelong.unlearning.loss import FN_LABEL, FP_LABEL, bounded_unlearning_loss
from lifelong.unlearning.update import UnlearnConfig, UnlearnResult, config_for, unlearn

__all__ = [
    "FN_LABEL",
    "FP_LABEL",
    "ForgettingPenalty",
    "UnlearnConfig",
    "UnlearnResult",
    "bounded_unlearning_loss",
    "config_for",
    "fisher_diagonal",
    "unlearn",
]
