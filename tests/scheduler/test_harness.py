"""Prove the Airflow cluster harness on throwaway DAGs: params, pools, env passthrough, failures, teardown."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import AirflowApiError, AirflowCluster, AirflowHarnessError, _render_log_event, free_port

logger = logging.getLogger(__name__)

POOL = "lifelong_unlearning"
OK_DAG = "harness_params"
FAIL_DAG = "harness_fails"
SLEEPY_DAG = "harness_sleeps"
SENTINEL = "harness-sentinel: deliberate failure"

# Written into a temporary dags folder; kept to the shape the project's DAGs use (airflow.sdk, typed Params).
DAG_SOURCE = f'''"""Throwaway DAGs for the harness test."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(
    dag_id="{OK_DAG}",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["ci"],
    params={{"n": Param(3, type="integer", minimum=1, title="n", description="Value to double.")}},
)
def harness_params():
    @task
    def produce(params: dict | None = None) -> int:
        return int(params["n"]) * 2

    @task(pool="{POOL}")
    def consume(value: int) -> str:
        message = f"consumed {{value}} {{os.environ['HARNESS_GREETING']}}"
        print(message)
        return message

    consume(produce())


harness_params()


@dag(dag_id="{FAIL_DAG}", schedule=None, start_date=START, catchup=False, tags=["ci"])
def harness_fails():
    @task(retries=0)
    def boom() -> None:
        raise RuntimeError("{SENTINEL}")

    @task
    def after() -> None:
        return None

    boom() >> after()


harness_fails()


@dag(dag_id="{SLEEPY_DAG}", schedule=None, start_date=START, catchup=False, tags=["ci"])
def harness_sleeps():
    @task
    def nap() -> None:
        import pathlib
        import subprocess
        import time

        # A grandchild in a session of its own, like a badly behaved tool a task might start.
        rogue = subprocess.Popen(["sleep", "600"], start_new_session=True)
        state = pathlib.Path(os.environ["HARNESS_STATE_DIR"])
        (state / "task.pid").write_text(str(os.getpid()))
        (state / "rogue.pid").write_text(str(rogue.pid))
        time.sleep(600)

    nap()


harness_sleeps()
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, airflow_postgres_url: str) -> Iterator[AirflowCluster]:
    """One cluster for the whole module: starting it is the expensive part."""
    dags = tmp_path_factory.mktemp("dags")
    (dags / "harness_dags.py").write_text(DAG_SOURCE)
    state = tmp_path_factory.mktemp("state")
    with AirflowCluster(
        dags,
        env={"HARNESS_GREETING": "hello-from-env", "HARNESS_STATE_DIR": str(state)},
        pools={POOL: 1},
        postgres_url=airflow_postgres_url,
        deadline=600,
    ) as af:
        yield af


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cluster_starts_healthy_with_pool(cluster: AirflowCluster, record_property) -> None:
    record_property("airflow_start_s", round(cluster.timings.total_start, 1))
    logger.info("cluster timings: %s", cluster.timings)
    assert cluster.timings.total_start < 120, cluster.timings
    health = cluster.api("GET", "monitor/health")
    assert health["scheduler"]["status"] == "healthy"
    assert health["dag_processor"]["status"] == "healthy"
    pool = cluster.api("GET", f"pools/{POOL}")
    assert pool["slots"] == 1
    assert cluster.database_exists()


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_param_run_succeeds_in_pool_with_env(cluster: AirflowCluster, record_property) -> None:
    dag = cluster.wait_for_dag(OK_DAG, timeout=90)
    assert dag["is_paused"] is True  # new DAGs start paused, as in a default deployment
    cluster.unpause(OK_DAG)
    assert cluster.api("GET", f"dags/{OK_DAG}")["is_paused"] is False

    started = time.monotonic()
    run_id = cluster.trigger(OK_DAG, conf={"n": 7})
    state = cluster.wait_for_run(OK_DAG, run_id, timeout=120)
    elapsed = time.monotonic() - started
    record_property("two_task_run_s", round(elapsed, 1))
    logger.info("two-task run took %.1f s", elapsed)

    assert state == "success", cluster.run_report(OK_DAG, run_id)
    assert cluster.task_states(OK_DAG, run_id) == {"produce": "success", "consume": "success"}
    assert cluster.xcom(OK_DAG, run_id, "produce") == 14
    assert cluster.xcom(OK_DAG, run_id, "consume") == "consumed 14 hello-from-env"
    assert "consumed 14 hello-from-env" in cluster.task_log(OK_DAG, run_id, "consume")
    pools = {ti["task_id"]: ti["pool"] for ti in cluster.task_instances(OK_DAG, run_id)}
    assert pools == {"produce": "default_pool", "consume": POOL}
    run = cluster.api("GET", f"dags/{OK_DAG}/dagRuns/{run_id}")
    assert run["conf"] == {"n": 7}
    assert run["logical_date"] is None


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_conf_violating_a_param_is_rejected(cluster: AirflowCluster) -> None:
    cluster.wait_for_dag(OK_DAG, timeout=90)
    with pytest.raises(AirflowApiError) as info:
        cluster.trigger(OK_DAG, conf={"n": 0})
    assert info.value.status_code == 400
    assert "n" in info.value.body


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failed_task_is_reported_with_its_log(cluster: AirflowCluster) -> None:
    cluster.wait_for_dag(FAIL_DAG, timeout=90)
    cluster.unpause(FAIL_DAG)
    run_id = cluster.trigger(FAIL_DAG, logical_date=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    state = cluster.wait_for_run(FAIL_DAG, run_id, timeout=120)

    assert state == "failed", cluster.run_report(FAIL_DAG, run_id)
    assert cluster.task_states(FAIL_DAG, run_id) == {"boom": "failed", "after": "upstream_failed"}
    log = cluster.task_log(FAIL_DAG, run_id, "boom", try_number=1)
    assert SENTINEL in log
    assert "RuntimeError" in log
    report = cluster.run_report(FAIL_DAG, run_id)
    assert "boom: failed" in report and SENTINEL in report
    run = cluster.api("GET", f"dags/{FAIL_DAG}/dagRuns/{run_id}")
    assert run["logical_date"].startswith("2024-01-02T00:00:00")


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_stop_ends_running_tasks_and_their_children_and_drops_the_database(cluster: AirflowCluster) -> None:
    # Runs last in this module: it tears down the shared cluster (stop() is idempotent for the fixture).
    state = Path(cluster.extra_env["HARNESS_STATE_DIR"])
    cluster.wait_for_dag(SLEEPY_DAG, timeout=90)
    cluster.unpause(SLEEPY_DAG)
    run_id = cluster.trigger(SLEEPY_DAG)
    deadline = time.monotonic() + 90
    while not (state / "rogue.pid").exists():
        assert time.monotonic() < deadline, cluster.run_report(SLEEPY_DAG, run_id)
        assert cluster.run_state(SLEEPY_DAG, run_id) in {"queued", "running"}, cluster.run_report(
            SLEEPY_DAG, run_id
        )
        time.sleep(0.5)
    task_pid = int((state / "task.pid").read_text())
    rogue_pid = int((state / "rogue.pid").read_text())
    owned = cluster.pids()
    assert task_pid in owned and rogue_pid in owned
    # The task runs in a process group of its own, so killing the component groups alone would miss it.
    assert os.getpgid(task_pid) not in {os.getpgid(pid) for pid in owned if pid != task_pid}
    home = cluster.home

    started = time.monotonic()
    cluster.stop()
    logger.info("stop took %.1f s", time.monotonic() - started)

    assert cluster.pids() == []
    for pid in [*owned, task_pid, rogue_pid]:
        assert not _running(pid), f"process {pid} of the cluster survived stop()"
    assert not cluster.database_exists()
    assert home is not None and not home.exists()
    with pytest.raises(AirflowHarnessError, match="not running"):
        cluster.api("GET", "monitor/health")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_missing_dags_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(AirflowHarnessError, match="nope"):
        AirflowCluster(tmp_path / "nope")


def test_naive_logical_date_is_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AirflowCluster(tmp_path).trigger("any", logical_date=dt.datetime(2024, 1, 1))


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_structured_log_event_renders_exception() -> None:
    event = {
        "timestamp": "2024-01-01T00:00:00Z",
        "level": "error",
        "logger": "task",
        "event": "Task failed with exception",
        "error_detail": [
            {
                "exc_type": "RuntimeError",
                "exc_value": "bad",
                "frames": [{"filename": "f.py", "lineno": 3, "name": "boom"}],
            }
        ],
    }
    text = _render_log_event(event)
    assert text.splitlines() == [
        "2024-01-01T00:00:00Z error task Task failed with exception",
        "  RuntimeError: bad",
        "    f.py:3 in boom",
    ]
    assert _render_log_event("plain line") == "plain line"
