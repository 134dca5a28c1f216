"""Deployment settings: one object, env prefix ``LIFELONG_``, an embedded default for every field.

Precedence (highest first): a CLI option or an Airflow DAG Param for one run, then environment variables
(``LIFELONG_*``, and the standard ``AWS_*`` variables for S3 endpoints and credentials), then these defaults.
Build it with :func:`get_settings` inside tasks and commands, never at import time, so DAG parsing needs no
environment, database or connection.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

StreamKind = Literal["events", "vectors"]


class Settings(BaseSettings):
    """Where the stores live, what the pipeline watches, and the promotion gate's thresholds."""

    model_config = SettingsConfigDict(env_prefix="LIFELONG_", extra="ignore")

    home: Path = Field(Path("var"), description="Root folder of the embedded defaults (lake, labels.db, registry).")
    lake_url: str | None = Field(
        None, description="Telemetry lake root: a local folder or s3://bucket/prefix. Default: HOME/lake."
    )
    labels_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the label store, e.g. postgresql+psycopg://user@host/db. "
        "Default: sqlite:///HOME/labels.db.",
    )
    registry_url: str | None = Field(
        None, description="Model registry root: a local folder or s3://bucket/prefix. Default: HOME/registry."
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 API endpoint (MinIO, moto, ...). Default: the standard AWS_ENDPOINT_URL, then AWS itself.",
    )

    stream: str = Field("events", description="Name of the telemetry stream the DAGs score (a lake partition).")
    stream_kind: StreamKind = Field(
        "events", description="'events' (key sequences, LSTM) or 'vectors' (feature rows, autoencoder)."
    )
    model_name: str | None = Field(None, description="Registry name of the model. Default: the stream name.")

    scoring_schedule: str = Field("0 * * * *", description="Cron of the telemetry_scoring DAG (hourly).")
    unlearning_schedule: str = Field("0 2 * * *", description="Cron of the lifelong_unlearning DAG (02:00).")
    min_errors: int = Field(5, ge=1, description="Pending labels needed before a scheduled unlearning run works.")

    # Unlearning budget (per run).
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Most optimiser steps of one bounded update (per chunk); default: the detector kind's "
        "measured budget (LSTM 300, autoencoder 2000, whose small guarded steps need more of them).",
    )
    max_seconds: float = Field(300.0, gt=0, description="Most seconds one unlearning run may take.")
    max_samples: int = Field(2000, ge=1, description="Most labelled samples one unlearning run may use.")
    unlearn_chunk: int = Field(
        10, ge=1, description="Labels per bounded update inside one run (updates chain, as the paper's per report)."
    )

    # The promotion gate (design.md). Fail closed: a missing threshold is an error, never a pass.
    gate_fp_tolerance: float = Field(
        0.01, ge=0, description="Held-out normal FP rate may exceed production's by at most this much."
    )
    gate_min_fix_rate: float = Field(
        0.8, ge=0, le=1, description="Share of the new labelled mistakes the candidate must decide correctly."
    )
    gate_max_regressions: int = Field(
        0, ge=0, description="Past labelled mistakes production gets right that the candidate may get wrong."
    )

    # Validation of telemetry batches (Great Expectations).
    min_rows: int = Field(1, ge=0, description="Fewest rows a telemetry batch may have.")
    max_rows: int = Field(5_000_000, ge=1, description="Most rows a telemetry batch may have.")
    feature_min: float = Field(-1e9, description="Lowest value a feature may take.")
    feature_max: float = Field(1e9, description="Highest value a feature may take.")
    unknown_key_surge: float = Field(
        0.05, ge=0, le=1, description="Share of never-seen event keys in a batch that is reported as a surge."
    )
    chunk_rows: int = Field(200_000, ge=1000, description="Rows read per chunk when streaming a telemetry file.")

    seed: int = Field(0, description="Seed for everything that must be reproducible.")
    device: str | None = Field(None, description="torch device; default CUDA when torch sees it, else CPU.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads torch may use per task (default: torch's own choice). Set 1 when several tasks "
        "share a small machine: oversubscribed OpenMP threads make training many times slower.",
    )

    @field_validator("scoring_schedule", "unlearning_schedule")
    @classmethod
    def _cron_has_five_fields(cls, value: str) -> str:
        if not value.startswith("@") and len(value.split()) != 5:
            raise ValueError(f"cron {value!r} must have 5 fields (minute hour day month weekday) or be @hourly etc.")
        return value

    # Resolved locations -------------------------------------------------------------------------------
    @property
    def resolved_lake_url(self) -> str:
        return self.lake_url or str((self.home / "lake").resolve())

    @property
    def resolved_labels_url(self) -> str:
        return self.labels_url or f"sqlite:///{(self.home / 'labels.db').resolve()}"

    @property
    def resolved_registry_url(self) -> str:
        return self.registry_url or str((self.home / "registry").resolve())

    @property
    def resolved_model_name(self) -> str:
        return self.model_name or self.stream


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def apply_torch_threads(settings: Settings) -> None:
    """Cap torch's CPU threads at ``settings.torch_threads`` (no-op when unset); every entry point that trains
    or scores calls this, so a benchmark and a DAG task run under the same setting."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
