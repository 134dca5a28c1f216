"""Datasets: sequence and vector loaders, named presets, and seeded synthetic workloads and telemetry."""

from __future__ import annotations

from lifelong.data.presets import PRESETS, SEQUENCE_PRESETS, VECTOR_PRESETS, load_preset, shared_data_root
from lifelong.data.sequences import SequenceDataset, load_sequence_folder, read_sequence_file
from lifelong.data.synthetic import (
    SEQUENCE_ANOMALY_KINDS,
    VECTOR_ANOMALY_KINDS,
    generate_event_telemetry,
    generate_vector_telemetry,
    synthetic_sequences,
    synthetic_vectors,
)
from lifelong.data.vectors import VectorDataset, load_vector_csv

__all__ = [
    "PRESETS",
    "SEQUENCE_ANOMALY_KINDS",
    "SEQUENCE_PRESETS",
    "VECTOR_ANOMALY_KINDS",
    "VECTOR_PRESETS",
    "SequenceDataset",
    "VectorDataset",
    "generate_event_telemetry",
    "generate_vector_telemetry",
    "load_preset",
    "load_sequence_folder",
    "load_vector_csv",
    "read_sequence_file",
    "shared_data_root",
    "synthetic_sequences",
    "synthetic_vectors",
]
