"""The project's real DAGs under a real Airflow 3 scheduler, driven over REST v2 the way an operator would.

One cluster (api-server, scheduler, dag-processor; LocalExecutor; PostgreSQL metadata DB) parses ``dags/``.
The registry and the telemetry lake live on moto's standalone S3 server, the label store in a SQLite file
that the task processes share. The test process plays the telemetry producer and the analysts: it lands
simulated hours in the lake and files labels from the simulator's truth; everything else happens in tasks
the scheduler runs: bootstrap, hourly scoring (mapped shards), unlearning with its gate, and a destructive
unlearning run that the gate must reject. Every stage is timed and the times are logged and recorded as
``record_property`` entries (``stage_<name>_s``) in the JUnit report.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import AirflowCluster

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

BOOTSTRAP = "bootstrap_model"
SCORING = "telemetry_scoring"
UNLEARNING = "lifelong_unlearning"
POOL = "lifelong_unlearning"

STREAM = "events"
START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a fixed past day: runs and entity ids are reproducible
HOUR = dt.timedelta(hours=1)
LABELLED_HOURS = 3  # scored by the bootstrapped model, then labelled by the analysts
SPARE_HOUR = LABELLED_HOURS  # scored by the promoted model (if the first unlearning run promotes)
BAD_HOUR = LABELLED_HOURS + 1  # a corrupted delivery lands here
SESSIONS_PER_HOUR = 80
SPARE_SESSIONS = 160
SHARDS = 2  # simulate()'s default: two raw files, so two mapped score tasks per hour
# Six epochs on the synthetic normals give a model that raises some false alerts on the drifted hours, so the
# analysts file both FP and FN labels and bounded unlearning (seeded, one torch thread) passes the gate: the
# run exercises a real promotion. Two epochs flag almost nothing, and the all-FN update is then rejected for
# forgetting; the test accepts either outcome and checks that it is consistent, as the gate decides.
BOOTSTRAP_EPOCHS = 6

RUN_TIMEOUT = 180.0  # one DAG run, queued to finished
# The cluster's lifetime: every wait is cut to it, so the module (about 3 minutes on 2 cores) ends within it.
SCENARIO_DEADLINE = 360


@dataclass
class Pipeline:
    """The cluster plus what the test process needs to inspect the same stores the tasks write."""

    af: AirflowCluster
    settings: Any  # lifelong.settings.Settings, built from the same environment the tasks see
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.settings.resolved_model_name)

    def registry(self) -> Any:
        from lifelong.stores.registry import ModelRegistry

        return ModelRegistry.from_settings(self.settings)

    def lake(self) -> Any:
        from lifelong.stores.lake import TelemetryLake

        return TelemetryLake.from_settings(self.settings)

    def labels(self) -> Any:
        from lifelong.stores.labels import LabelStore

        return LabelStore.from_settings(self.settings)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage of the scenario (kept even when the stage fails, for the log)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - started, 1)
            logger.info("stage %s took %.1f s", name, self.timings[name])

    def run(self, dag_id: str, *, conf: dict[str, Any] | None = None, logical_date: dt.datetime | None = None) -> str:
        """Trigger a run, wait for it, and fail with the run report unless it succeeded."""
        run_id = self.af.trigger(dag_id, conf=conf, logical_date=logical_date)
        self.expect_success(dag_id, run_id)
        return run_id

    def expect_success(self, dag_id: str, run_id: str) -> None:
        state = self.af.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
        assert state == "success", self.af.run_report(dag_id, run_id)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Iterator[dict[str, str]]:
    """Stores on moto's S3 (registry, lake) and a SQLite label store; this process's environment set alike.

    Yields the environment the cluster's processes get. The test process reads the same stores through
    ``get_settings()`` (its cache is cleared on the way in and out).
    """
    import boto3

    from lifelong.settings import get_settings

    bucket = f"ci-pipeline-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    home = tmp_path_factory.mktemp("lifelong_home")
    env = {
        "LIFELONG_HOME": str(home),  # the label store: sqlite:///<home>/labels.db, shared by every task process
        "LIFELONG_REGISTRY_URL": f"s3://{bucket}/registry",
        "LIFELONG_LAKE_URL": f"s3://{bucket}/lake",
        "LIFELONG_STREAM": STREAM,
        "LIFELONG_STREAM_KIND": "events",
        "LIFELONG_TORCH_THREADS": "1",  # parallel task processes on a small machine
        "LIFELONG_SEED": "0",
        **_aws_env(moto_server),
    }
    with pytest.MonkeyPatch.context() as mp:
        # A developer's own LIFELONG_* settings must reach neither the cluster (it inherits this process's
        # environment) nor the stores this process reads.
        for name in [n for n in os.environ if n.startswith("LIFELONG_") and n not in env]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield env
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def cluster(pipeline_env: dict[str, str], airflow_postgres_url: str) -> Iterator[AirflowCluster]:
    """The cluster on the project's ``dags/`` (a fixture of its own, so conftest attaches its logs on failure)."""
    with AirflowCluster(
        DAGS,
        env=pipeline_env,
        pools={POOL: 1},
        postgres_url=airflow_postgres_url,
        deadline=SCENARIO_DEADLINE,
    ) as af:
        yield af


@pytest.fixture(scope="module")
def pipeline(cluster: AirflowCluster, pipeline_env: dict[str, str]) -> Iterator[Pipeline]:
    """The cluster plus settings and stage timings shared by the module's tests."""
    from lifelong.settings import get_settings

    pipe = Pipeline(af=cluster, settings=get_settings())
    pipe.timings["cluster_start"] = round(cluster.timings.total_start, 1)
    yield pipe
    logger.info("stage timings (s): %s", pipe.timings)


def _hour(index: int) -> dt.datetime:
    return START + index * HOUR


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(SCENARIO_DEADLINE)
def test_operator_runs_the_lifelong_loop(pipeline: Pipeline, record_property: Any) -> None:
    pipe, af = pipeline, pipeline.af
    from lifelong.simulation import file_labels_from_truth, simulate

    with pipe.stage("dags_parsed"):
        for dag_id in (BOOTSTRAP, SCORING, UNLEARNING):
            dag = af.wait_for_dag(dag_id, timeout=120)
            assert dag["is_paused"] is True, dag
            af.unpause(dag_id)
        assert af.api("GET", f"pools/{POOL}")["slots"] == 1

    with pipe.stage("simulate"):
        hours = simulate(
            pipe.settings,
            stream=STREAM,
            kind="events",
            hours=SPARE_HOUR,
            start=START,
            seed=0,
            sessions_per_hour=SESSIONS_PER_HOUR,
            drift_from_hour=1,
        )
        # The spare hour must hold mistakes even for a well-corrected model, for the destructive run to have
        # labels: a quarter of it anomalous, so it holds about 4 long-loop anomalies, which no window model can
        # flag (each of their windows occurs in normal sessions).
        hours += simulate(
            pipe.settings,
            stream=STREAM,
            kind="events",
            hours=1,
            start=_hour(SPARE_HOUR),
            seed=1,
            sessions_per_hour=SPARE_SESSIONS,
            anomaly_rate=0.25,
            drift_from_hour=0,
        )
        assert [h.n for h in hours] == [SESSIONS_PER_HOUR] * SPARE_HOUR + [SPARE_SESSIONS]
        assert all(len(h.files) == SHARDS for h in hours)

    # --- bootstrap: the first production model ------------------------------------------------------
    with pipe.stage("bootstrap_model"):
        boot_run = pipe.run(BOOTSTRAP, conf={"source": "synthetic", "epochs": BOOTSTRAP_EPOCHS})
    boot = af.xcom(BOOTSTRAP, boot_run, "bootstrap")
    assert boot["decision"] == "promoted", boot
    v0 = boot["version"]
    reg = pipe.registry()
    pointer = reg.production(pipe.model)
    assert pointer is not None and pointer.version == v0, pointer
    assert pointer.previous is None and pointer.run_id == boot_run
    records = reg.audit(pipe.model)
    assert [(r.decision, r.to_version, r.run_id) for r in records] == [("promoted", v0, boot_run)]
    assert "manual run" in records[0].actor, records[0].actor  # actor_of() read the DagRun's run type
    manifest = reg.get_manifest(pipe.model, v0)
    assert manifest["kind"] == "bootstrap" and manifest["airflow_run_id"] == boot_run
    assert manifest["n_train"] > 0 and manifest["n_heldout"] > 0

    # --- hourly scoring: three hours at once, as a catch-up would run them ------------------------------
    with pipe.stage("telemetry_scoring_x3"):
        # The run at L scores [L - 1h, L) (CronDataIntervalTimetable).
        score_runs = [af.trigger(SCORING, logical_date=_hour(h) + HOUR) for h in range(LABELLED_HOURS)]
        for run_id in score_runs:
            pipe.expect_success(SCORING, run_id)
    total_flagged = 0
    lake = pipe.lake()
    for h, run_id in enumerate(score_runs):
        run = af.api("GET", f"dags/{SCORING}/dagRuns/{run_id}")
        assert dt.datetime.fromisoformat(run["data_interval_start"]) == _hour(h), run
        assert dt.datetime.fromisoformat(run["data_interval_end"]) == _hour(h) + HOUR, run
        states = af.task_states(SCORING, run_id)
        expected = {"ingest", "validate", "shards", "publish"} | {f"score[{i}]" for i in range(SHARDS)}
        assert states == dict.fromkeys(expected, "success"), af.run_report(SCORING, run_id)
        published = af.xcom(SCORING, run_id, "publish")
        assert published["shards"] == SHARDS and published["scored"] == SESSIONS_PER_HOUR, published
        assert published["model_versions"] == [v0], published
        shard_results = [af.xcom(SCORING, run_id, "score", map_index=i) for i in range(SHARDS)]
        assert sum(r["flagged"] for r in shard_results) == published["flagged"]
        scores = lake.read_scores(STREAM, _hour(h), _hour(h) + HOUR)
        assert len(scores) == SESSIONS_PER_HOUR and scores["entity_id"].is_unique
        assert set(scores["model_version"]) == {v0}
        assert int(scores["abnormal"].sum()) == published["flagged"]
        total_flagged += published["flagged"]
    with pipe.labels() as store:
        alerts = store.list_alerts(stream=STREAM, limit=None)
    assert len(alerts) == total_flagged
    assert {a.model_version for a in alerts} <= {v0}
    assert {a.interval_start for a in alerts} <= {_hour(h) for h in range(LABELLED_HOURS)}

    # Unpausing let the scheduler start the DAGs' latest scheduled runs (catchup=False): the current real
    # hour (no telemetry) and the last nightly unlearning (no labels yet). They must end quietly, and must
    # be over before labels are filed, or the nightly run would claim them.
    _check_scheduled_runs_were_harmless(pipe)

    # --- the analysts file their labels ---------------------------------------------------------------
    with pipe.stage("file_labels"):
        filed = file_labels_from_truth(pipe.settings, stream=STREAM, start=_hour(0), end=_hour(LABELLED_HOURS))
    n_labels = filed.fp + filed.fn
    assert n_labels > 0, filed
    with pipe.labels() as store:
        assert store.pending_count(STREAM) == n_labels

    # --- unlearning: promoted or an audited rejection, consistently -------------------------------------
    with pipe.stage("lifelong_unlearning"):
        first = pipe.run(UNLEARNING, conf={"force": True, "reason": "ci", "dry_run": False})
    pulled = af.xcom(UNLEARNING, first, "pull_labels")
    assert pulled["claimed"] == n_labels and (pulled["n_fp"], pulled["n_fn"]) == (filed.fp, filed.fn), pulled
    evaluated = af.xcom(UNLEARNING, first, "evaluate")
    promoted = af.xcom(UNLEARNING, first, "promote")
    assert af.task_states(UNLEARNING, first)["release_on_failure"] == "skipped"
    decision = promoted["decision"]
    record_property("first_unlearning_decision", decision)
    logger.info("first unlearning run: %s (%s) metrics %s", decision, evaluated["reason"], evaluated["metrics"])
    assert decision in {"promoted", "rejected"}, promoted
    assert decision == ("promoted" if evaluated["passed"] else "rejected"), (promoted, evaluated)
    assert promoted["production_version"] == v0 and promoted["version"] not in (None, v0), promoted
    candidate = promoted["version"]
    manifest = reg.get_manifest(pipe.model, candidate)  # stored either way: a rejection is evidence too
    assert manifest["parent"] == v0 and manifest["airflow_run_id"] == first
    assert manifest["verdict"]["passed"] is evaluated["passed"]
    assert len(manifest["labels"]) == n_labels
    last = reg.audit(pipe.model)[-1]
    assert last.run_id == first and last.decision == decision, last
    pointer = reg.production(pipe.model)
    with pipe.labels() as store:
        statuses = [lb.status for lb in store.list_labels(stream=STREAM)]
    if decision == "promoted":
        assert pointer is not None and pointer.version == candidate and pointer.previous == v0, pointer
        assert last.to_version == candidate and last.from_version == v0
        assert statuses == ["consumed"] * n_labels
        serving = candidate
    else:
        assert pointer is not None and pointer.version == v0, pointer
        assert last.to_version == candidate and "ci" in last.reason
        assert statuses == ["pending"] * n_labels  # released for the next run
        serving = v0

    # --- after a promotion, the next hour is scored by the new model and its mistakes are labelled ----------
    if decision == "promoted":
        with pipe.stage("telemetry_scoring_new_model"):
            run_id = pipe.run(SCORING, logical_date=_hour(SPARE_HOUR) + HOUR)
        published = af.xcom(SCORING, run_id, "publish")
        assert published["model_versions"] == [candidate], published
        spare = file_labels_from_truth(
            pipe.settings, stream=STREAM, start=_hour(SPARE_HOUR), end=_hour(SPARE_HOUR) + HOUR
        )
        n_pending = spare.fp + spare.fn
        assert n_pending > 0, f"the promoted model made no mistake on hour {SPARE_HOUR}: {spare}"
    else:
        n_pending = n_labels

    # --- a destructive update forced through params: the gate must reject it -----------------------------
    with pipe.stage("lifelong_unlearning_destructive"):
        destructive = {"force": True, "lam": 0.0, "lr": 5.0, "guard_units": 0, "reason": "ci destructive"}
        bad = pipe.run(UNLEARNING, conf=destructive)
    assert af.xcom(UNLEARNING, bad, "pull_labels")["claimed"] == n_pending
    verdict = af.xcom(UNLEARNING, bad, "evaluate")
    rejected = af.xcom(UNLEARNING, bad, "promote")
    assert rejected["decision"] == "rejected", (rejected, verdict)
    assert verdict["passed"] is False and "forgetting" in verdict["reason"], verdict
    assert rejected["production_version"] == serving
    pointer = reg.production(pipe.model)
    assert pointer is not None and pointer.version == serving, pointer
    last = reg.audit(pipe.model)[-1]
    assert (last.decision, last.run_id, last.from_version) == ("rejected", bad, serving), last
    assert "ci destructive" in last.reason and last.verdict is not None and last.verdict["passed"] is False
    with pipe.labels() as store:
        assert store.pending_count(STREAM) == n_pending  # given back for a better run

    for name, seconds in pipe.timings.items():
        record_property(f"stage_{name}_s", seconds)
    logger.info("scenario timings (s): %s", pipe.timings)


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(SCENARIO_DEADLINE)
def test_bad_batch_is_quarantined_and_the_run_fails_loudly(pipeline: Pipeline) -> None:
    from tasks.demo import land_bad_batch

    pipe, af = pipeline, pipeline.af
    af.wait_for_dag(SCORING, timeout=120)
    af.unpause(SCORING)
    landed = land_bad_batch(pipe.settings, _hour(BAD_HOUR))
    with pipe.stage("telemetry_scoring_bad_batch"):
        run_id = af.trigger(SCORING, logical_date=_hour(BAD_HOUR) + HOUR)
        state = af.wait_for_run(SCORING, run_id, timeout=RUN_TIMEOUT)
    report = af.run_report(SCORING, run_id)
    assert state == "failed", report
    states = af.task_states(SCORING, run_id)
    assert states["ingest"] == "success" and states["validate"] == "failed", report
    # AirflowFailException: bad data is not retried.
    tis = {ti["task_id"]: ti for ti in af.task_instances(SCORING, run_id)}
    assert tis["validate"]["try_number"] == 1, report
    assert "failed validation and were quarantined" in report, report
    name = landed.rsplit("/", 1)[-1]
    quarantined = [q for q in pipe.lake().list_quarantine(STREAM) if q.path.endswith(name)]
    assert len(quarantined) == 1, (landed, pipe.lake().list_quarantine(STREAM))
    assert quarantined[0].interval_start == _hour(BAD_HOUR) and quarantined[0].report_path is not None
    # The raw partition no longer holds the bad file: nothing is scored from it by a rerun.
    assert not pipe.lake().exists(landed), landed


def _check_scheduled_runs_were_harmless(pipe: Pipeline) -> None:
    """Wait for any scheduled run of the scoring and unlearning DAGs; each must succeed and do nothing."""
    af = pipe.af
    with pipe.stage("scheduled_runs"):
        for dag_id in (SCORING, UNLEARNING):
            runs = af.api("GET", f"dags/{dag_id}/dagRuns", params={"run_type": "scheduled", "limit": 100})
            for run in runs["dag_runs"]:
                run_id = run["dag_run_id"]
                pipe.expect_success(dag_id, run_id)
                states = af.task_states(dag_id, run_id)
                if dag_id == UNLEARNING:
                    # A short-circuit skips downstream by raising, so Airflow 3 keeps no XCom of it: the
                    # task states and the log say that the nightly run found nothing to do.
                    assert states == {
                        "pull_labels": "success",
                        "unlearn": "skipped",
                        "evaluate": "skipped",
                        "promote": "skipped",
                        "release_on_failure": "skipped",
                    }, af.run_report(dag_id, run_id)
                    assert "nothing to do" in af.task_log(dag_id, run_id, "pull_labels")
                else:
                    # The current real hour has no telemetry: nothing to map over, nothing scored.
                    assert states.get("ingest") == "success", af.run_report(dag_id, run_id)
                    assert not any(k.startswith("score") and v == "success" for k, v in states.items()), states
