"""The whole lifelong loop through Airflow (``make demo``): bootstrap, hourly scoring, labels, a promoted
unlearning run, a destructive run the gate rejects, a quarantined bad batch, and an idempotent rerun.

The demo runs as a subprocess (``python -m tasks.demo``), exactly as ``make demo`` does: Airflow reads its
configuration when first imported, so a fresh process with its own ``AIRFLOW_HOME`` is the only robust way to
drive ``dag.test()`` from a test session that may have imported Airflow already. About 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 900


def _env(home: Path) -> dict[str, str]:
    """The caller's environment without its LIFELONG_* / AIRFLOW* settings: the demo sets its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFELONG_", "AIRFLOW"))}
    env.update(
        {
            "LIFELONG_HOME": str(home),
            "LIFELONG_TORCH_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def _run(args: list[str], home: Path, log: Path) -> None:
    proc = subprocess.run(args, cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    log.write_text(f"$ {' '.join(args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    assert proc.returncode == 0, f"{args[2:]} failed (rc {proc.returncode}); log in {log}:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the demo once; return its JSON ({"steps": [...], "summary": {...}}) and where it ran."""
    root = tmp_path_factory.mktemp("demo")
    home, out = root / "home", root / "demo.json"
    _run([sys.executable, "-m", "tasks.demo", "--home", str(home), "--json", str(out)], home, root / "demo.log")
    result = json.loads(out.read_text())
    result["home"] = home
    result["root"] = root
    return result


def _step(demo: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [s for s in demo["steps"] if s["step"] == name]
    assert len(matches) == 1, f"step {name!r} not in {[s['step'] for s in demo['steps']]}"
    return matches[0]


def test_bootstrap_and_hourly_scoring(demo: dict[str, Any]) -> None:
    summary = demo["summary"]
    boot = _step(demo, "bootstrap_model")
    assert (boot["state"], boot["decision"]) == ("success", "promoted")
    assert summary["bootstrap_version"].startswith(boot["version"])
    scoring = [s for s in demo["steps"] if s["step"].startswith("telemetry_scoring hour")]
    assert len(scoring) == summary["intervals_scored"] - 1  # the last interval is the bad batch
    assert all(s["state"] == "success" and s["scored"] > 0 for s in scoring), scoring
    assert summary["alerts"] > 0 and summary["labels"] > 0


def test_the_nightly_run_is_promoted_and_makes_fewer_mistakes(demo: dict[str, Any]) -> None:
    summary = demo["summary"]
    assert summary["gate_decision"] == "promoted", json.dumps(summary, indent=2)
    assert _step(demo, "lifelong_unlearning")["state"] == "success"
    metrics = summary["gate_metrics"]
    assert metrics["fix_rate"] >= 0.8 and metrics["regressions"] == 0 and metrics["params_finite"] is True
    assert metrics["fp_rate_candidate"] <= metrics["fp_rate_production"] + 0.01
    before, after = summary["following_hours_bootstrap"], summary["following_hours_promoted"]
    assert before["n"] == after["n"] > 0
    assert after["fp"] + after["fn"] < before["fp"] + before["fn"], (before, after)
    assert after["fp"] < before["fp"]  # the drift it was taught is no longer flagged
    assert summary["report"] and Path(summary["report"]).is_file()


def test_the_destructive_run_is_rejected_and_production_is_unchanged(demo: dict[str, Any]) -> None:
    summary = demo["summary"]
    assert summary["destructive_run_decision"] == "rejected", json.dumps(summary, indent=2)
    step = _step(demo, "destructive unlearning (lam 0, lr 5, no guard)")
    assert step["state"] == "success"  # a rejection is an outcome, not a failed run
    assert step["gate"].startswith(("failed:", "no candidate:")), step
    promoted = [a for a in summary["audit_records"] if a.startswith("promoted")]
    assert len(promoted) == 2  # the bootstrap and the nightly run
    assert summary["production_version"] != summary["bootstrap_version"]
    assert promoted[-1].split()[1] == summary["production_version"][:12]


def test_the_bad_batch_is_quarantined_and_fails_its_run(demo: dict[str, Any]) -> None:
    summary = demo["summary"]
    step = _step(demo, "bad batch")
    assert step["state"] == "failed" and step["quarantined"] == 1
    (path,) = summary["quarantined_files"]
    assert path.startswith("quarantine/events/") and path.endswith("/bad-delivery.parquet")
    lake = demo["home"] / "lake"
    assert (lake / path).is_file()
    assert any(p.name.startswith("bad-delivery.parquet") and p != lake / path for p in (lake / path).parent.iterdir())


def test_every_decision_is_audited(demo: dict[str, Any]) -> None:
    records = demo["summary"]["audit_records"]
    decisions = [r.split()[0] for r in records]
    assert decisions == ["promoted", "promoted", "rejected"], records
    assert "destructive" in records[-1]
    audit_dir = Path(demo["summary"]["audit_location"])
    assert len(list(audit_dir.glob("*.json"))) == 3


_RERUN = textwrap.dedent(
    """
    import json, sys
    from datetime import timedelta
    from pathlib import Path

    from tasks.demo import START, DemoConfig, load_dags, prepare_airflow, score_hour

    home, out, hour = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    prepare_airflow(home)  # the demo's AIRFLOW_HOME and SQLite DB, already migrated

    from lifelong.settings import get_settings
    from lifelong.stores.labels import LabelStore
    from lifelong.stores.lake import TelemetryLake

    settings = get_settings()
    start = START + timedelta(hours=hour)
    lake = TelemetryLake.from_settings(settings)

    def snapshot():
        with LabelStore.from_settings(settings) as store:
            alerts = store.list_alerts(stream=settings.stream, limit=None)
        scores = lake.read_scores(settings.stream, start, start + timedelta(hours=1))
        scores = scores.sort_values("entity_id").reset_index(drop=True)
        return len(alerts), scores[["entity_id", "score", "abnormal", "model_version"]].to_json()

    n_before, scores_before = snapshot()
    state, result = score_hour(load_dags(), start)
    n_after, scores_after = snapshot()
    out.write_text(json.dumps({
        "state": state, "publish": result.get("publish"), "alerts_before": n_before, "alerts_after": n_after,
        "same_scores": scores_before == scores_after,
    }))
    """
)


def test_rerunning_a_scored_hour_changes_nothing(demo: dict[str, Any]) -> None:
    # The last hour of the demo was scored by the model that still serves (the destructive run was rejected),
    # so a rerun must rewrite the same scores and add no alert. (An hour scored by an older model may gain
    # alerts on a rerun, legitimately: the promoted model flags anomalies the bootstrap model had missed.)
    last_hour = demo["summary"]["intervals_scored"] - 2  # hours 0..n-1 of telemetry, then the bad batch
    assert last_hour > 0
    script, out = demo["root"] / "rerun.py", demo["root"] / "rerun.json"
    script.write_text(_RERUN)
    _run(
        [sys.executable, str(script), str(demo["home"]), str(out), str(last_hour)],
        demo["home"],
        demo["root"] / "rerun.log",
    )
    rerun = json.loads(out.read_text())
    assert rerun["state"] == "success", rerun
    assert rerun["publish"]["new_alerts"] == 0 and rerun["publish"]["scored"] > 0
    assert rerun["publish"]["model_versions"] == [demo["summary"]["production_version"]]
    assert rerun["alerts_after"] == rerun["alerts_before"] == demo["summary"]["alerts"]
    assert rerun["same_scores"] is True
