"""
### lifelong_unlearning

Nightly (``LIFELONG_UNLEARNING_SCHEDULE``, 02:00) and by hand after an incident review. **pull_labels**
claims the pending analyst labels (short-circuits when fewer than `min_errors` are pending), **unlearn**
corrects the production model with only those labels (bounded loss + Fisher-weighted penalty, under a
budget, in the `lifelong_unlearning` pool on the `unlearning` queue), **evaluate** gates the candidate
(held-out normals, the new labels, all past labels), **promote** moves the production pointer by
compare-and-swap, or rejects. Every decision is audited; `dry_run` evaluates and never promotes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from lifelong.constants import ASSET_MODEL, DAG_UNLEARNING, POOL_UNLEARNING, QUEUE_UNLEARNING
from tasks.runner import actor_of, default_args, env
from tasks.runner import run_step as _run_step

MODEL = Asset(ASSET_MODEL)


def _opt(kind: str) -> list[str]:
    return ["null", kind]


PARAMS = {
    "min_errors": Param(
        None,
        type=_opt("integer"),
        minimum=1,
        title="Minimum pending labels",
        description="Run only when at least this many labels are pending (default: LIFELONG_MIN_ERRORS).",
    ),
    "force": Param(False, type="boolean", title="Force", description="Run even with fewer pending labels."),
    "dry_run": Param(
        False,
        type="boolean",
        title="Dry run",
        description="Train and evaluate the candidate, audit the verdict, never promote.",
    ),
    "max_steps": Param(
        None,
        type=_opt("integer"),
        minimum=1,
        maximum=100000,
        title="Max steps",
        description="Budget: optimiser steps (default: LIFELONG_MAX_STEPS).",
    ),
    "max_seconds": Param(
        None,
        type=_opt("number"),
        exclusiveMinimum=0,
        title="Max seconds",
        description="Budget: wall-clock seconds (default: LIFELONG_MAX_SECONDS).",
    ),
    "incident": Param(
        None,
        type=_opt("string"),
        maxLength=200,
        title="Incident",
        description="Use only labels tagged with this incident.",
    ),
    "reason": Param(
        "",
        type="string",
        maxLength=500,
        title="Reason",
        description="Why this run was triggered; kept in the audit record.",
    ),
    "lam": Param(
        None,
        type=_opt("number"),
        minimum=0,
        title="Lambda",
        description="Override the forgetting penalty's lambda (expert use).",
    ),
    "lr": Param(
        None,
        type=_opt("number"),
        exclusiveMinimum=0,
        title="Learning rate",
        description="Override the unlearning learning rate (expert use).",
    ),
    "guard_units": Param(
        None,
        type=_opt("integer"),
        minimum=0,
        title="Guarded held-out units",
        description="Override how many held-out normal units each update guards against harm; 0 turns the "
        "no-harm guard off (expert use).",
    ),
    "fp_tolerance": Param(
        None,
        type=_opt("number"),
        minimum=0,
        maximum=1,
        title="Gate: FP tolerance",
        description="Override LIFELONG_GATE_FP_TOLERANCE for this run.",
    ),
    "min_fix_rate": Param(
        None,
        type=_opt("number"),
        minimum=0,
        maximum=1,
        title="Gate: minimum fix rate",
        description="Override LIFELONG_GATE_MIN_FIX_RATE for this run.",
    ),
    "max_regressions": Param(
        None,
        type=_opt("integer"),
        minimum=0,
        title="Gate: maximum regressions",
        description="Override LIFELONG_GATE_MAX_REGRESSIONS for this run.",
    ),
}


def run_step(step, **kwargs):
    return _run_step(step, fail_fast=AirflowFailException, **kwargs)


@dag(
    dag_id=DAG_UNLEARNING,
    schedule=env("LIFELONG_UNLEARNING_SCHEDULE", "0 2 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args=default_args(retries=1),
    tags=["lifelong", "unlearning"],
    doc_md=__doc__,
)
def lifelong_unlearning():
    @task.short_circuit
    def pull_labels(params=None, run_id=None):
        from tasks.pull_labels import pull_labels as step

        summary = run_step(
            step,
            run_id=run_id,
            min_errors=params["min_errors"],
            force=params["force"],
            incident=params["incident"],
        )
        return summary if summary["enough"] else False

    @task(pool=POOL_UNLEARNING, queue=QUEUE_UNLEARNING, execution_timeout=timedelta(hours=2))
    def unlearn(pulled: dict, params=None, run_id=None) -> dict:
        from tasks.unlearn import run_unlearning

        return run_step(
            run_unlearning,
            run_id=run_id,
            max_steps=params["max_steps"],
            max_seconds=params["max_seconds"],
            lam=params["lam"],
            lr=params["lr"],
            guard_units=params["guard_units"],
        )

    @task
    def evaluate(unlearned: dict, params=None, run_id=None) -> dict:
        from tasks.evaluate import evaluate_candidate

        return run_step(
            evaluate_candidate,
            run_id=run_id,
            fp_tolerance=params["fp_tolerance"],
            min_fix_rate=params["min_fix_rate"],
            max_regressions=params["max_regressions"],
        )

    @task(outlets=[MODEL])
    def promote(evaluated: dict, params=None, run_id=None, outlet_events=None) -> dict:
        from tasks.promote import promote_or_reject

        out = run_step(
            promote_or_reject,
            run_id=run_id,
            dry_run=params["dry_run"],
            actor=actor_of(get_current_context()),
            reason=params["reason"],
            params=dict(params),
        )
        outlet_events[MODEL].extra = {"decision": out["decision"], "version": out["version"]}
        return out

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=3)
    def release_on_failure(run_id=None) -> int:
        from tasks.promote import release_claimed

        return run_step(release_claimed, run_id=run_id, reason="the unlearning run failed")

    pulled = pull_labels()
    unlearned = unlearn(pulled)
    evaluated = evaluate(unlearned)
    promoted = promote(evaluated)
    [unlearned, evaluated, promoted] >> release_on_failure()


lifelong_unlearning()
