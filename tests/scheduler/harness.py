"""Run a real Airflow 3 cluster (api-server, scheduler, dag-processor) for CI tests and drive it over REST v2.

The cluster is what an operator would run, only small and disposable: separate ``airflow`` processes started
from this virtualenv, LocalExecutor, a fresh PostgreSQL database per cluster, ``AIRFLOW_HOME`` in a temporary
folder, free ports. Tests talk to it only through the public REST API with a simple-auth-manager token.

Example::

    with AirflowCluster(dags_folder=Path("dags"), env={"LIFELONG_HOME": str(tmp)},
                        pools={"lifelong_unlearning": 1}) as af:
        af.wait_for_dag("telemetry_scoring")
        af.unpause("telemetry_scoring")
        run_id = af.trigger("telemetry_scoring", conf={"batch": "2024-01-01T00"})
        state = af.wait_for_run("telemetry_scoring", run_id, timeout=180)
        assert state == "success", af.run_report("telemetry_scoring", run_id)

Every wait is bounded (its own timeout and the cluster's overall deadline). On exit every process the cluster
started is stopped: the components' process groups, then the task processes that Airflow puts in groups of
their own and anything they spawned (found as descendants, by working directory, or by a marker variable);
then the database is dropped. An exception leaving the ``with`` block gets the tail of each component's log
attached as a note, and conftest.py attaches the same to any failed test that used a cluster fixture.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Admin connection used to create and drop the per-cluster database (any database on the server will do).
DEFAULT_POSTGRES_URL = os.environ.get("AIRFLOW_CI_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: Set on every process of a cluster; its value identifies the cluster when stray processes are swept.
MARKER_ENV = "CI_AIRFLOW_HARNESS_ID"

#: DagRun states after which nothing more happens to the run.
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

_ADMIN_USER = "admin"
_LOG_TAIL_BYTES = 64 * 1024
_LOG_NOISE_KEYS = (
    "sources",
    "filename",
    "lineno",
    "loc",
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
    "ti_id",
    "try_number",
)


class AirflowHarnessError(RuntimeError):
    """The cluster could not start, a component died, or a wait ran out of time."""


class AirflowApiError(AirflowHarnessError):
    """A REST call answered with an unexpected status.

    Attributes:
        status_code: The HTTP status of the answer.
        method: The HTTP method of the request.
        path: The request path.
        body: The answer's body, as text.
    """

    def __init__(self, method: str, path: str, status_code: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status_code}: {body[:2000]}")
        self.method = method
        self.path = path
        self.status_code = status_code
        self.body = body


def postgres_unreachable_reason(postgres_url: str = DEFAULT_POSTGRES_URL, timeout: float = 3.0) -> str | None:
    """Tell whether the PostgreSQL server that hosts the cluster databases can be used.

    Args:
        postgres_url: Admin URL (``postgresql://user@host:port/db``) able to create databases.
        timeout: Seconds to wait for the connection.

    Returns:
        None when a connection works, otherwise a one-line reason naming the URL (password hidden).
    """
    try:
        with psycopg.connect(_libpq_url(postgres_url), connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        shown = make_url(postgres_url).render_as_string(hide_password=True)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {shown} is not reachable: {first_line}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (bind to port 0 and read what the OS chose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _libpq_url(url: str) -> str:
    """Turn a SQLAlchemy-style URL (``postgresql+psycopg://``) into one psycopg/libpq accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _tail(path: Path, lines: int) -> str:
    """Return the last ``lines`` lines of a text file (reading at most its last 64 KiB)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _LOG_TAIL_BYTES))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    kept = data.splitlines()[-lines:]
    return "\n".join(line if len(line) <= 400 else line[:400] + " ..." for line in kept)


@dataclass
class _Component:
    """One long-running Airflow process and where its output goes."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class ClusterTimings:
    """Wall-clock seconds spent in each start-up phase (filled in as the cluster starts)."""

    database: float = 0.0
    migrate: float = 0.0
    components_ready: float = 0.0
    total_start: float = 0.0


class AirflowCluster:
    """A disposable Airflow 3 deployment (separate processes, LocalExecutor, PostgreSQL) driven over REST v2.

    Use it as a context manager; ``__enter__`` returns once the API answers, the scheduler and dag-processor
    report healthy and the requested pools exist. DAGs are parsed asynchronously: call :meth:`wait_for_dag`.

    Args:
        dags_folder: Folder the dag-processor parses (``[core] dags_folder``).
        env: Extra environment for every Airflow process (applied last, so it may override ``AIRFLOW__*``
            settings too), e.g. ``LIFELONG_*`` settings and ``AWS_ENDPOINT_URL`` for a moto server.
            Variables starting with ``AIRFLOW_`` are *not* inherited from the calling process, so a test
            session's own Airflow configuration cannot leak into the cluster.
        pools: Pools to create or resize after start, ``{name: slots}``.
        postgres_url: Admin URL of the PostgreSQL server; a fresh database ``airflow_ci_<hex>`` is created on
            it for this cluster and dropped on exit.
        home: ``AIRFLOW_HOME``; by default a new temporary folder, removed on a clean exit and kept (and
            logged) when the block raised, so its logs can be read.
        parallelism: ``[core] parallelism``, the LocalExecutor's number of concurrent task processes.
        triggerer: Also start ``airflow triggerer`` (only DAGs with deferrable operators need it).
        startup_timeout: Seconds allowed for migration plus components becoming healthy.
        deadline: Seconds the whole cluster may live, counted from start; every wait is cut to it.
        stop_grace: Seconds between SIGTERM and SIGKILL on exit.

    Attributes:
        base_url: ``http://127.0.0.1:<port>`` of the API server, once started.
        home: The ``AIRFLOW_HOME`` in use; component output is in ``home/logs/<component>.out``.
        db_name: The cluster's PostgreSQL database.
        timings: Seconds spent starting up, per phase.
        failed: Set when the ``with`` block raised or a test using the cluster failed; keeps a temporary
            home instead of removing it.
    """

    def __init__(
        self,
        dags_folder: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        pools: Mapping[str, int] | None = None,
        postgres_url: str = DEFAULT_POSTGRES_URL,
        home: str | os.PathLike[str] | None = None,
        parallelism: int = 4,
        triggerer: bool = False,
        startup_timeout: float = 180.0,
        deadline: float = 900.0,
        stop_grace: float = 5.0,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        if not self.dags_folder.is_dir():
            raise AirflowHarnessError(f"dags_folder {self.dags_folder} is not a directory")
        self.extra_env = dict(env or {})
        self.pools = dict(pools or {})
        self.postgres_url = postgres_url
        self.parallelism = parallelism
        self.triggerer = triggerer
        self.startup_timeout = startup_timeout
        self.deadline = deadline
        self.stop_grace = stop_grace
        self.timings = ClusterTimings()

        self._own_home = home is None
        self.home = Path(home).resolve() if home is not None else None
        self.cluster_id = uuid.uuid4().hex[:12]
        self.db_name = f"airflow_ci_{self.cluster_id}"
        self.port = 0
        self.base_url = ""
        self._components: list[_Component] = []
        self._client: httpx.Client | None = None
        self._token: str | None = None
        self._password = secrets.token_urlsafe(16)
        self._db_created = False
        self._started_at: float | None = None
        self._stopped = False
        self.failed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.failed = True
            # A note rides along with the exception, so the test report shows what the components said.
            with contextlib.suppress(Exception):
                exc.add_note(self.component_logs())
        self.stop()

    def start(self) -> None:
        """Create the database and home, migrate, start the components and wait until they are healthy.

        Raises:
            AirflowHarnessError: When a step fails or takes longer than ``startup_timeout``; the message holds
                the tail of each component's log.
        """
        if self._started_at is not None:
            raise AirflowHarnessError("this AirflowCluster was already started; create a new one")
        self._started_at = time.monotonic()
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException as exc:
            self.failed = True
            if isinstance(exc, AirflowHarnessError):
                with contextlib.suppress(Exception):
                    exc.add_note(self.component_logs())
            self.stop()
            raise

    def _start(self) -> None:
        t0 = time.monotonic()
        # One budget for the whole start-up, cut to the cluster deadline.
        start_by = t0 + min(self.startup_timeout, self._remaining())
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix="airflow_ci_"))
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self._create_database()
        self.timings.database = time.monotonic() - t0

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = self._environment()

        t1 = time.monotonic()
        self._migrate(env, timeout=max(1.0, start_by - time.monotonic()))
        self.timings.migrate = time.monotonic() - t1

        t2 = time.monotonic()
        airflow = str(Path(sys.executable).parent / "airflow")
        specs = [
            (
                "api-server",
                [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            ),
            ("scheduler", [airflow, "scheduler"]),
            ("dag-processor", [airflow, "dag-processor"]),
        ]
        if self.triggerer:
            specs.append(("triggerer", [airflow, "triggerer"]))
        for name, argv in specs:
            self._spawn(_Component(name=name, argv=argv, log_path=self.home / "logs" / f"{name}.out"), env)

        self._client = httpx.Client(base_url=self.base_url, timeout=30.0)
        self._wait_until_healthy(start_by - time.monotonic())
        self._login()
        for name, slots in self.pools.items():
            self.create_pool(name, slots)
        self.timings.components_ready = time.monotonic() - t2
        self.timings.total_start = time.monotonic() - t0
        logger.info(
            "Airflow cluster %s up on %s in %.1f s (db %.1f s, migrate %.1f s, components %.1f s); home %s",
            self.cluster_id,
            self.base_url,
            self.timings.total_start,
            self.timings.database,
            self.timings.migrate,
            self.timings.components_ready,
            self.home,
        )

    def stop(self) -> None:
        """Stop every process of the cluster, drop its database and remove its home (idempotent).

        Components get SIGTERM on their process group, then SIGKILL after ``stop_grace``. Task processes
        (Airflow gives each its own process group) and anything they spawned are found as descendants of
        the components, by working directory or by the marker variable, and stopped the same way.
        """
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._client is not None:
            self._client.close()
        outside = self._stop_processes()
        if outside:
            logger.info(
                "stopped %d process(es) of cluster %s outside the component groups", outside, self.cluster_id
            )
        self._drop_database()
        if self.home is not None and self._own_home:
            if self.failed:
                logger.warning(
                    "keeping AIRFLOW_HOME %s of failed cluster %s for its logs", self.home, self.cluster_id
                )
            else:
                shutil.rmtree(self.home, ignore_errors=True)

    def pids(self) -> list[int]:
        """Return the ids of live processes that belong to this cluster (components and their children)."""
        return sorted(p.pid for p in self._cluster_processes())

    # ------------------------------------------------------------------ REST API

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        """Call the REST API as the admin user and return the decoded JSON answer.

        Args:
            method: HTTP method (``GET``, ``POST``, ``PATCH``, ``DELETE``).
            path: ``/api/v2/...`` or any absolute path on the API server; a path without a leading slash is
                taken relative to ``/api/v2/`` (``"dags/x"`` is ``/api/v2/dags/x``).
            json: Request body, sent as JSON.
            params: Query parameters.
            headers: Extra request headers.
            expect: Statuses that count as success.

        Returns:
            The decoded JSON body, or the text when the answer is not JSON, or None for an empty body.

        Raises:
            AirflowApiError: The status is not in ``expect``.
        """
        client = self._require_client()
        url = path if path.startswith("/") else f"/api/v2/{path}"
        response = self._send(client, method, url, json, params, headers)
        if response.status_code == 401:
            # Tokens expire; one fresh login is the same thing a person at the UI would do.
            self._login()
            response = self._send(client, method, url, json, params, headers)
        if response.status_code not in expect:
            raise AirflowApiError(method.upper(), url, response.status_code, response.text)
        if not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id`` and the API serves it.

        Args:
            dag_id: The DAG to wait for.
            timeout: Seconds to wait.

        Returns:
            The DAG as ``GET /api/v2/dags/{dag_id}`` describes it.

        Raises:
            AirflowHarnessError: Timeout, or the DAG did not appear within 15 s of an import error being
                recorded (the message holds the import errors).
        """
        first_error_at: float | None = None

        def probe() -> dict[str, Any] | None:
            nonlocal first_error_at
            try:
                return self.api("GET", f"dags/{dag_id}")
            except AirflowApiError as exc:
                if exc.status_code != 404:
                    raise
            if self._import_errors():
                first_error_at = first_error_at or time.monotonic()
                if time.monotonic() - first_error_at > 15.0:
                    raise AirflowHarnessError(
                        f"DAG {dag_id!r} did not appear and the dag-processor reports import errors:\n"
                        + self._format_import_errors()
                    )
            return None

        return self._poll(probe, timeout, f"DAG {dag_id!r} to be parsed", extra=self._format_import_errors)

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (new DAGs start paused, as in a default deployment)."""
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False}, params={"update_mask": "is_paused"})

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: dt.datetime | str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Trigger a manual run, as the UI's "Trigger" button or ``POST /api/v2/dags/{dag_id}/dagRuns`` does.

        Args:
            dag_id: The DAG to run.
            conf: Run configuration; the DAG's Params are validated against it (invalid -> 400).
            logical_date: Timezone-aware datetime or ISO string; None gives a run without a logical date
                (Airflow 3 allows that and requires the key to be sent).
            run_id: Run id to use instead of the generated ``manual__...`` one.

        Returns:
            The run id.

        Raises:
            ValueError: ``logical_date`` is a naive datetime.
            AirflowApiError: The API rejected the request (e.g. 400 for conf that fails Param validation,
                409 for a duplicate run id).
        """
        if isinstance(logical_date, dt.datetime):
            if logical_date.tzinfo is None:
                raise ValueError(f"logical_date {logical_date!r} must be timezone-aware")
            logical_date = logical_date.isoformat()
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        answer = self.api("POST", f"dags/{dag_id}/dagRuns", body)
        return str(answer["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return the current state of a DAG run (``queued``, ``running``, ``success``, ``failed``)."""
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Wait until a DAG run reaches ``success`` or ``failed`` and return that state.

        Raises:
            AirflowHarnessError: The run is still going after ``timeout`` seconds; the message holds the run
                report (task states, failed task logs) and the components' logs.
        """

        def probe() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in TERMINAL_RUN_STATES else None

        return self._poll(
            probe, timeout, f"run {dag_id}/{run_id} to finish", extra=lambda: self.run_report(dag_id, run_id)
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return every task instance of a run as the API describes it (all pages)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(items), "order_by": "id"},
            )
            items.extend(page["task_instances"])
            if not page["task_instances"] or len(items) >= int(page["total_entries"]):
                return items

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Return ``{task_id: state}`` for a run; mapped task instances appear as ``"task_id[map_index]"``."""
        states: dict[str, str | None] = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = ti.get("state")
        return states

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """Return the full log of one task try as text, one line per log event.

        Structured events are rendered as ``timestamp level [logger] event key=value``, with a raised
        exception's type, message and innermost frames underneath.
        """
        answer = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        return "\n".join(_render_log_event(event) for event in answer.get("content", []))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """Return the deserialised value of an XCom (a task's return value by default)."""
        answer = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": "true", "stringify": "false"},
        )
        return answer["value"]

    def create_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create pool ``name`` with ``slots`` slots, or resize it when it exists (e.g. ``default_pool``)."""
        body = {"name": name, "slots": slots, "description": description or f"created by {__name__}"}
        try:
            self.api("POST", "pools", body)
        except AirflowApiError as exc:
            if exc.status_code != 409:
                raise
            self.api("PATCH", f"pools/{name}", {"slots": slots}, params={"update_mask": "slots"})

    def run_report(self, dag_id: str, run_id: str, log_lines: int = 60) -> str:
        """Describe a run for an assertion message: its state, each task's state, and failed tasks' logs.

        Never raises: what cannot be fetched is reported inline instead.
        """
        parts = [f"run {dag_id}/{run_id}"]
        try:
            parts[0] += f": state={self.run_state(dag_id, run_id)}"
            tis = self.task_instances(dag_id, run_id)
        except Exception as exc:  # a report must not hide the original failure
            return f"{parts[0]}: <could not fetch the run: {exc}>"
        for ti in tis:
            label = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            parts.append(f"  {label}: {ti.get('state')} (try {ti.get('try_number')})")
        for ti in tis:
            if ti.get("state") not in {"failed", "up_for_retry"}:
                continue
            try:
                text = self.task_log(
                    dag_id,
                    run_id,
                    ti["task_id"],
                    max(1, int(ti.get("try_number") or 1)),
                    int(ti.get("map_index", -1)),
                )
                tail = "\n".join(text.splitlines()[-log_lines:])
            except Exception as exc:
                tail = f"<could not fetch the log: {exc}>"
            parts.append(f"--- log of {ti['task_id']} (last {log_lines} lines) ---\n{tail}")
        return "\n".join(parts)

    def component_logs(self, lines: int = 40) -> str:
        """Return the tail of each component's output (or the migration's, if it failed) for errors."""
        if self.home is None:
            return "<the cluster has no home yet>"
        chunks = [f"Airflow cluster {self.cluster_id} (AIRFLOW_HOME {self.home}, database {self.db_name})"]
        # The migration log only matters when start-up did not get past it.
        paths = [c.log_path for c in self._components] or [self.home / "logs" / "migrate.out"]
        for path in paths:
            if not path.exists():
                continue
            status = ""
            for comp in self._components:
                if comp.log_path == path and comp.proc is not None:
                    code = comp.proc.poll()
                    status = " (running)" if code is None else f" (exited with {code})"
            chunks.append(f"===== {path.name}{status}: last {lines} lines =====\n{_tail(path, lines)}")
        return "\n".join(chunks)

    # ------------------------------------------------------------------ internals

    def _environment(self) -> dict[str, str]:
        assert self.home is not None
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
        conn = make_url(self.postgres_url).set(drivername="postgresql+psycopg", database=self.db_name)
        conn_str = conn.render_as_string(hide_password=False)
        passwords_file = self.home / "simple_auth_manager_passwords.json"
        # The simple auth manager only generates passwords for users missing from this file, so writing it
        # first gives a known admin password without scraping it from a log.
        passwords_file.write_text(json.dumps({_ADMIN_USER: self._password}) + "\n")
        env.update(
            {
                # Workers and task supervisors spawn `airflow`, which must be this venv's.
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "PYTHONUNBUFFERED": "1",
                MARKER_ENV: self.cluster_id,
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                # Tasks reach the API server through the execution API; its default assumes port 8080.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{_ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                # Sync and async engines both on psycopg 3 (neither psycopg2 nor asyncpg is installed).
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn_str,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": conn_str,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                # Scheduler, dag-processor and api-server must agree on these or task tokens are rejected.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__EXPOSE_CONFIG": "True",
                # Parse new and changed files within seconds instead of minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The scheduler's and triggerer's log servers default to fixed ports (8793, 8794), which
                # would make two clusters on one machine (parallel CI jobs) collide.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            }
        )
        env.update(self.extra_env)
        return env

    def _create_database(self) -> None:
        reason = postgres_unreachable_reason(self.postgres_url)
        if reason is not None:
            raise AirflowHarnessError(reason)
        with psycopg.connect(_libpq_url(self.postgres_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        self._db_created = True

    def _drop_database(self) -> None:
        if not self._db_created:
            return
        try:
            with psycopg.connect(_libpq_url(self.postgres_url), autocommit=True, connect_timeout=5) as conn:
                # FORCE (PostgreSQL 13+) ends sessions a killed component may have left half-closed.
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db_name))
                )
            self._db_created = False
        except psycopg.Error as exc:
            logger.warning("could not drop database %s: %s", self.db_name, exc)

    def database_exists(self) -> bool:
        """Tell whether this cluster's database is present on the server (False after :meth:`stop`)."""
        with psycopg.connect(_libpq_url(self.postgres_url), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db_name,)).fetchone()
        return row is not None

    def _migrate(self, env: dict[str, str], timeout: float) -> None:
        assert self.home is not None
        log_path = self.home / "logs" / "migrate.out"
        with log_path.open("wb") as out:
            try:
                result = subprocess.run(
                    [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                    env=env,
                    cwd=self.home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired as exc:
                raise AirflowHarnessError(f"`airflow db migrate` took longer than {timeout:.0f} s") from exc
        if result.returncode != 0:
            raise AirflowHarnessError(f"`airflow db migrate` exited with {result.returncode}")

    def _spawn(self, comp: _Component, env: dict[str, str]) -> None:
        assert self.home is not None
        with comp.log_path.open("ab") as out:
            # A session of its own per component: killpg on teardown reaches the component and the worker
            # processes it forks, and a Ctrl-C in the terminal does not hit them half-way.
            comp.proc = subprocess.Popen(
                comp.argv,
                env=env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._components.append(comp)
        logger.debug("started %s (pid %d): %s", comp.name, comp.proc.pid, " ".join(comp.argv))

    def _wait_until_healthy(self, timeout: float) -> None:
        wanted = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if self.triggerer else [])
        client = self._require_client()
        last: dict[str, Any] = {}

        def probe() -> bool | None:
            nonlocal last
            try:
                response = client.get("/api/v2/monitor/health", timeout=5.0)
            except httpx.TransportError:
                return None
            if response.status_code != 200:
                return None
            last = response.json()
            healthy = all((last.get(part) or {}).get("status") == "healthy" for part in wanted)
            return True if healthy else None

        self._poll(probe, timeout, "components to report healthy", extra=lambda: f"last health: {last}")

    def _login(self) -> None:
        client = self._require_client()
        response = client.post("/auth/token", json={"username": _ADMIN_USER, "password": self._password})
        if response.status_code not in (200, 201):
            raise AirflowApiError("POST", "/auth/token", response.status_code, response.text)
        self._token = str(response.json()["access_token"])

    def _send(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        body: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        all_headers.update(headers or {})
        try:
            return client.request(method, url, json=body, params=params, headers=all_headers)
        except httpx.TransportError as exc:
            self._check_components()
            raise AirflowHarnessError(f"{method.upper()} {url} failed: {exc!r}") from exc

    def _require_client(self) -> httpx.Client:
        if self._client is None or self._stopped:
            raise AirflowHarnessError(
                "the Airflow cluster is not running (use it inside `with AirflowCluster(...)`)"
            )
        return self._client

    def _remaining(self) -> float:
        if self._started_at is None:
            return self.deadline
        return self.deadline - (time.monotonic() - self._started_at)

    def _check_components(self) -> None:
        for comp in self._components:
            if comp.proc is not None and comp.proc.poll() is not None:
                raise AirflowHarnessError(
                    f"Airflow {comp.name} exited with {comp.proc.returncode}; its log: {comp.log_path}"
                )

    def _poll(
        self,
        probe: Callable[[], T | None],
        timeout: float,
        what: str,
        *,
        interval: float = 0.5,
        extra: Callable[[], str] | None = None,
    ) -> T:
        """Call ``probe`` until it returns something other than None, within ``timeout`` and the deadline."""
        budget = min(timeout, self._remaining())
        end = time.monotonic() + max(0.0, budget)
        while True:
            self._check_components()
            result = probe()
            if result is not None:
                return result
            if time.monotonic() >= end:
                cause = "the cluster deadline" if budget < timeout else f"{timeout:.0f} s"
                detail = ""
                if extra is not None:
                    try:
                        detail = "\n" + extra()
                    except Exception as exc:  # the timeout is the error to report
                        detail = f"\n<could not describe the state: {exc}>"
                raise AirflowHarnessError(f"timed out after {cause} waiting for {what}{detail}")
            time.sleep(interval)

    def _import_errors(self) -> list[dict[str, Any]]:
        try:
            return list(self.api("GET", "importErrors", params={"limit": 100})["import_errors"])
        except AirflowHarnessError:
            return []

    def _format_import_errors(self) -> str:
        errors = self._import_errors()
        if not errors:
            return "no import errors reported"
        return "\n".join(f"--- {e.get('filename')} ---\n{e.get('stack_trace', '')}" for e in errors)

    def _stop_processes(self) -> int:
        """Stop the components and every process they spawned; return how many outside their groups."""
        snapshot = self._cluster_processes()
        comps = [c for c in self._components if c.proc is not None]
        # Scheduler first: it should not see the API vanish mid-heartbeat and start failing tasks.
        comps.sort(key=lambda c: c.name != "scheduler")
        groups = {c.proc.pid for c in comps if c.proc is not None}
        # Airflow puts each task process in a process group of its own, out of reach of killpg.
        others = [p for p in snapshot if _pgid(p.pid) not in groups]
        for comp in comps:
            _signal_group(comp, signal.SIGTERM)
        for proc in others:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        end = time.monotonic() + self.stop_grace
        for comp in comps:
            assert comp.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                comp.proc.wait(timeout=max(0.1, end - time.monotonic()))
        psutil.wait_procs(others, timeout=max(0.1, end - time.monotonic()))
        for comp in comps:
            # Also when the leader exited: workers it forked may still be in the group.
            _signal_group(comp, signal.SIGKILL)
            assert comp.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                comp.proc.wait(timeout=5)
        # Whatever is left, including processes spawned while shutting down.
        stragglers = {p.pid: p for p in others if _alive(p)}
        stragglers.update({p.pid: p for p in self._cluster_processes()})
        for proc in stragglers.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(list(stragglers.values()), timeout=5.0)
        return len(others) + len(stragglers)

    def _cluster_processes(self) -> list[psutil.Process]:
        """Find the live processes of this cluster.

        They are the components and their descendants, plus orphans recognised by their working directory
        (the cluster home, which they inherit) or the marker variable. The marker alone is not enough:
        Airflow's ``setproctitle`` overwrites the memory that ``/proc/<pid>/environ`` shows.
        """
        found: dict[int, psutil.Process] = {}
        for comp in self._components:
            if comp.proc is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(comp.proc.pid)
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
        home = str(self.home) if self.home is not None else None
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me or proc.pid in found:
                continue
            try:
                cwd = proc.cwd().removesuffix(" (deleted)")
                if (home is not None and (cwd == home or cwd.startswith(home + os.sep))) or (
                    proc.environ().get(MARKER_ENV) == self.cluster_id
                ):
                    found[proc.pid] = proc
            except (psutil.Error, OSError):
                continue
        return [proc for proc in found.values() if _alive(proc)]


def _alive(proc: psutil.Process) -> bool:
    """Tell whether a process still runs (a zombie waiting to be reaped does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_group(comp: _Component, sig: signal.Signals) -> None:
    if comp.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(comp.proc.pid, sig)


def _render_log_event(event: Any) -> str:
    """Render one entry of the log API's ``content`` (a structured event, or a raw line) as text."""
    if not isinstance(event, dict):
        return str(event)
    fields = dict(event)
    head = " ".join(
        str(part)
        for part in (fields.pop("timestamp", ""), fields.pop("level", ""), fields.pop("logger", ""))
        if part
    )
    text = f"{head} {fields.pop('event', '')}".strip()
    details = fields.pop("error_detail", None)
    # Source locations and the task identity repeated on every line only bury the message.
    for noisy in _LOG_NOISE_KEYS:
        fields.pop(noisy, None)
    if fields:
        text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
    for exc in details or []:
        if not isinstance(exc, dict):
            continue
        text += f"\n  {exc.get('exc_type')}: {exc.get('exc_value')}"
        for frame in (exc.get("frames") or [])[-5:]:
            text += f"\n    {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}"
    return text
