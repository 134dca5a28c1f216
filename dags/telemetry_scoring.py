"""
### telemetry_scoring

Every hour (``LIFELONG_SCORING_SCHEDULE``): **ingest** the interval's telemetry files from the lake,
**validate** them with Great Expectations (a bad file is quarantined with its report and the run fails
loudly), then **score** each file as its own mapped task with the production model. Flagged entities become
alerts in the label store; scores land in the lake and the `lifelong://scores` asset is updated.
Rerunning an interval rewrites the same score files and creates no duplicate alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowFailException

from lifelong.constants import ASSET_SCORES, DAG_SCORING
from tasks.runner import default_args, env
from tasks.runner import run_step as _run_step

SCORES = Asset(ASSET_SCORES)


def run_step(step, **kwargs):
    return _run_step(step, fail_fast=AirflowFailException, **kwargs)


@dag(
    dag_id=DAG_SCORING,
    # Data-interval semantics: the run at 10:00 scores [09:00, 10:00). (A plain cron string would give
    # Airflow 3's CronTriggerTimetable, whose runs have an empty interval.)
    schedule=CronDataIntervalTimetable(env("LIFELONG_SCORING_SCHEDULE", "0 * * * *"), timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=env("LIFELONG_SCORING_CATCHUP", "false").lower() == "true",
    max_active_runs=4,
    default_args=default_args(execution_timeout=timedelta(minutes=20)),
    tags=["lifelong", "scoring"],
    doc_md=__doc__,
)
def telemetry_scoring():
    @task
    def ingest(data_interval_start=None, data_interval_end=None) -> dict:
        from tasks.ingest import ingest as step

        return run_step(step, interval_start=data_interval_start, interval_end=data_interval_end)

    @task
    def validate(ingested: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from tasks.validate import validate as step

        return run_step(
            step, interval_start=data_interval_start, interval_end=data_interval_end, files=ingested["files"]
        )

    @task(retries=3)
    def score(shard: str, data_interval_start=None, data_interval_end=None) -> dict:
        from tasks.score import score_shard

        return run_step(
            score_shard, interval_start=data_interval_start, interval_end=data_interval_end, shard=shard
        )

    @task(outlets=[SCORES])
    def publish(results: list[dict], outlet_events=None, data_interval_start=None) -> dict:
        # The mapped results arrive as a lazy XCom sequence: iterating it probes one index past the end (an
        # "XCom not found" error line per pass); one slice fetches them all in a single request.
        results = list(results[:])
        summary = {
            "interval_start": str(data_interval_start),
            "shards": len(results),
            "scored": sum(r["scored"] for r in results),
            "flagged": sum(r["flagged"] for r in results),
            "new_alerts": sum(r["new_alerts"] for r in results),
            "model_versions": sorted({r["model_version"] for r in results}),
        }
        outlet_events[SCORES].extra = summary
        return summary

    @task
    def shards(validated: dict) -> list[str]:
        """The files fit to score: one mapped ``score`` task each."""
        return validated["shards"]

    publish(score.expand(shard=shards(validate(ingest()))))


telemetry_scoring()
