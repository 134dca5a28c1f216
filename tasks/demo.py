"""The end-to-end demo (``make demo``): the whole lifelong loop on embedded defaults, driven through Airflow.

It simulates telemetry with drift into the lake, bootstraps the first model, scores the hours with the
``telemetry_scoring`` DAG, lets the simulated analyst team file labels from the ground truth, runs
``lifelong_unlearning`` (promoted), then a destructive run forced through params (rejected by the gate),
quarantines a bad batch, and measures production before and after on the hours that follow.

Each DAG runs with Airflow's ``dag.test()`` against a SQLite metadata DB under ``LIFELONG_HOME/airflow``:
no server needed. This module is the one place outside ``dags/`` that imports Airflow, and only inside
functions, after ``AIRFLOW_HOME`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
START = datetime(2026, 1, 5, 0, tzinfo=UTC)  # a fixed past day: the demo is reproducible


@dataclass
class DemoConfig:
    """Sizes of the demo loop (defaults finish in a few minutes on 2 cores)."""

    home: Path = Path("var")
    stream: str = "events"
    kind: str = "events"
    hours_before: int = 6  # scored with the bootstrapped model, then labelled
    hours_after: int = 3  # scored after the promotion: the "following intervals"
    sessions_per_hour: int = 250
    drift_from_hour: int = 2
    epochs: int = 6
    seed: int = 0
    fresh: bool = True


@dataclass
class DemoResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def prepare_airflow(home: Path) -> None:
    """Point Airflow at the project's DAGs and a SQLite DB under ``home``; migrate it once."""
    airflow_home = (home / "airflow").resolve()
    airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(airflow_home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["LIFELONG_HOME"] = str(home.resolve())
    if not (airflow_home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


def load_dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags


def run_dag(dag: Any, *, logical_date: datetime | None = None, conf: dict | None = None) -> tuple[str, dict]:
    """Run one DAG with ``dag.test()``; return (state, {task_id[map_index]: return value or state})."""
    from airflow.utils.session import create_session

    dr = dag.test(logical_date=logical_date, run_conf=conf or {})
    out: dict[str, Any] = {}
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=dr.run_id).all()
        for ti in tis:
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            value = (
                session.query(XComModel.value)
                .filter_by(
                    dag_id=dag.dag_id, run_id=dr.run_id, task_id=ti.task_id, map_index=ti.map_index, key="return_value"
                )
                .scalar()
            )
            if isinstance(value, str) and value[:1] in "{[":
                value = json.loads(value)
            out[key] = value if value is not None else str(getattr(ti.state, "value", ti.state))
    state = str(getattr(dr.state, "value", dr.state))
    return state, out


def score_hour(dags: dict, hour: datetime) -> tuple[str, dict]:
    # The scoring DAG's data intervals end at its run time: the run at hour + 1 h scores [hour, hour + 1 h).
    return run_dag(dags["telemetry_scoring"], logical_date=hour + timedelta(hours=1))


def mistakes(settings: Any, version: str, start: datetime, end: datetime) -> dict[str, int]:
    """FP and FN a registry version makes on the simulated hours [start, end), against the ground truth."""
    import numpy as np

    from lifelong.models.base import Detector
    from lifelong.simulation import read_truth
    from lifelong.stores.lake import TelemetryLake
    from lifelong.stores.registry import ModelRegistry
    from lifelong.telemetry import events_to_sessions

    reg = ModelRegistry.from_settings(settings)
    loaded = reg.load_version(settings.resolved_model_name, version)
    det = Detector.from_artifacts(loaded.weights, loaded.config)
    lake = TelemetryLake.from_settings(settings)
    truth = read_truth(settings, settings.stream, start, end).set_index("entity_id")["abnormal"]
    import pandas as pd

    frames = [df for f in lake.list_interval_files(settings.stream, start, end) for df in lake.read_file_chunks(f)]
    sessions = events_to_sessions(pd.concat(frames, ignore_index=True))
    ids = [i for i in sessions if i in truth.index]
    flags = det.decide([sessions[i] for i in ids])
    abnormal = truth.loc[ids].to_numpy(dtype=bool)
    return {
        "fp": int((flags & ~abnormal).sum()),
        "fn": int((~flags & abnormal).sum()),
        "n": len(ids),
        "abnormal": int(abnormal.sum()),
        "flagged": int(np.sum(flags)),
    }


def land_bad_batch(settings: Any, hour: datetime) -> str:
    """A corrupted delivery: null entity ids and negative event keys, as a bad producer might send."""
    import pandas as pd

    from lifelong.stores.lake import TelemetryLake

    bad = pd.DataFrame(
        {
            "entity_id": ["bad-1", None, "bad-2", "bad-2"],
            "timestamp": [hour + timedelta(minutes=m) for m in (1, 2, 3, 4)],
            "event_key": [3, 4, -7, 5],
            "seq": [0, 0, 0, 1],
        }
    )
    return TelemetryLake.from_settings(settings).write_raw(settings.stream, hour, bad, "bad-delivery", fmt="parquet")


def run_demo(cfg: DemoConfig, say: Any = print) -> DemoResult:
    """Run the whole loop; ``say`` receives one progress line per step."""
    if cfg.fresh and cfg.home.exists():
        for sub in ("lake", "registry", "labels.db", "airflow", "reports"):
            target = cfg.home / sub
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    os.environ["LIFELONG_STREAM"] = cfg.stream
    os.environ["LIFELONG_STREAM_KIND"] = cfg.kind
    os.environ["LIFELONG_SEED"] = str(cfg.seed)
    os.environ.setdefault("LIFELONG_TORCH_THREADS", "1")  # the demo shares the machine with Airflow's own work
    prepare_airflow(cfg.home)
    from lifelong.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    result = DemoResult()
    t_all = time.perf_counter()

    def step(name: str, **info: Any) -> None:
        info["elapsed_s"] = round(time.perf_counter() - t_all, 1)
        result.steps.append({"step": name, **info})
        say(
            f"[{info['elapsed_s']:6.1f}s] {name}: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "elapsed_s")
        )

    from lifelong.simulation import file_labels_from_truth, simulate

    n_hours = cfg.hours_before + cfg.hours_after
    hours = simulate(
        settings,
        stream=cfg.stream,
        kind=cfg.kind,
        hours=n_hours,
        start=START,
        seed=cfg.seed,
        sessions_per_hour=cfg.sessions_per_hour,
        drift_from_hour=cfg.drift_from_hour,
    )
    step(
        "simulate",
        hours=len(hours),
        sessions=sum(h.n for h in hours),
        anomalies=sum(h.n_abnormal for h in hours),
        drift=sum(h.n_drift for h in hours),
    )

    dags = load_dags()
    state, out = run_dag(dags["bootstrap_model"], conf={"source": "synthetic", "epochs": cfg.epochs})
    boot = out.get("bootstrap", {})
    step("bootstrap_model", state=state, decision=boot.get("decision"), version=str(boot.get("version"))[:12])
    v0 = boot["version"]

    before_end = START + timedelta(hours=cfg.hours_before)
    alerts = 0
    for h in range(cfg.hours_before):
        state, out = score_hour(dags, START + timedelta(hours=h))
        pub = out.get("publish", {})
        alerts += pub.get("new_alerts", 0) if isinstance(pub, dict) else 0
        step(f"telemetry_scoring hour {h}", state=state, scored=pub.get("scored"), flagged=pub.get("flagged"))
    labels = file_labels_from_truth(settings, stream=cfg.stream, start=START, end=before_end)
    step("analysts file labels from ground truth", fp=labels.fp, fn=labels.fn)

    state, out = run_dag(dags["lifelong_unlearning"], conf={"reason": "demo: nightly run"})
    promo = out.get("promote", {})
    evaluation = out.get("evaluate", {})
    step(
        "lifelong_unlearning",
        state=state,
        decision=promo.get("decision"),
        version=str(promo.get("version"))[:12],
        gate=evaluation.get("reason"),
    )
    v1 = promo.get("version") if promo.get("decision") == "promoted" else v0

    after_start, after_end = before_end, before_end + timedelta(hours=cfg.hours_after)
    for h in range(cfg.hours_before, n_hours):
        state, out = score_hour(dags, START + timedelta(hours=h))
        pub = out.get("publish", {})
        step(f"telemetry_scoring hour {h}", state=state, scored=pub.get("scored"), flagged=pub.get("flagged"))
    old = mistakes(settings, v0, after_start, after_end)
    new = mistakes(settings, v1, after_start, after_end)
    step(
        "following hours: bootstrap vs promoted model",
        bootstrap_fp_fn=f"{old['fp']}/{old['fn']}",
        promoted_fp_fn=f"{new['fp']}/{new['fn']}",
    )

    labels2 = file_labels_from_truth(settings, stream=cfg.stream, start=after_start, end=after_end)
    state, out = run_dag(
        dags["lifelong_unlearning"],
        conf={
            "reason": "demo: destructive update forced through params",
            "lam": 0.0,
            "lr": 5.0,
            "guard_units": 0,
            "force": True,
        },
    )
    bad_promo = out.get("promote", {})
    step(
        "destructive unlearning (lam 0, lr 5, no guard)",
        state=state,
        decision=bad_promo.get("decision"),
        gate=out.get("evaluate", {}).get("reason"),
        labels=labels2.fp + labels2.fn,
    )

    bad_hour = START + timedelta(hours=n_hours)
    land_bad_batch(settings, bad_hour)
    state, out = score_hour(dags, bad_hour)
    from lifelong.stores.lake import TelemetryLake

    quarantined = TelemetryLake.from_settings(settings).list_quarantine(cfg.stream)
    step("bad batch", state=state, quarantined=len(quarantined))

    from lifelong.stores.labels import LabelStore
    from lifelong.stores.registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    pointer = reg.production(settings.resolved_model_name)
    with LabelStore.from_settings(settings) as store:
        n_alerts = len(store.list_alerts(stream=cfg.stream, limit=100000))
        n_labels = len(store.list_labels(stream=cfg.stream))
    report_dir = cfg.home / "reports" / (str(v1)[:12])
    if v1 != v0:
        from lifelong.reports import report_file_names, write_report

        names = report_file_names(list(reg.get_manifest(settings.resolved_model_name, v1).get("files", {})))
        write_report({n: reg.get_file(settings.resolved_model_name, v1, n) for n in names}, report_dir)
    audit = reg.audit(settings.resolved_model_name)
    result.summary = {
        "intervals_scored": n_hours + 1,
        "alerts": n_alerts,
        "labels": n_labels,
        "bootstrap_version": v0,
        "production_version": pointer.version if pointer else None,
        "gate_metrics": evaluation.get("metrics"),
        "gate_decision": promo.get("decision"),
        "destructive_run_decision": bad_promo.get("decision"),
        "following_hours_bootstrap": old,
        "following_hours_promoted": new,
        "quarantined_files": [q.path for q in quarantined],
        "audit_records": [f"{a.decision} {str(a.to_version or a.from_version)[:12]} ({a.reason})" for a in audit],
        "audit_location": f"{settings.resolved_registry_url}/audit/{settings.resolved_model_name}/",
        "report": str((report_dir / "index.html").resolve()) if v1 != v0 else None,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("LIFELONG_HOME", "var"))
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the state of an earlier demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = DemoConfig(home=Path(args.home), fresh=not args.keep)
    result = run_demo(cfg)
    print(json.dumps(result.summary, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"steps": result.steps, "summary": result.summary}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
