"""The detector interface shared by the LSTM (event sequences) and the autoencoder (feature vectors).

A detector is fitted on normal data only (zero-positive). It exposes:

* ``sample_scores(samples)``: one anomaly score per sample, higher is more anomalous. For both detectors the
  score is a loss in nats / squared error, comparable with ``loss_threshold`` (tau' of the paper).
* ``decide(samples)``: True where a sample is abnormal.
* the hooks the unlearning loop needs: ``units`` (the trainable pieces of a sample: windows or rows) and
  ``unit_losses`` (differentiable per-unit loss L(x)).
* ``to_artifacts`` / ``from_artifacts``: safetensors weights plus a JSON-able config (never pickle).

A *sample* is a list of int event keys (LSTM) or a 1-D sequence of feature values / a dict of column -> value
(autoencoder). Batches of samples are plain Python sequences or, for vectors, a pandas DataFrame.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when torch sees it (or the requested device), CPU otherwise."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Detector(ABC):
    """Abstract zero-positive detector; fitted attributes end in ``_``."""

    kind: ClassVar[str]
    module_: torch.nn.Module
    # Unlearning options this kind of model measured best where they differ from ``UnlearnConfig``'s
    # defaults (see the README's unlearning tables); explicit options still win.
    unlearn_defaults: ClassVar[dict[str, Any]] = {}

    # --- fitting and scoring -------------------------------------------------------------------------
    @abstractmethod
    def fit(self, samples: Any, *, validation: Any | None = None) -> Detector:
        """Train on normal samples; ``validation`` normals may set the threshold."""

    @abstractmethod
    def sample_scores(self, samples: Any) -> np.ndarray:
        """Anomaly score per sample, shape (N,); abnormal when above ``loss_threshold``."""

    @abstractmethod
    def decide(self, samples: Any) -> np.ndarray:
        """Boolean array (N,), True where the sample is abnormal."""

    @property
    @abstractmethod
    def loss_threshold(self) -> float:
        """tau': the per-unit loss above which a unit (window or row) is abnormal."""

    # --- unlearning hooks ----------------------------------------------------------------------------
    @abstractmethod
    def units(self, samples: Any) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
        """Tensors of the trainable units of ``samples`` and, per unit, the index of its sample."""

    @abstractmethod
    def unit_losses(self, unit_tensors: tuple[torch.Tensor, ...], forward: Any | None = None) -> torch.Tensor:
        """Differentiable loss L(x) per unit, shape (U,).

        ``forward`` replaces ``self.module_`` for this call (``torch.func.functional_call`` for per-unit
        gradients); by default the module itself is used.
        """

    # --- persistence ---------------------------------------------------------------------------------
    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-able config: hyper-parameters, vocabulary / scaler, thresholds, kind."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> Detector:
        """An unfitted-weights detector built from a config written by ``get_config``."""

    def to_artifacts(self) -> tuple[bytes, dict[str, Any]]:
        """(safetensors bytes, config dict) for the registry."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        return st_save(state), self.get_config()

    @staticmethod
    def from_artifacts(weights: bytes, config: dict[str, Any], device: str | None = None) -> Detector:
        """Rebuild any detector from registry artifacts (dispatches on ``config['kind']``)."""
        from lifelong.models import detector_class

        det = detector_class(config["kind"]).from_config(config)
        det.module_.load_state_dict(st_load(weights))
        det.to(pick_device(device))
        return det

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights, config = self.to_artifacts()
        (folder / WEIGHTS_FILE).write_bytes(weights)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        return folder

    @staticmethod
    def load(folder: str | Path, device: str | None = None) -> Detector:
        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        return Detector.from_artifacts((folder / WEIGHTS_FILE).read_bytes(), config, device)

    # --- helpers -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.module_.parameters()).device

    def to(self, device: torch.device | str) -> Detector:
        self.module_.to(device)
        return self

    def clone(self) -> Detector:
        """A deep copy through the artifact path (the same bytes the registry would store)."""
        weights, config = self.to_artifacts()
        return Detector.from_artifacts(weights, json.loads(json.dumps(config)), str(self.device))

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.module_.parameters())


def as_list(samples: Sequence[Any] | Any) -> list[Any]:
    return list(samples)


def take(samples: Any, idx: Sequence[int] | Any) -> Any:
    """Select samples by position from a list of sessions or a DataFrame of rows."""
    if hasattr(samples, "iloc"):
        return samples.iloc[np.asarray(idx, dtype=int)]
    seq = samples if isinstance(samples, list) else list(samples)
    return [seq[int(i)] for i in idx]


def unit_keys(units: tuple[torch.Tensor, ...]) -> list[bytes]:
    """One key per unit, its exact contents: equal keys are inputs a model cannot tell apart."""
    cols = [np.ascontiguousarray(u.detach().cpu().numpy().reshape(u.shape[0], -1)) for u in units]
    rows = np.ascontiguousarray(np.hstack([c.view(np.uint8).reshape(c.shape[0], -1) for c in cols]))
    return [row.tobytes() for row in rows]


def distinct_units(units: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``units`` without repeats (first occurrence kept, order preserved)."""
    first: dict[bytes, int] = {}
    for i, key in enumerate(unit_keys(units)):
        first.setdefault(key, i)
    if len(first) == units[0].shape[0]:
        return units
    idx = torch.as_tensor(list(first.values()), device=units[0].device)
    return tuple(u[idx] for u in units)
