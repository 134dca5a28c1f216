"""Autoencoder over feature vectors: reconstruction error L(x) = mean((x - dec(enc(x)))^2) (Eq. 7).

Numeric columns are standardised with statistics of the training normals; non-numeric columns are one-hot
encoded with the vocabulary fixed at training, plus an "other" bucket for values never seen then. Both are
saved with the model. The threshold tau is a quantile of the held-out normal errors, or set explicitly.

Defined behaviour on bad input: a row with NaN or infinite numeric features cannot be reconstructed; it scores
+inf and is decided abnormal (the pipeline's validation quarantines such batches before they get here). A frame
without one of the training columns, or an array of the wrong width, raises ``DatasetFormatError``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from lifelong.errors import DatasetFormatError
from lifelong.models.base import Detector, pick_device

log = logging.getLogger(__name__)
OTHER = "__other__"


@dataclass
class AEConfig:
    """Hyper-parameters and the fitted feature encoding of the autoencoder."""

    hidden: list[int] = field(default_factory=lambda: [32, 16])
    latent: int | None = None  # default: half the encoded width, at least 1
    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    quantile: float = 0.99
    tau: float | None = None
    seed: int = 0
    # Fitted encoding.
    numeric: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(v) + 1 for v in self.categorical.values())


class AutoencoderNet(nn.Module):
    """Symmetric MLP autoencoder: width -> hidden... -> latent -> ...hidden -> width."""

    def __init__(self, width: int, hidden: list[int], latent: int) -> None:
        super().__init__()
        dims = [width, *hidden, latent]
        enc: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            enc += [nn.Linear(a, b), nn.Tanh()]
        rdims = dims[::-1]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(rdims[:-1], rdims[1:], strict=True)):
            dec.append(nn.Linear(a, b))
            if i < len(rdims) - 2:
                dec.append(nn.Tanh())
        self.encoder = nn.Sequential(*enc[:-1])  # linear bottleneck
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (B, F)


class AutoencoderDetector(Detector):
    """Zero-positive autoencoder detector for feature rows (a DataFrame, or an (N, F) array)."""

    # Measured on banknote and synthetic-vec (README): reconstruction errors of nearby normals move with an
    # anomaly pushed to 2*tau, so push FNs only to 1.2*tau and guard held-out normals, strongly (weight 100
    # over up to 512 rows: the guard's weight, not its size, is what keeps normal rows under tau); relearn
    # FPs to half the threshold and rehearse past mistakes, so a new normal mode is learnt from all its
    # reported rows rather than one at a time; small Adam steps (SGD at 1e-2, or Adam at 1e-3, dragged normal
    # rows over the threshold), hence up to 2,000 of them.
    unlearn_defaults: ClassVar[dict[str, Any]] = {
        "bnd_factor": 1.2,
        "fp_margin": 0.5,
        "guard_units": 512,
        "guard_weight": 100.0,
        "rehearse_units": 256,
        "rehearse_weight": 10.0,
        "optimizer": "adam",
        "lr": 3e-4,
        "max_steps": 2000,
    }

    kind = "autoencoder"

    def __init__(self, config: AEConfig | None = None, device: str | None = None, **overrides: Any) -> None:
        self.config = config or AEConfig(**overrides)
        self._device = pick_device(device)
        self.tau_: float = self.config.tau if self.config.tau is not None else math.inf
        self._build()

    def _build(self) -> None:
        width = max(1, self.config.width)
        latent = self.config.latent or max(1, width // 2)
        torch.manual_seed(self.config.seed)
        self.module_ = AutoencoderNet(width, list(self.config.hidden), latent).to(self._device)

    # --- feature encoding ---------------------------------------------------------------------------
    def _as_frame(self, samples: Any) -> pd.DataFrame:
        if isinstance(samples, pd.DataFrame):
            frame = samples
        elif isinstance(samples, list) and samples and isinstance(samples[0], dict):
            frame = pd.DataFrame(samples)
        else:
            arr = np.asarray(samples, dtype=object)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, len(self.config.columns))
            if arr.shape[1] != len(self.config.columns):
                raise DatasetFormatError(
                    f"expected {len(self.config.columns)} feature columns {self.config.columns}, "
                    f"got rows of {arr.shape[1]} values"
                )
            frame = pd.DataFrame(arr, columns=self.config.columns)
        missing = [c for c in self.config.columns if c not in frame.columns]
        if missing:
            raise DatasetFormatError(
                f"feature columns missing: {missing}; the model was trained on {self.config.columns}"
            )
        return frame

    def _fit_encoding(self, frame: pd.DataFrame) -> None:
        cfg = self.config
        cfg.columns = [str(c) for c in frame.columns]
        numeric = [
            c
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        ]
        cfg.numeric = [str(c) for c in numeric]
        values = frame[numeric].to_numpy(dtype=np.float64)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        cfg.mean = mean.tolist()
        cfg.std = np.where(std > 1e-12, std, 1.0).tolist()
        cfg.categorical = {
            str(c): sorted(str(v) for v in frame[c].dropna().unique()) for c in frame.columns if c not in numeric
        }

    def encode(self, samples: Any) -> np.ndarray:
        """(N, width) float32 matrix: standardised numerics then one-hot categoricals (+ "other")."""
        frame = self._as_frame(samples)
        cfg = self.config
        num = pd.DataFrame(frame[cfg.numeric]).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        parts = [(num - np.asarray(cfg.mean)) / np.asarray(cfg.std)]
        for col, vocab in cfg.categorical.items():
            lookup = {v: i for i, v in enumerate(vocab)}
            # int64 explicitly: mapping an empty column yields an object array, which cannot index.
            idx = frame[col].astype(str).map(lambda v, lk=lookup, n=len(vocab): lk.get(v, n)).to_numpy(dtype=np.int64)
            onehot = np.zeros((len(frame), len(vocab) + 1))
            onehot[np.arange(len(frame)), idx] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)

    # --- training -----------------------------------------------------------------------------------
    def fit(self, samples: Any, *, validation: Any | None = None) -> AutoencoderDetector:
        """Fit the encoding and the network on normal rows; tau from validation (or training) errors."""
        if isinstance(samples, pd.DataFrame):
            frame = samples
        elif isinstance(samples, list) and samples and isinstance(samples[0], dict):
            frame = pd.DataFrame(samples)
        else:
            # An unnamed (N, F) array: nothing is fitted yet to check its width against, so its columns are
            # named by position (x0, x1, ...) and later arrays must have the same width.
            arr = np.asarray(samples)
            if arr.size == 0:
                raise ValueError("cannot fit on an empty set of rows")
            if arr.ndim != 2:
                raise DatasetFormatError(f"expected an (N, F) array of feature rows, got shape {arr.shape}")
            frame = pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])
        if len(frame) == 0:
            raise ValueError("cannot fit on an empty set of rows")
        self._fit_encoding(frame)
        self._build()
        x = self.encode(frame)
        x = x[np.isfinite(x).all(axis=1)]
        xt = torch.as_tensor(x, device=self.device)
        gen = torch.Generator().manual_seed(self.config.seed)
        opt = torch.optim.Adam(self.module_.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.module_.train()
        for _ in range(self.config.epochs):
            perm = torch.randperm(len(xt), generator=gen).to(self.device)
            for i in range(0, len(xt), self.config.batch_size):
                batch = xt[perm[i : i + self.config.batch_size]]
                loss = ((self.module_(batch) - batch) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.module_.eval()
        if self.config.tau is None:
            ref = validation if validation is not None and len(validation) else frame
            self.set_threshold_from(ref)
        return self

    def set_threshold_from(self, normal: Any, quantile: float | None = None) -> float:
        """tau = the given quantile of the reconstruction errors of held-out normal rows."""
        errs = self.sample_scores(normal)
        errs = errs[np.isfinite(errs)]
        self.tau_ = float(np.quantile(errs, quantile or self.config.quantile))
        self.config.tau = self.tau_
        return self.tau_

    # --- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_scores(self, samples: Any) -> np.ndarray:
        x = self.encode(samples)
        finite = np.isfinite(x).all(axis=1)
        out = np.full(len(x), np.inf)
        if finite.any():
            self.module_.eval()
            xt = torch.as_tensor(x[finite], device=self.device)
            out[finite] = ((self.module_(xt) - xt) ** 2).mean(dim=1).double().cpu().numpy()
        return out

    def decide(self, samples: Any) -> np.ndarray:
        return self.sample_scores(samples) > self.loss_threshold

    @property
    def loss_threshold(self) -> float:
        return float(self.tau_)

    # --- unlearning hooks ---------------------------------------------------------------------------
    def units(self, samples: Any) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
        x = self.encode(samples)
        keep = np.flatnonzero(np.isfinite(x).all(axis=1))  # rows that cannot be reconstructed teach nothing
        return (torch.as_tensor(x[keep], device=self.device),), keep

    def unit_losses(self, unit_tensors: tuple[torch.Tensor, ...], forward: Any | None = None) -> torch.Tensor:
        (x,) = unit_tensors
        return (((forward or self.module_)(x) - x) ** 2).mean(dim=1)

    # --- persistence --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["tau"] = None if not math.isfinite(self.tau_) else self.tau_
        return {"kind": self.kind, **cfg}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AutoencoderDetector:
        cfg = {k: v for k, v in config.items() if k != "kind"}
        return cls(AEConfig(**cfg))
