"""
### bootstrap_model

By hand, once: train the first zero-positive model on normal data (an interval of the lake the operator
vouches for, the synthetic generator, or a dataset preset), keep a held-out normal split beside it in the
registry, gate it (finite parameters, held-out FP rate), and promote it as the first production version.
Refuses to replace an existing production model unless `force` is set.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from lifelong.constants import ASSET_MODEL, DAG_BOOTSTRAP, POOL_UNLEARNING, QUEUE_UNLEARNING
from tasks.runner import actor_of, default_args
from tasks.runner import run_step as _run_step

MODEL = Asset(ASSET_MODEL)


def run_step(step, **kwargs):
    return _run_step(step, fail_fast=AirflowFailException, **kwargs)


@dag(
    dag_id=DAG_BOOTSTRAP,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1),
    tags=["lifelong", "bootstrap"],
    doc_md=__doc__,
    params={
        "source": Param(
            "synthetic",
            type="string",
            minLength=1,
            title="Normal data",
            description="'lake' (train_start..train_end), 'synthetic', or a dataset preset name.",
        ),
        "train_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Train start (lake)",
            description="Start of the normal interval when source is 'lake'.",
        ),
        "train_end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Train end (lake)",
            description="End of the normal interval when source is 'lake'.",
        ),
        "heldout_fraction": Param(
            0.2,
            type="number",
            exclusiveMinimum=0,
            maximum=0.5,
            title="Held-out share",
            description="Share of the normal data kept aside for the gate and memory set.",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Epochs",
            description="Training epochs (default: the model's).",
        ),
        "tp": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            exclusiveMaximum=1,
            title="Tp",
            description="LSTM probability threshold (default 1e-4).",
        ),
        "max_fp_rate": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=1,
            title="Max held-out FP rate",
            description="Gate: the first model may flag at most this share of held-out normals.",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Replace production",
            description="Train and promote even though a production model exists.",
        ),
        "reason": Param(
            "bootstrap", type="string", maxLength=500, title="Reason", description="Kept in the audit record."
        ),
    },
)
def bootstrap_model():
    @task(pool=POOL_UNLEARNING, queue=QUEUE_UNLEARNING, execution_timeout=timedelta(hours=4), outlets=[MODEL])
    def bootstrap(params=None, run_id=None, outlet_events=None) -> dict:
        from tasks.bootstrap import bootstrap_model as step

        out = run_step(
            step,
            run_id=run_id,
            source=params["source"],
            train_start=params["train_start"],
            train_end=params["train_end"],
            heldout_fraction=params["heldout_fraction"],
            epochs=params["epochs"],
            tp=params["tp"],
            max_fp_rate=params["max_fp_rate"],
            force=params["force"],
            actor=actor_of(get_current_context()),
            reason=params["reason"],
        )
        outlet_events[MODEL].extra = {"decision": out["decision"], "version": out["version"]}
        return out

    bootstrap()


bootstrap_model()
