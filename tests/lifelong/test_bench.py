"""The streaming benchmark: the replay protocol, the report, and the ``lifelong bench`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lifelong.bench import METHODS, BenchOptions, MethodResult, f1_score, plot_cumulative, replay, run_benchmark
from lifelong.data import synthetic_sequences, synthetic_vectors
from lifelong.errors import ConfigError
from lifelong.models.lstm import DeepLogDetector
from lifelong.unlearning import UnlearnConfig

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHOD_KEYS = {"fp", "fn", "f1", "seconds"}
UPDATE_KEYS = METHOD_KEYS | {"updates", "failed_updates", "skipped_updates", "skipped_fn", "median_update_seconds"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only add contention on a shared 2-core machine (20x slower measured).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (``lifelong.cli:main``, what the console script calls) in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from lifelong.cli import main; main(sys.argv[1:])", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


# --- scoring arithmetic ---------------------------------------------------------------------------------
def test_f1_score_numbers() -> None:
    assert f1_score(fp=2, fn=1, n_abnormal=5) == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    assert f1_score(fp=0, fn=0, n_abnormal=3) == 1.0
    assert f1_score(fp=3, fn=3, n_abnormal=3) == 0.0  # no true positive
    assert f1_score(fp=0, fn=0, n_abnormal=0) == 0.0


def test_method_result_dict_keys() -> None:
    assert set(MethodResult("baseline", fp=1, fn=2, f1=0.5, seconds=0.1).to_dict()) == METHOD_KEYS
    unl = MethodResult("unlearn", updates=3, update_seconds=[0.3, 0.1, 0.2]).to_dict()
    assert set(unl) >= UPDATE_KEYS and unl["median_update_seconds"] == 0.2
    assert MethodResult("retrain").to_dict()["median_update_seconds"] is None


# --- the replay protocol on a stub detector -------------------------------------------------------------
class KnownSetDetector:
    """Flags every session it has not seen (only ``decide`` is used by the baseline and retrain replays)."""

    def __init__(self, known: list[list[int]]) -> None:
        self.known = {tuple(s) for s in known}

    def decide(self, samples: list[list[int]]) -> np.ndarray:
        return np.array([tuple(s) not in self.known for s in samples], dtype=bool)


def _stub_dataset() -> SimpleNamespace:
    # position:        0      1      2 (abn)  3      4      5      6 (abn)
    stream = [[2], [2], [1], [3], [2], [3], [9]]
    labels = np.array([False, False, True, False, False, False, True])
    return SimpleNamespace(train=[[1]], validation=[], stream=stream, stream_labels=labels)


def test_baseline_counts_every_mistake() -> None:
    ds = _stub_dataset()
    res = replay("baseline", KnownSetDetector(ds.train), ds)
    assert (res.fp, res.fn) == (5, 1)
    assert res.cum_fp.tolist() == [1, 2, 2, 3, 4, 5, 5]
    assert res.cum_fn.tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert res.f1 == pytest.approx(f1_score(5, 1, 2)) and res.updates == 0


@pytest.mark.parametrize("block", [1, 2, 512])
def test_retrain_updates_after_every_n_reports_on_train_plus_false_positives(block: int) -> None:
    ds = _stub_dataset()
    calls: list[list[list[int]]] = []

    def retrain(samples: list[list[int]]) -> KnownSetDetector:
        calls.append([list(s) for s in samples])
        return KnownSetDetector(samples)

    done: list[int] = []
    res = replay(
        "retrain", KnownSetDetector(ds.train), ds, retrain=retrain, retrain_every=2, block=block, progress=done.append
    )
    # 0 FP, 1 FP -> retrain {1,2}; 2 FN, 3 FP -> retrain {1,2,3}; 4, 5 correct; 6 flagged anomaly.
    assert calls == [[[1], [2], [2]], [[1], [2], [2], [3]]]
    assert (res.fp, res.fn, res.updates, res.failed_updates) == (3, 1, 2, 0)
    assert res.cum_fp.tolist() == [1, 2, 2, 3, 3, 3, 3]
    assert res.cum_fn.tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert len(res.update_seconds) == 2
    assert done[-1] == len(ds.stream) and done == sorted(done)


def test_plot_cumulative_writes_a_png(tmp_path: Path) -> None:
    ds = _stub_dataset()
    results = {"baseline": replay("baseline", KnownSetDetector(ds.train), ds)}
    path = plot_cumulative(results, "stub", tmp_path / "sub" / "plot.png")
    assert path == tmp_path / "sub" / "plot.png"
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_unknown_method_is_rejected_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import lifelong.bench as bench

    def no_training(*_a: Any, **_k: Any) -> None:
        raise AssertionError("trained before checking the methods")

    monkeypatch.setattr(bench, "fit_detector", no_training)
    ds = synthetic_sequences(seed=0, n_train=10, n_test=10)
    with pytest.raises(ConfigError, match="unlern"):
        run_benchmark(ds, BenchOptions(methods=("baseline", "unlern")))
    with pytest.raises(ConfigError, match="no methods"):
        run_benchmark(ds, BenchOptions(methods=()))


def test_an_fn_identical_to_held_out_normal_data_is_a_skipped_update_not_a_failed_one() -> None:
    # A real LSTM. The "anomaly" at position 1 is a held-out normal session: no update could flag it without
    # flagging that session, so the unlearn method skips it and counts it. The rare path (trained on, not held
    # out) at position 2 is unlearnt, so its repeat at position 3 is flagged.
    normal, rare = [[1, 2, 3, 4] * 3, [1, 2, 5, 4] * 3], [1, 2, 6, 4] * 3
    train = normal * 10 + [rare] * 3
    det = DeepLogDetector(window=3, hidden=16, layers=1, epochs=200, lr=1e-2, tp=0.02, seed=0).fit(train)
    ds = SimpleNamespace(
        train=train,
        validation=normal,
        stream=[normal[0], normal[1], rare, rare],
        stream_labels=np.array([False, True, True, True]),
    )
    assert not det.decide(ds.stream).any()
    res = replay("unlearn", det, ds, block=1)
    assert (res.updates, res.failed_updates, res.skipped_updates, res.skipped_fn) == (2, 0, 1, 1)
    assert res.cum_fn.tolist() == [0, 1, 2, 2] and res.fp == 0
    assert res.to_dict()["skipped_updates"] == 1 and res.to_dict()["skipped_fn"] == 1


# --- end to end on a small synthetic stream -------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bench() -> tuple[Any, dict[str, Any], dict[str, MethodResult]]:
    ds = synthetic_sequences(seed=0, n_train=300, n_test=400)
    opts = BenchOptions(
        methods=METHODS,
        batch=5,
        retrain_every=30,
        seed=0,
        # Tp = 1e-3 flags the late drift sessions (false positives) and still misses some anomalies.
        tp=1e-3,
        epochs=10,
        # The measured defaults (SGD lr 1e-2, lambda 100, Fisher), with a smaller step budget.
        unlearn=UnlearnConfig(max_steps=100, seed=0),
    )
    report, results = run_benchmark(ds, opts)
    return ds, report, results


def test_bench_report_has_the_documented_keys(small_bench) -> None:
    ds, report, _ = small_bench
    assert {"dataset", "n_test_normal", "n_test_abnormal", "methods", "scoring_sessions_per_second"} <= set(report)
    assert report["dataset"] == "synthetic-seq"
    assert (report["n_test_normal"], report["n_test_abnormal"]) == (ds.n_test_normal, ds.n_test_abnormal)
    assert report["n_test_normal"] + report["n_test_abnormal"] == 400
    assert list(report["methods"]) == list(METHODS)
    assert set(report["methods"]["baseline"]) == METHOD_KEYS
    for name in ("unlearn", "unlearn_l2", "retrain"):
        assert set(report["methods"][name]) >= UPDATE_KEYS, name
    assert report["scoring_sessions_per_second"] > 0
    assert report["loss_threshold"] == pytest.approx(-np.log(1e-3))
    assert report["unlearn_config"]["lr"] == UnlearnConfig().lr
    assert report["unlearn_config"]["max_steps"] == 100
    assert all({"target", "met"} == set(t) for t in report["targets"])
    json.dumps(report)  # JSON-able as is


def test_bench_counts_add_up_and_unlearning_helps(small_bench) -> None:
    ds, report, results = small_bench
    methods = report["methods"]
    for name, m in methods.items():
        assert 0 <= m["fp"] <= ds.n_test_normal and 0 <= m["fn"] <= ds.n_test_abnormal, name
        assert m["f1"] == pytest.approx(f1_score(m["fp"], m["fn"], ds.n_test_abnormal), abs=1e-4)
        assert results[name].cum_fp[-1] == m["fp"] and results[name].cum_fn[-1] == m["fn"]
    base = methods["baseline"]
    assert base["fp"] + base["fn"] > 0, "the base model must make mistakes for the benchmark to mean anything"
    assert methods["unlearn"]["fp"] + methods["unlearn"]["fn"] < base["fp"] + base["fn"]
    assert methods["unlearn"]["updates"] >= 1 and methods["unlearn"]["median_update_seconds"] > 0
    assert 1 <= methods["retrain"]["updates"] <= 3  # retrain_every=30: a couple of retrains at most


# --- the CLI --------------------------------------------------------------------------------------------
def test_cli_bench_writes_json_and_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lifelong.data
    from lifelong.cli import app

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def small_preset(*args: Any, **kwargs: Any):
        calls.append((args, kwargs))
        return synthetic_vectors(seed=kwargs["seed"], n_train=200, n_test=200)

    # The command imports load_preset at call time: patch the loader, keep everything else real.
    monkeypatch.setattr(lifelong.data, "load_preset", small_preset)
    # LIFELONG_TORCH_THREADS applies to the benchmark as to the DAG tasks (figures measured under the same cap).
    import torch

    from lifelong.settings import get_settings

    threads_before = torch.get_num_threads()
    monkeypatch.setenv("LIFELONG_TORCH_THREADS", "1")
    get_settings.cache_clear()
    out = tmp_path / "out" / "x.json"
    result = CliRunner().invoke(
        app,
        ["bench", "--dataset", "synthetic-vec", "--methods", "baseline,unlearn", "--json", str(out), "--epochs", "30"]
        + ["--batch", "10", "--seed", "3"]  # batch 10: a few updates instead of one per mistake (0.6 s vs 6 s)
        + ["--lr-scale", "0.05", "--guard-floor", "0.2", "--guard-strict", "--no-fn-skip-normal"],
    )
    threads_during = torch.get_num_threads()
    torch.set_num_threads(threads_before)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert threads_during == 1
    assert calls == [(("synthetic-vec",), {"data": None, "seed": 3})]
    report = json.loads(out.read_text())
    assert report["dataset"] == "synthetic-vec" and list(report["methods"]) == ["baseline", "unlearn"]
    assert report["n_test_normal"] + report["n_test_abnormal"] == 200
    assert report["detector"]["kind"] == "autoencoder" and report["detector"]["epochs"] == 30
    assert (report["batch"], report["seed"]) == (10, 3)
    # --lr-scale replaces the kind's explicit learning rate (it would be a no-op beside it); other kind
    # defaults stay.
    ucfg = report["unlearn_config"]
    assert (ucfg["lr"], ucfg["lr_scale"], ucfg["guard_floor"], ucfg["guard_weight"]) == (None, 0.05, 0.2, 100.0)
    assert (ucfg["guard_strict"], ucfg["fn_skip_normal_units"]) == (True, False)
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in result.output


def test_cli_bench_on_the_synthetic_vec_preset(tmp_path: Path) -> None:
    # The full preset (1,500 training rows, a 2,500-row stream) in a fresh process, as a user runs it: about
    # 8 s with --batch 25 (one update per mistake, the default, took 3 min: 434 updates).
    out = tmp_path / "x.json"
    proc = _run_cli(
        ["bench", "--dataset", "synthetic-vec", "--methods", "baseline,unlearn", "--json", str(out)]
        + ["--epochs", "30", "--batch", "25"]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert (report["n_test_normal"], report["n_test_abnormal"]) == (2250, 250)
    assert set(report["methods"]["unlearn"]) >= UPDATE_KEYS
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC


def test_cli_malformed_dataset_line_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "toy_train").write_text("1 2 3\n1 2 3 4\n")
    (folder / "toy_test_abnormal").write_text("1 2\n3 x 4\n")
    json_path = tmp_path / "never.json"
    proc = _run_cli(["bench", "--dataset", "sequences", "--data", str(folder), "--json", str(json_path)], COLUMNS="60")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, even on a narrow terminal
    assert "toy_test_abnormal" in lines[0] and "line 2" in lines[0] and "'x'" in lines[0]
    assert not json_path.exists()


def test_cli_unknown_method_is_one_line_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    from lifelong.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--dataset", "synthetic-seq", "--methods", "baseline,unlern", "--json", "/nonexistent/x.json"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "unknown methods ['unlern']" in err and "Traceback" not in err
