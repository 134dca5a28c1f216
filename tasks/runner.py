"""Glue the DAG files share: parse-time settings, default args, and running a step with Airflow-agnostic error mapping.

Kept free of heavy imports (torch, pandas, GX load inside the steps), so DAG parsing stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any


def env(name: str, default: str) -> str:
    """A deployment setting needed at parse time (schedules); everything else is read inside tasks."""
    return os.environ.get(name, default)


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": "ml-ops",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
    }
    args.update(overrides)
    return args


def run_step(step: Callable[..., dict], *, fail_fast: type[Exception], **kwargs: Any) -> dict:
    """Call a ``tasks/`` step with the process settings.

    Bad data, bad config, a refused label or a missing model will not be fixed by a retry, so they are
    re-raised as ``fail_fast`` (the DAG passes ``AirflowFailException``: fail at once, no retry); store and
    network faults raise as they are and are retried. This module never imports Airflow itself.
    """
    from lifelong.errors import ConfigError, DataValidationError, LabelError, NotFoundError
    from lifelong.settings import apply_torch_threads, get_settings

    settings = get_settings()
    apply_torch_threads(settings)
    try:
        return step(settings=settings, **kwargs)
    except (DataValidationError, ConfigError, LabelError, NotFoundError) as exc:
        raise fail_fast(str(exc)) from exc


def actor_of(context: dict[str, Any]) -> str:
    """Who or what triggered the run, for the audit record."""
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    run_type = getattr(dag_run, "run_type", None)
    run_type = getattr(run_type, "value", run_type)
    return f"{user or 'airflow'} ({run_type or 'unknown'} run)"
