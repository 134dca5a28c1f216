"""Fixtures of the DAG tests: an isolated ``AIRFLOW_HOME``, the parsed DagBag, and parsing in a fresh process.

Airflow reads its configuration once, when ``airflow`` is first imported, so the environment is set here at
import time (pytest imports a folder's conftest before its test modules). When another test folder imported
Airflow earlier in the same session, the settings it was imported with stay; parsing the DAG folder needs no
metadata database, so the in-process tests hold either way, and everything that depends on the environment
(parse-time settings, imported modules, timings) runs in a fresh subprocess with an environment of its own.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

# Parse-time settings the DAG files read (tasks/runner.py `env`); scrubbed so a developer's shell cannot
# change what the structure tests see.
PARSE_TIME_VARS = ("LIFELONG_SCORING_SCHEDULE", "LIFELONG_SCORING_CATCHUP", "LIFELONG_UNLEARNING_SCHEDULE")


def _isolate_airflow_home() -> None:
    if "airflow" in sys.modules:
        return  # configured already by an earlier import; see the module docstring
    home = tempfile.mkdtemp(prefix="lifelong-test-airflow-")
    atexit.register(shutil.rmtree, home, True)
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


_isolate_airflow_home()


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """The project's DAG folder parsed by Airflow's own DagBag (with the parse-time variables unset)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        for name in PARSE_TIME_VARS:
            mp.delenv(name, raising=False)
        return DagBag(str(DAGS))


@pytest.fixture(scope="session")
def dags(dagbag: Any) -> dict[str, Any]:
    """DAG id -> DAG, failing loudly when a file did not import."""
    assert not dagbag.import_errors, f"DAG import errors: {dagbag.import_errors}"
    return dict(dagbag.dags)


# A script run in a fresh interpreter: parse the DAG folder, report as JSON into the file named by argv[1].
_PARSE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    HEAVY = {heavy!r}
    t0 = time.perf_counter()
    import airflow  # noqa: F401  (its own import cost is not the DAG files' cost)
    from airflow.dag_processing.dagbag import DagBag
    airflow_import_s = time.perf_counter() - t0
    heavy_before = sorted(m for m in HEAVY if m in sys.modules)

    # Parsing must not fetch a connection or a variable: any attempt is recorded (and fails the test).
    calls = []
    def _refuse(what):
        def fetch(*args, **kwargs):
            calls.append(what + repr(args[-1:]))
            raise RuntimeError(what + " fetched at parse time")
        return fetch
    import airflow.sdk as sdk
    for owner, name in ((sdk.BaseHook, "get_connection"), (sdk.Connection, "get"), (sdk.Variable, "get")):
        setattr(owner, name, staticmethod(_refuse(owner.__name__ + "." + name)))

    t1 = time.perf_counter()
    bag = DagBag({dags!r})
    parse_s = time.perf_counter() - t1
    {extra}
    out = {{
        "airflow_import_s": airflow_import_s,
        "parse_s": parse_s,
        "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
        "dag_ids": sorted(bag.dag_ids),
        "stats": [
            {{"file": s.file, "seconds": s.duration.total_seconds(), "dags": s.dag_num, "tasks": s.task_num}}
            for s in bag.dagbag_stats
        ],
        "heavy_before": heavy_before,
        "heavy_after": sorted(m for m in HEAVY if m in sys.modules),
        "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("lifelong", "tasks")),
        "fetches": calls,
        "extra": extra,
    }}
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, default=str)
    """
)

HEAVY_MODULES = (
    "torch",
    "pandas",
    "great_expectations",
    "sklearn",
    "pyarrow",
    "boto3",
    "s3fs",
    "matplotlib",
    "safetensors",
)


@pytest.fixture
def parse_in_subprocess(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Parse the DAG folder in a fresh interpreter with a clean environment; return what it saw.

    Call it as ``parse_in_subprocess(env={...}, extra="...")``: ``env`` adds variables to a scrubbed
    environment (no ``LIFELONG_*``, an empty ``AIRFLOW_HOME`` whose metadata DB cannot exist), ``extra`` is
    Python run after parsing with ``bag`` in scope that may set ``extra = {...}`` (JSON-able) to return.
    """
    counter = iter(range(1000))

    def run(env: dict[str, str] | None = None, extra: str = "extra = None") -> dict[str, Any]:
        n = next(counter)
        home = tmp_path / f"airflow-home-{n}"
        home.mkdir()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIFELONG_", "AIRFLOW"))}
        clean.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                # A metadata DB that cannot be opened: parsing must not need one.
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/no-such-dir/airflow.db",
                "PYTHONPATH": str(REPO),
            }
        )
        clean.update(env or {})
        script = tmp_path / f"parse_{n}.py"
        script.write_text(
            _PARSE_SCRIPT.format(heavy=HEAVY_MODULES, dags=str(DAGS), extra=textwrap.dedent(extra).strip())
        )
        result = tmp_path / f"parse_{n}.json"
        proc = subprocess.run(
            [sys.executable, str(script), str(result)],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0 and result.exists(), (
            f"parsing subprocess failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return json.loads(result.read_text())

    return run
