"""Zero-positive detectors: a DeepLog-style LSTM for event sequences and an autoencoder for feature vectors."""

from __future__ import annotations

from lifelong.models.base import Detector, pick_device


def detector_class(kind: str) -> type[Detector]:
    """The detector class for a config's ``kind`` ('lstm' or 'autoencoder')."""
    if kind == "lstm":
        from lifelong.models.lstm import DeepLogDetector

        return DeepLogDetector
    if kind == "autoencoder":
        from lifelong.models.autoencoder import AutoencoderDetector

        return AutoencoderDetector
    raise ValueError(f"unknown detector kind {kind!r}; expected 'lstm' or 'autoencoder'")


__all__ = ["Detector", "detector_class", "pick_device"]
