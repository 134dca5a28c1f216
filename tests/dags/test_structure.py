"""What each DAG wires: tasks and dependencies, schedules, retries, pools, assets, params and their validation."""

from __future__ import annotations

import ast
import importlib
import inspect
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lifelong.constants import (
    ASSET_MODEL,
    ASSET_SCORES,
    DAG_BOOTSTRAP,
    DAG_SCORING,
    DAG_UNLEARNING,
    POOL_UNLEARNING,
    QUEUE_UNLEARNING,
)

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = {
    DAG_SCORING: "telemetry_scoring.py",
    DAG_UNLEARNING: "lifelong_unlearning.py",
    DAG_BOOTSTRAP: "bootstrap_model.py",
}


def edges(dag: Any) -> set[tuple[str, str]]:
    return {(t.task_id, down) for t in dag.tasks for down in t.downstream_task_ids}


def serialized(dag: Any) -> Any:
    """The DAG as the scheduler and API server see it (what the DAG processor stores)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def resolve_conf(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """Validate a trigger's conf the way the API server does when it creates a run (raises on bad input)."""
    return serialized(dag).params.deep_merge(conf).validate()


# --- common to every DAG ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dag_id", sorted(DAG_FILES))
def test_every_dag_has_the_house_defaults(dags: dict[str, Any], dag_id: str) -> None:
    dag = dags[dag_id]
    assert dag.catchup is False
    assert "lifelong" in dag.tags and len(dag.tags) >= 2
    assert dag.start_date is not None and dag.start_date.utcoffset() == timedelta(0)
    assert dag.default_args["owner"] == "ml-ops"
    assert dag.default_args["retries"] >= 1
    assert dag.default_args["retry_delay"] > timedelta(0)
    assert dag.default_args["retry_exponential_backoff"] is True
    for task in dag.tasks:
        # A hung task must not hold a worker slot (or the unlearning pool's single slot) forever.
        assert task.execution_timeout is not None and task.execution_timeout > timedelta(0), task.task_id
        assert task.retries >= 1, task.task_id


@pytest.mark.parametrize("dag_id", sorted(DAG_FILES))
def test_every_dag_serializes_for_the_scheduler(dags: dict[str, Any], dag_id: str) -> None:
    ser = serialized(dags[dag_id])
    assert ser.dag_id == dag_id
    assert {t.task_id for t in ser.tasks} == {t.task_id for t in dags[dag_id].tasks}
    assert ser.params.validate() is not None  # the defaults are valid


# --- telemetry_scoring ------------------------------------------------------------------------------------
def test_scoring_wires_ingest_validate_shards_score_publish(dags: dict[str, Any]) -> None:
    dag = dags[DAG_SCORING]
    assert set(dag.task_ids) == {"ingest", "validate", "shards", "score", "publish"}
    assert edges(dag) == {
        ("ingest", "validate"),
        ("validate", "shards"),
        ("shards", "score"),
        ("score", "publish"),
    }


def test_scoring_maps_score_over_the_shards(dags: dict[str, Any]) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dags[DAG_SCORING]
    score = dag.get_task("score")
    assert isinstance(score, MappedOperator)  # one task instance per file (dynamic task mapping)
    assert not isinstance(dag.get_task("publish"), MappedOperator)
    assert score.retries == 3  # a store or network blip while scoring is retried more than the rest


def test_scoring_publish_updates_the_scores_asset(dags: dict[str, Any]) -> None:
    from airflow.sdk import Asset

    dag = dags[DAG_SCORING]
    assert dag.get_task("publish").outlets == [Asset(ASSET_SCORES)]
    assert all(not dag.get_task(t).outlets for t in ("ingest", "validate", "shards", "score"))


def test_scoring_schedule_is_hourly_with_data_intervals(dags: dict[str, Any]) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    dag = dags[DAG_SCORING]
    # Data-interval semantics: the run at 10:00 scores [09:00, 10:00) (a plain cron string would not).
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 * * * *"
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.max_active_runs == 4
    assert dag.default_args["execution_timeout"] == timedelta(minutes=20)


# --- lifelong_unlearning ----------------------------------------------------------------------------------
def test_unlearning_wires_pull_unlearn_evaluate_promote_and_cleanup(dags: dict[str, Any]) -> None:
    from airflow.providers.standard.operators.python import ShortCircuitOperator
    from airflow.sdk import TriggerRule

    dag = dags[DAG_UNLEARNING]
    assert set(dag.task_ids) == {"pull_labels", "unlearn", "evaluate", "promote", "release_on_failure"}
    assert edges(dag) == {
        ("pull_labels", "unlearn"),
        ("unlearn", "evaluate"),
        ("evaluate", "promote"),
        ("unlearn", "release_on_failure"),
        ("evaluate", "release_on_failure"),
        ("promote", "release_on_failure"),
    }
    assert isinstance(dag.get_task("pull_labels"), ShortCircuitOperator)  # too few labels: skip the rest
    release = dag.get_task("release_on_failure")
    assert release.trigger_rule == TriggerRule.ONE_FAILED
    for task_id in ("pull_labels", "unlearn", "evaluate", "promote"):
        assert dag.get_task(task_id).trigger_rule == TriggerRule.ALL_SUCCESS


def test_unlearning_runs_alone_in_its_pool_and_queue(dags: dict[str, Any]) -> None:
    from airflow.sdk import Asset

    dag = dags[DAG_UNLEARNING]
    assert dag.max_active_runs == 1
    unlearn = dag.get_task("unlearn")
    assert (unlearn.pool, unlearn.queue) == (POOL_UNLEARNING, QUEUE_UNLEARNING)
    assert unlearn.execution_timeout == timedelta(hours=2)
    for task_id in ("pull_labels", "evaluate", "promote", "release_on_failure"):
        assert dag.get_task(task_id).pool != POOL_UNLEARNING, task_id
    assert dag.get_task("promote").outlets == [Asset(ASSET_MODEL)]


def test_unlearning_schedule_is_nightly(dags: dict[str, Any]) -> None:
    from airflow.sdk import CronTriggerTimetable

    dag = dags[DAG_UNLEARNING]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 2 * * *"


UNLEARNING_PARAMS = {
    "min_errors",
    "force",
    "dry_run",
    "max_steps",
    "max_seconds",
    "incident",
    "reason",
    "lam",
    "lr",
    "guard_units",
    "fp_tolerance",
    "min_fix_rate",
    "max_regressions",
}


def test_unlearning_params_have_titles_descriptions_and_defaults(dags: dict[str, Any]) -> None:
    params = dags[DAG_UNLEARNING].params
    assert set(params.keys()) == UNLEARNING_PARAMS
    for name in params.keys():
        param = params.get_param(name)
        assert param.schema.get("title"), name
        assert param.description, name
        assert "type" in param.schema, name
    assert params["force"] is False and params["dry_run"] is False
    # None means "the deployment setting" (LIFELONG_*), so a trigger without conf changes nothing.
    for name in ("min_errors", "max_steps", "max_seconds", "lam", "lr", "guard_units", "fp_tolerance", "min_fix_rate"):
        assert params[name] is None, name


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"min_errors": 1, "force": True},
        {"dry_run": True, "max_steps": 50, "max_seconds": 0.5, "reason": "incident review"},
        {"incident": "INC-42", "lam": 0.0, "lr": 5.0, "guard_units": 0},
        {"fp_tolerance": 0.0, "min_fix_rate": 1.0, "max_regressions": 0},
        {"min_errors": None, "max_steps": None, "incident": None},
    ],
)
def test_unlearning_accepts_valid_conf(dags: dict[str, Any], conf: dict[str, Any]) -> None:
    resolved = resolve_conf(dags[DAG_UNLEARNING], conf)
    assert set(resolved) == UNLEARNING_PARAMS
    for name, value in conf.items():
        assert resolved[name] == value


@pytest.mark.parametrize(
    "conf",
    [
        {"max_steps": 0},
        {"max_steps": 2.5},
        {"max_steps": True},
        {"max_steps": 100001},
        {"min_errors": "x"},
        {"min_errors": 0},
        {"dry_run": "maybe"},
        {"force": 1},
        {"max_seconds": 0},
        {"max_seconds": -3},
        {"lr": 0},
        {"lam": -1.0},
        {"guard_units": -1},
        {"fp_tolerance": 1.5},
        {"min_fix_rate": -0.1},
        {"max_regressions": -1},
        {"incident": 42},
        {"incident": "x" * 201},
        {"reason": "x" * 501},
    ],
    ids=lambda c: "-".join(f"{k}={str(v)[:8]}" for k, v in c.items()),
)
def test_unlearning_refuses_invalid_conf(dags: dict[str, Any], conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    (name,) = conf
    with pytest.raises(ParamValidationError, match=f"param {name}"):
        resolve_conf(dags[DAG_UNLEARNING], conf)


# --- bootstrap_model --------------------------------------------------------------------------------------
def test_bootstrap_is_manual_and_promotes_the_model_asset(dags: dict[str, Any]) -> None:
    from airflow.sdk import Asset

    dag = dags[DAG_BOOTSTRAP]
    assert dag.schedule is None
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.max_active_runs == 1
    assert dag.task_ids == ["bootstrap"]
    task = dag.get_task("bootstrap")
    # Training shares the unlearning pool: one model-changing job at a time, on the same workers.
    assert (task.pool, task.queue) == (POOL_UNLEARNING, QUEUE_UNLEARNING)
    assert task.outlets == [Asset(ASSET_MODEL)]


def test_bootstrap_params(dags: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dags[DAG_BOOTSTRAP]
    params = dag.params
    assert set(params.keys()) == {
        "source",
        "train_start",
        "train_end",
        "heldout_fraction",
        "epochs",
        "tp",
        "max_fp_rate",
        "force",
        "reason",
    }
    for name in params.keys():
        assert params.get_param(name).schema.get("title") and params.get_param(name).description, name
    assert params["source"] == "synthetic" and params["force"] is False
    ok = resolve_conf(
        dag,
        {"source": "lake", "train_start": "2026-01-05T00:00:00+00:00", "train_end": "2026-01-05T06:00:00+00:00"},
    )
    assert ok["source"] == "lake"
    assert resolve_conf(dag, {"epochs": 2, "tp": 0.001, "heldout_fraction": 0.5})["epochs"] == 2
    for bad in ({"source": ""}, {"heldout_fraction": 0}, {"heldout_fraction": 0.7}, {"epochs": 0}, {"tp": 1}):
        with pytest.raises(ParamValidationError):
            resolve_conf(dag, bad)


# --- the DAG files and the steps they call agree ----------------------------------------------------------
def _task_functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any("task" in ast.unparse(d) for d in node.decorator_list)
    ]


@pytest.mark.parametrize("dag_id", sorted(DAG_FILES))
def test_tasks_read_only_declared_params(dags: dict[str, Any], dag_id: str) -> None:
    declared = set(dags[dag_id].params.keys())
    read = {
        node.slice.value
        for fn in _task_functions(REPO / "dags" / DAG_FILES[dag_id])
        for node in ast.walk(fn)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "params"
        and isinstance(node.slice, ast.Constant)
    }
    assert read <= declared, f"{dag_id} tasks read undeclared params {read - declared}"
    # Every declared param does something (none is silently ignored).
    assert declared <= read, f"{dag_id} declares params no task reads: {declared - read}"


def _step_calls(path: Path) -> list[tuple[str, Any, set[str]]]:
    """(task name, step function, keywords passed) of every ``run_step(step, ...)`` in a DAG file."""
    calls = []
    for fn in _task_functions(path):
        imported: dict[str, tuple[str, str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tasks."):
                for alias in node.names:
                    imported[alias.asname or alias.name] = (node.module, alias.name)
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run_step":
                target = node.args[0]
                assert isinstance(target, ast.Name) and target.id in imported, ast.unparse(node)
                module, name = imported[target.id]
                step = getattr(importlib.import_module(module), name)
                calls.append((fn.name, step, {kw.arg for kw in node.keywords if kw.arg}))
    return calls


@pytest.mark.parametrize("dag_id", sorted(DAG_FILES))
def test_tasks_call_their_steps_with_matching_keywords(dag_id: str) -> None:
    calls = _step_calls(REPO / "dags" / DAG_FILES[dag_id])
    assert calls, dag_id
    for task_name, step, passed in calls:
        signature = inspect.signature(step)
        accepted = set(signature.parameters) - {"settings"}  # run_step passes the process settings
        required = {
            name
            for name, p in signature.parameters.items()
            if p.default is inspect.Parameter.empty and name != "settings"
        }
        assert passed <= accepted, f"{dag_id}.{task_name} passes {passed - accepted} to {step.__name__}"
        assert required <= passed, f"{dag_id}.{task_name} misses {required - passed} of {step.__name__}"


# --- parse-time settings ----------------------------------------------------------------------------------
_TIMETABLES = """
extra = {
    dag_id: {
        "timetable": type(dag.timetable).__name__,
        "expression": getattr(dag.timetable, "expression", None),
        "catchup": dag.catchup,
    }
    for dag_id, dag in bag.dags.items()
}
"""


def test_schedules_honour_parse_time_environment(parse_in_subprocess: Any) -> None:
    seen = parse_in_subprocess(
        env={
            "LIFELONG_SCORING_SCHEDULE": "*/15 * * * *",
            "LIFELONG_SCORING_CATCHUP": "true",
            "LIFELONG_UNLEARNING_SCHEDULE": "30 3 * * 1-5",
        },
        extra=_TIMETABLES,
    )
    assert seen["import_errors"] == {}
    got = seen["extra"]
    assert got[DAG_SCORING] == {"timetable": "CronDataIntervalTimetable", "expression": "*/15 * * * *", "catchup": True}
    assert got[DAG_UNLEARNING] == {"timetable": "CronTriggerTimetable", "expression": "30 3 * * 1-5", "catchup": False}
    assert got[DAG_BOOTSTRAP]["timetable"] == "NullTimetable"


def test_defaults_without_environment(parse_in_subprocess: Any) -> None:
    got = parse_in_subprocess(extra=_TIMETABLES)["extra"]
    assert got[DAG_SCORING] == {"timetable": "CronDataIntervalTimetable", "expression": "0 * * * *", "catchup": False}
    assert got[DAG_UNLEARNING]["expression"] == "0 2 * * *"


def test_a_bad_schedule_fails_its_dag_file_loudly(parse_in_subprocess: Any) -> None:
    seen = parse_in_subprocess(
        env={"LIFELONG_SCORING_SCHEDULE": "0 * * *", "LIFELONG_UNLEARNING_SCHEDULE": "61 2 * * *"}
    )
    errors = {Path(path).name: text for path, text in seen["import_errors"].items()}
    assert set(errors) == {"telemetry_scoring.py", "lifelong_unlearning.py"}
    assert "61 2 * * *" in errors["lifelong_unlearning.py"]
    assert seen["dag_ids"] == [DAG_BOOTSTRAP]  # the other DAGs still load
