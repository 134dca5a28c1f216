"""The candidate evaluation report (files, numbers, escaping) and ``lifelong report`` on a local registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from safetensors.numpy import save as st_save
from typer.testing import CliRunner

from lifelong.cli import report as report_cli
from lifelong.constants import REPORT_PREFIX
from lifelong.errors import NotFoundError
from lifelong.reports import EvaluationData, build_report, report_file_names, write_report
from lifelong.reports.evaluation import (
    DATA_FILE,
    INDEX_FILE,
    PLOT_ERRORS,
    PLOT_HELDOUT,
    PLOT_LABELS,
    PLOT_LOSS,
    REPORT_FILES,
)
from lifelong.settings import get_settings
from lifelong.stores.registry import ModelRegistry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL = "events"
THRESHOLD = 10.0
EXPECTED = {REPORT_PREFIX + n for n in REPORT_FILES}
runner = CliRunner()


def make_data(**overrides: Any) -> EvaluationData:
    """Synthetic evaluation data with known counts (threshold 10, scores above it are abnormal)."""
    rng = np.random.default_rng(7)
    heldout_prod = rng.lognormal(0.0, 1.0, 400)  # mostly far below 10
    heldout_prod[:4] = [20.0, 30.0, np.inf, np.inf]  # 4 production false positives, two unscorable
    heldout_cand = heldout_prod * 0.9
    heldout_cand[:4] = [20.0, 8.0, 9.0, np.nan]  # the candidate keeps 1 (a NaN score is decided normal)
    heldout_cand[10:13] = [11.0, 12.0, 50.0]  # ... and forgets 3 others: 4 FP in all
    fields: dict[str, Any] = {
        "model": MODEL,
        "candidate_version": "a" * 64,
        "production_version": "b" * 64,
        "threshold": THRESHOLD,
        "heldout_prod": heldout_prod,
        "heldout_cand": heldout_cand,
        # 3 FP labels (flagged normals), 2 FN labels (missed anomalies).
        "labels_kind": ["FP", "FP", "FP", "FN", "FN"],
        "labels_prod": np.array([15.0, 40.0, np.inf, 2.0, 5.0]),
        "labels_cand": np.array([3.0, 12.0, 9.5, 25.0, np.inf]),  # fixes FP 0 and 2, both FN
        "past_kind": ["FP", "FN"],
        "past_prod": np.array([4.0, 30.0]),  # both right under production
        "past_cand": np.array([11.0, 28.0]),  # the FP one regresses
        "loss_history": [5.0, 3.0, 1.5, float("nan"), 0.6, 0.3],
        "metrics": {"fp_rate_prod": 0.01, "fp_rate_cand": 0.01, "fix_rate": 0.8, "regressions": 1},
        "verdict": {
            "passed": False,
            "reason": "1 past label regressed",
            "checks": [
                {"name": "forgetting", "value": 0.01, "threshold": 0.02, "passed": True},
                {"name": "fix_rate", "value": 0.8, "threshold": 0.8, "passed": True},
                {"name": "no_regression", "value": 1, "threshold": 0, "passed": False},
            ],
        },
        "run_id": "manual__2026-12-03T02:00:00+00:00",
        "created_at": "2026-12-03T02:05:00+00:00",
        "extra": {"params": {"lam": 10.0, "max_steps": 6}, "unlearn": {"steps": 6, "seconds": 0.4}},
    }
    fields.update(overrides)
    return EvaluationData(**fields)


@pytest.fixture(scope="module")
def report() -> dict[str, bytes]:
    return build_report(make_data())


def payload(files: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(files[REPORT_PREFIX + DATA_FILE])


def html(files: dict[str, bytes]) -> str:
    return files[REPORT_PREFIX + INDEX_FILE].decode("utf-8")


# -- build_report -----------------------------------------------------------------------------------------
def test_build_report_files_and_pngs(report: dict[str, bytes]) -> None:
    assert set(report) == EXPECTED
    assert report_file_names([*report, "weights.safetensors", "manifest.json"]) == sorted(EXPECTED)
    for name, content in report.items():
        if name.endswith(".png"):
            assert content.startswith(PNG_MAGIC), name
            assert 5_000 < len(content) < 250_000, (name, len(content))  # a real picture, and a small one


def test_build_report_is_deterministic(report: dict[str, bytes]) -> None:
    # Registry versions are immutable: a retried run must put byte-identical report files.
    assert build_report(make_data()) == report


def test_html_shows_verdict_checks_and_metrics(report: dict[str, bytes]) -> None:
    page = html(report)
    assert "REJECTED" in page and "PASSED" not in page
    assert "1 past label regressed" in page
    for check in ("forgetting", "fix_rate", "no_regression", "fp_rate_prod", "regressions"):
        assert f"<td>{check}</td>" in page
    assert page.count(">FAIL<") == 1 and page.count(">pass<") == 2
    assert "a" * 12 in page and "b" * 12 in page and "manual__2026-12-03T02:00:00+00:00" in page
    for plot in (PLOT_HELDOUT, PLOT_LABELS, PLOT_ERRORS, PLOT_LOSS):
        assert f'src="{plot}"' in page  # relative: the images lie beside index.html
    assert "&#34;max_steps&#34;: 6" in page  # params as an (escaped) JSON block

    passed = make_data(verdict={"passed": True, "reason": "all checks passed", "checks": []})
    assert "PASSED" in html(build_report(passed))


def test_html_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    data = make_data(
        run_id=evil,
        model="m<b>",
        verdict={"passed": True, "reason": evil, "checks": [{"name": evil, "value": 1, "threshold": 0}]},
        metrics={evil: 1.0},
        extra={"note": evil},
    )
    page = html(build_report(data))
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_data_json_round_trips_and_counts(report: dict[str, bytes]) -> None:
    data = make_data()
    stored = payload(report)
    assert stored["schema"] == 1
    back = EvaluationData.from_dict(stored["data"])
    for name in ("heldout_prod", "heldout_cand", "labels_prod", "labels_cand", "past_prod", "past_cand"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))  # NaN and inf included
    np.testing.assert_array_equal(back.loss_history, data.loss_history)
    assert (back.labels_kind, back.past_kind) == (data.labels_kind, data.past_kind)
    assert (back.verdict, back.metrics, back.extra, back.run_id) == (
        data.verdict,
        data.metrics,
        data.extra,
        data.run_id,
    )
    assert stored["data"]["heldout_prod"][2] == "Infinity"  # strict JSON: no bare NaN / Infinity

    derived = stored["derived"]
    assert derived["heldout"]["n"] == 400
    assert (derived["heldout"]["fp_prod"], derived["heldout"]["fp_cand"]) == (4, 4)
    assert derived["heldout"]["nonfinite_prod"] == {"inf": 2, "-inf": 0, "nan": 0}
    assert derived["heldout"]["nonfinite_cand"]["nan"] == 1
    assert derived["labels"]["FP"] == {"n": 3, "correct_prod": 0, "correct_cand": 2, "fixed": 2, "broken": 0}
    assert derived["labels"]["FN"] == {"n": 2, "correct_prod": 0, "correct_cand": 2, "fixed": 2, "broken": 0}
    assert derived["past"]["FP"] == {"n": 1, "correct_prod": 1, "correct_cand": 0, "fixed": 0, "broken": 1}
    assert derived["loss"] == {"steps": 6, "first": 5.0, "final": 0.3, "min": 0.3, "nonfinite": 1}

    sweep = derived["sweep"]
    at = sweep["thresholds"].index(THRESHOLD)
    assert (sweep["fp_prod"][at], sweep["fp_cand"][at]) == (4, 4)
    # FN labels, new and past: production misses the two new ones; the candidate misses none.
    assert (sweep["fn_prod"][at], sweep["fn_cand"][at]) == (2, 0)
    assert sweep["thresholds"] == sorted(sweep["thresholds"])
    assert all(np.diff(sweep["fp_prod"]) <= 0) and all(np.diff(sweep["fn_cand"]) >= 0)


def test_empty_inputs_still_make_every_file() -> None:
    empty = np.empty(0)
    data = make_data(
        heldout_prod=empty,
        heldout_cand=empty,
        labels_kind=[],
        labels_prod=empty,
        labels_cand=empty,
        past_kind=[],
        past_prod=empty,
        past_cand=empty,
        loss_history=[],
        metrics={},
        verdict={},
        extra={},
    )
    files = build_report(data)
    assert set(files) == EXPECTED
    assert all(files[n].startswith(PNG_MAGIC) for n in files if n.endswith(".png"))
    assert "NO VERDICT" in html(files) and "The gate recorded no checks." in html(files)
    derived = payload(files)["derived"]
    assert derived["heldout"]["fp_rate_prod"] is None and derived["loss"]["final"] is None
    assert derived["sweep"]["thresholds"] == [THRESHOLD]


def test_all_nonfinite_scores_and_no_past_labels() -> None:
    data = make_data(
        heldout_prod=np.full(5, np.inf),
        heldout_cand=np.full(5, np.nan),
        labels_kind=["FN"],
        labels_prod=np.array([np.nan]),
        labels_cand=np.array([-np.inf]),
        past_kind=[],
        past_prod=[],
        past_cand=[],
        loss_history=[float("inf")],
    )
    derived = payload(build_report(data))["derived"]
    assert (derived["heldout"]["fp_prod"], derived["heldout"]["fp_cand"]) == (5, 0)
    assert derived["labels"]["FN"]["correct_cand"] == 0
    assert derived["loss"]["nonfinite"] == 1 and derived["loss"]["final"] == "Infinity"


def test_bad_data_is_refused_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="heldout_prod and heldout_cand"):
        make_data(heldout_cand=np.zeros(3))
    with pytest.raises(ValueError, match="labels_kind"):
        make_data(labels_kind=["FP", "FP", "FP", "FN", "oops"])
    with pytest.raises(ValueError, match="past_kind, past_prod and past_cand"):
        make_data(past_cand=np.zeros(3))
    with pytest.raises(ValueError, match="threshold"):
        make_data(threshold=float("nan"))
    with pytest.raises(ValueError, match="1-D"):
        make_data(past_prod=np.zeros((2, 1)))


def test_write_report_strips_prefix_and_refuses_bad_names(report: dict[str, bytes], tmp_path: Path) -> None:
    index = write_report(report, tmp_path / "out")
    assert index == tmp_path / "out" / INDEX_FILE
    assert sorted(p.name for p in index.parent.iterdir()) == sorted(n[len(REPORT_PREFIX) :] for n in EXPECTED)
    assert (index.parent / PLOT_LOSS).read_bytes() == report[REPORT_PREFIX + PLOT_LOSS]
    with pytest.raises(ValueError, match="does not name a plain file"):
        write_report({**report, REPORT_PREFIX + "../evil.html": b"x"}, tmp_path / "evil")
    with pytest.raises(ValueError, match="is not a report file"):
        write_report({"weights.safetensors": b"x"}, tmp_path / "other")
    with pytest.raises(ValueError, match="no report-index.html"):
        write_report({REPORT_PREFIX + PLOT_LOSS: b"x"}, tmp_path / "partial")


# -- lifelong report --------------------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    """A local registry under a temporary LIFELONG_HOME, named by LIFELONG_REGISTRY_URL."""
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFELONG_REGISTRY_URL", str(tmp_path / "registry"))
    monkeypatch.setenv("LIFELONG_STREAM", MODEL)
    monkeypatch.delenv("LIFELONG_MODEL_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield ModelRegistry.from_settings(get_settings())
    get_settings.cache_clear()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    report_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps "report" as a subcommand
    return app


def put(registry: ModelRegistry, seed: int, extra_files: dict[str, bytes] | None) -> str:
    weights = st_save({"w": np.full((2, 2), seed, np.float32)})
    return registry.put_version(
        MODEL, weights, {"kind": "lstm", "seed": seed}, {"run_id": f"r{seed}"}, extra_files=extra_files
    )


def test_cli_fetches_the_report(
    registry: ModelRegistry, app: typer.Typer, report: dict[str, bytes], tmp_path: Path
) -> None:
    version = put(registry, 1, {**report, "heldout.parquet": b"not a report file"})
    result = runner.invoke(app, ["report", version[:8]])
    assert result.exit_code == 0, result.output
    folder = tmp_path / f"report-{version[:12]}"
    assert result.stdout.strip() == str(Path(f"report-{version[:12]}") / INDEX_FILE)
    assert sorted(p.name for p in folder.iterdir()) == sorted(n[len(REPORT_PREFIX) :] for n in EXPECTED)
    assert (folder / INDEX_FILE).read_bytes() == report[REPORT_PREFIX + INDEX_FILE]

    out = tmp_path / "chosen"
    chosen = runner.invoke(app, ["report", version, "--model", MODEL, "--out", str(out)])
    assert chosen.exit_code == 0, chosen.output
    assert chosen.stdout.strip() == str(out / INDEX_FILE)
    assert (out / DATA_FILE).read_bytes() == report[REPORT_PREFIX + DATA_FILE]


def test_cli_version_without_report_is_one_line_exit_1(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from lifelong.cli import main

    version = put(registry, 2, None)
    with pytest.raises(SystemExit) as info:
        main(["report", version[:10]])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert " ".join(err.split()).startswith(f"error: model 'events' version {version[:12]} has no evaluation")
    assert not (tmp_path / f"report-{version[:12]}").exists()

    with pytest.raises(SystemExit) as unknown:
        main(["report", "0123abcd" if not version.startswith("0123abcd") else "fedc"])
    assert unknown.value.code == 1
    assert "has no version starting with" in " ".join(capsys.readouterr().err.split())


def test_cli_missing_report_raises_not_found(registry: ModelRegistry, app: typer.Typer) -> None:
    version = put(registry, 3, None)
    result = runner.invoke(app, ["report", version[:8]])
    assert result.exit_code == 1 and isinstance(result.exception, NotFoundError)
    assert "has no evaluation report" in str(result.exception)
