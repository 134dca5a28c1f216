"""The telemetry simulator and the simulated analysts, on a local lake and SQLite label store in tmp_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from lifelong.cli import labels as labels_cli
from lifelong.cli import simulate as simulate_cli
from lifelong.errors import ConfigError, DatasetFormatError
from lifelong.settings import Settings, get_settings
from lifelong.simulation import (
    TRUTH,
    SimulatedHour,
    TruthLabelSummary,
    file_labels_from_truth,
    read_truth,
    simulate,
)
from lifelong.stores.labels import Alert, LabelStore
from lifelong.stores.lake import RAW, TelemetryLake
from lifelong.telemetry import SCORE_COLUMNS

T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
runner = CliRunner()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with LIFELONG_HOME in tmp_path: a local lake and a SQLite label store."""
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path))
    for name in ("LIFELONG_LAKE_URL", "LIFELONG_LABELS_URL", "LIFELONG_STREAM", "LIFELONG_STREAM_KIND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no folding in assertions
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def lake_of(settings: Settings) -> TelemetryLake:
    return TelemetryLake.from_settings(settings)


# ---------------------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------------------
def test_simulate_lands_hours_times_shards_files_split_by_entity(settings: Settings) -> None:
    hours = simulate(
        settings,
        stream="ev",
        kind="events",
        hours=3,
        start=T0,
        sessions_per_hour=50,
        shards=2,
        drift_from_hour=2,
    )
    lake = lake_of(settings)

    assert [h.interval_start for h in hours] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    raw = lake.list_files("ev", area=RAW)
    assert len(raw) == 3 * 2
    assert raw == sorted(f for h in hours for f in h.files)
    for h in hours:
        assert h.raw_path == f"raw/ev/date=2024-05-01/hour={h.interval_start:%H}"
        assert [f.rsplit("/", 1) for f in h.files] == [
            [h.raw_path, "part-000.parquet"],
            [h.raw_path, "part-001.parquet"],
        ]
        shard_entities = [set(lake.read_file(f)["entity_id"]) for f in h.files]
        assert not shard_entities[0] & shard_entities[1]  # a session never spans two files
        assert len(shard_entities[0]) == len(shard_entities[1]) == 25  # ordinal mod 2
        frames = pd.concat([lake.read_file(f) for f in h.files])
        assert len(frames) == h.rows
        assert (
            frames["timestamp"]
            .between(pd.Timestamp(h.interval_start), pd.Timestamp(h.interval_start + HOUR))
            .all()
        )
        assert h.n == 50
        assert h.n_abnormal == 4  # round(50 * 0.08)
        # Ids carry the absolute hour, so they never repeat across simulations of other hours.
        assert all(e.startswith(f"s{h.interval_start:%Y%m%d%H}-") for s in shard_entities for e in s)
    assert [h.n_drift for h in hours] == [0, 0, 14]  # round(0.3 * 46 normal sessions) from hour 2 on

    # The truth is kept outside raw/, one file per hour, one row per session.
    for h in hours:
        assert h.truth_path == f"{TRUTH}/ev/date=2024-05-01/hour={h.interval_start:%H}/truth.parquet"
        assert not h.truth_path.startswith(RAW)
        assert lake.exists(h.truth_path)
    truth = read_truth(settings, "ev")
    assert list(truth.columns) == ["entity_id", "abnormal", "kind", "interval_start"]
    assert len(truth) == 150 and truth["entity_id"].is_unique
    assert int(truth["abnormal"].sum()) == 12
    assert int((truth["kind"] == "drift").sum()) == 14
    raw_entities = {e for f in raw for e in lake.read_file(f)["entity_id"]}
    assert raw_entities == set(truth["entity_id"])
    assert not any(c in lake.read_file(raw[0]).columns for c in ("abnormal", "kind"))


def test_simulate_is_deterministic_and_independent_of_how_hours_are_batched(
    settings: Settings, tmp_path: Path
) -> None:
    lake = lake_of(settings)
    first = simulate(settings, stream="ev", kind="events", hours=3, start=T0, sessions_per_hour=30)
    frames = {f: lake.read_file(f) for h in first for f in h.files}
    truth = read_truth(settings, "ev")

    again = simulate(settings, stream="ev", kind="events", hours=3, start=T0, sessions_per_hour=30)
    assert again == first
    for path, frame in frames.items():
        pd.testing.assert_frame_equal(lake.read_file(path), frame)
    pd.testing.assert_frame_equal(read_truth(settings, "ev"), truth)

    # The middle hour simulated on its own (no drift either way) lands the same rows.
    other = Settings(home=tmp_path / "other")
    (alone,) = simulate(other, stream="ev", kind="events", hours=1, start=T0 + HOUR, sessions_per_hour=30)
    for path in alone.files:
        pd.testing.assert_frame_equal(lake_of(other).read_file(path), frames[path])

    # Another seed draws other telemetry.
    third = Settings(home=tmp_path / "third")
    (reseeded,) = simulate(third, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=30, seed=1)
    assert not lake_of(third).read_file(reseeded.files[0]).equals(frames[first[0].files[0]])


def test_simulate_vectors_as_csv(settings: Settings) -> None:
    (hour,) = simulate(
        settings, stream="vec", kind="vectors", hours=1, start=T0, sessions_per_hour=31, shards=3, fmt="csv"
    )
    lake = lake_of(settings)
    assert [f.rsplit("/", 1)[1] for f in hour.files] == ["part-000.csv", "part-001.csv", "part-002.csv"]
    parts = [lake.read_file(f) for f in hour.files]
    assert [len(p) for p in parts] == [11, 10, 10]
    rows = pd.concat(parts, ignore_index=True)
    assert hour.n == hour.rows == 31 and rows["entity_id"].is_unique
    assert all(e.startswith("r2024050110-") for e in rows["entity_id"])
    assert {"cpu_util", "mode", "timestamp"} <= set(rows.columns)
    assert set(read_truth(settings, "vec")["entity_id"]) == set(rows["entity_id"])


def test_simulate_again_with_fewer_shards_removes_its_stale_files_only(settings: Settings) -> None:
    lake = lake_of(settings)
    simulate(settings, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=20, shards=4)
    foreign = lake.write_raw(
        "ev", T0, pd.DataFrame({"entity_id": ["x"], "timestamp": [T0], "event_key": [1]}), "other"
    )
    (hour,) = simulate(
        settings, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=20, shards=2
    )
    names = [f.rsplit("/", 1)[1] for f in lake.list_files("ev", area=RAW)]
    assert names == ["other.parquet", "part-000.parquet", "part-001.parquet"]
    assert lake.exists(foreign)
    assert sum(len(lake.read_file(f)) for f in hour.files) == hour.rows


def test_simulate_reports_each_hour_as_it_lands(settings: Settings) -> None:
    seen: list[SimulatedHour] = []
    hours = simulate(
        settings, stream="ev", kind="events", hours=3, start=T0, sessions_per_hour=5, on_hour=seen.append
    )
    assert seen == hours


def test_simulate_floors_start_and_skips_empty_shards(settings: Settings) -> None:
    mid_hour = datetime(2024, 5, 1, 10, 42)  # naive: UTC
    (hour,) = simulate(
        settings, stream="ev", kind="events", hours=1, start=mid_hour, sessions_per_hour=2, shards=3
    )
    assert hour.interval_start == T0
    assert [f.rsplit("/", 1)[1] for f in hour.files] == ["part-000.parquet", "part-001.parquet"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hours": 0}, "hours must be an integer >= 1"),
        ({"kind": "logs"}, "simulation kind must be 'events' or 'vectors'"),
        ({"anomaly_rate": 1.5}, "anomaly_rate must be in [0, 1]"),
        ({"shards": 0}, "shards must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"fmt": "xlsx"}, "format must be one of parquet, csv, jsonl"),
        ({"stream": "../x"}, "stream name '../x'"),
    ],
)
def test_simulate_refuses_bad_arguments(settings: Settings, overrides: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"stream": "ev", "kind": "events", "hours": 1, "start": T0, **overrides}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        simulate(settings, **args)
    assert not lake_of(settings).list_files("ev", area=RAW)


def test_read_truth_windows(settings: Settings) -> None:
    simulate(settings, stream="ev", kind="events", hours=3, start=T0, sessions_per_hour=10)
    starts = lambda df: sorted(set(df["interval_start"]))  # noqa: E731
    assert starts(read_truth(settings, "ev", T0 + HOUR, T0 + 2 * HOUR)) == [pd.Timestamp(T0 + HOUR)]
    assert starts(read_truth(settings, "ev", start=T0 + HOUR)) == [
        pd.Timestamp(T0 + HOUR),
        pd.Timestamp(T0 + 2 * HOUR),
    ]
    assert starts(read_truth(settings, "ev", end=T0 + HOUR)) == [pd.Timestamp(T0)]
    # A window starting mid-hour excludes that hour (rows are filtered on their interval start).
    assert starts(read_truth(settings, "ev", T0 + HOUR / 2, T0 + 3 * HOUR))[0] == pd.Timestamp(T0 + HOUR)
    assert read_truth(settings, "nothing").empty
    with pytest.raises(ConfigError, match="is before its start"):
        read_truth(settings, "ev", T0 + HOUR, T0)


# ---------------------------------------------------------------------------------------------------------
# file_labels_from_truth
# ---------------------------------------------------------------------------------------------------------
def pick(truth: pd.DataFrame, abnormal: bool, n: int) -> list[str]:
    return sorted(truth.loc[truth["abnormal"] == abnormal, "entity_id"])[:n]


def record_alerts(settings: Settings, entities: list[str], start: datetime = T0, stream: str = "ev") -> None:
    with LabelStore.from_settings(settings) as store:
        store.record_alerts(
            [Alert(stream, e, start, start + HOUR, 9.0, 2.0, "v-prod", [1, 2, 3]) for e in entities]
        )


def write_scores(
    settings: Settings, rows: list[tuple[str, bool, Any]], start: datetime = T0, shard: str = "part-000"
) -> None:
    """Score rows (entity, abnormal, sample) of one interval, as the scorer would write them."""
    frame = pd.DataFrame(
        {
            "entity_id": [e for e, _a, _s in rows],
            "score": [9.0 if a else 0.5 for _e, a, _s in rows],
            "threshold": 2.0,
            "abnormal": [a for _e, a, _s in rows],
            "model_version": "v-prod",
            "interval_start": pd.Timestamp(start),
            "sample": [s if s is None else json.dumps(s) for _e, _a, s in rows],
        }
    )
    assert set(SCORE_COLUMNS) <= set(frame.columns)
    lake_of(settings).write_scores("ev", start, shard, frame)


def labels_of(settings: Settings) -> dict[str, Any]:
    with LabelStore.from_settings(settings) as store:
        return {label.entity_id: label for label in store.list_labels(stream="ev")}


@pytest.fixture
def scored(settings: Settings) -> dict[str, list[str]]:
    """One simulated hour, with hand-made alerts and scores covering every case."""
    simulate(settings, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=60)
    truth = read_truth(settings, "ev")
    normal, abnormal = pick(truth, False, 4), pick(truth, True, 4)
    false_alarm, true_alarm = normal[:2], abnormal[:1]
    passed_normal, missed = normal[2:], abnormal[1:4]
    record_alerts(settings, [*false_alarm, *true_alarm, "ghost-alert"])
    write_scores(
        settings,
        [(e, True, [1, 2, 3]) for e in [*false_alarm, *true_alarm]]
        + [(e, False, [5, 6]) for e in passed_normal]
        + [(e, False, [7, i]) for i, e in enumerate(missed)]
        + [("ghost-score", False, [1])],
    )
    return {
        "false_alarm": false_alarm,
        "missed": missed,
        "true_alarm": true_alarm,
        "passed_normal": passed_normal,
    }


def test_files_fp_for_false_alarms_and_fn_for_misses_once(
    settings: Settings, scored: dict[str, list[str]]
) -> None:
    summary = file_labels_from_truth(settings, stream="ev", incident="INC-7")
    assert summary == TruthLabelSummary(fp=2, fn=3, skipped=2, already=0, false_alerts=2, missed=3)

    labels = labels_of(settings)
    assert sorted(labels) == sorted(scored["false_alarm"] + scored["missed"])
    for entity in scored["false_alarm"]:
        label = labels[entity]
        assert (label.kind, label.sample, label.model_version) == ("FP", [1, 2, 3], "v-prod")
        assert label.alert_id is not None
    for i, entity in enumerate(scored["missed"]):
        label = labels[entity]
        assert (label.kind, label.sample, label.model_version) == ("FN", [7, i], "v-prod")
        assert label.alert_id is None
    assert {label.analyst for label in labels.values()} == {"simulated-analyst"}
    assert {label.incident for label in labels.values()} == {"INC-7"}
    assert all(label.note.startswith("simulated ground truth: ") for label in labels.values())

    again = file_labels_from_truth(settings, stream="ev", incident="INC-7")
    assert again == TruthLabelSummary(fp=0, fn=0, skipped=2, already=5, false_alerts=2, missed=3)
    assert len(labels_of(settings)) == 5


def test_window_limits_alerts_and_scores(settings: Settings, scored: dict[str, list[str]]) -> None:
    assert file_labels_from_truth(settings, stream="ev", start=T0 + HOUR) == TruthLabelSummary(
        fp=0, fn=0, skipped=0, already=0, false_alerts=0, missed=0
    )
    assert file_labels_from_truth(settings, stream="ev", end=T0).missed == 0
    summary = file_labels_from_truth(settings, stream="ev", start=T0, end=T0 + HOUR)
    assert (summary.fp, summary.fn) == (2, 3)


def test_fraction_and_max_labels_select_a_seeded_share(settings: Settings) -> None:
    simulate(settings, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=200)
    truth = read_truth(settings, "ev")
    false_alarm, missed = pick(truth, False, 10), pick(truth, True, 8)
    record_alerts(settings, false_alarm)
    write_scores(settings, [(e, True, [1]) for e in false_alarm] + [(e, False, [2, 3]) for e in missed])

    half = file_labels_from_truth(settings, stream="ev", fraction=0.5, seed=3)
    assert (half.fp, half.fn, half.left_out) == (5, 4, 9)
    chosen = set(labels_of(settings))
    assert file_labels_from_truth(settings, stream="ev", fraction=0.5, seed=3) == TruthLabelSummary(
        fp=0, fn=0, skipped=0, already=9, false_alerts=10, missed=8, left_out=9
    )
    assert set(labels_of(settings)) == chosen

    capped = file_labels_from_truth(settings, stream="ev", max_labels=12)
    assert capped.fp + capped.fn + capped.already == 12
    assert capped.already <= 9 and capped.left_out == 18 - 12
    assert len(labels_of(settings)) == 9 + capped.fp + capped.fn

    everything = file_labels_from_truth(settings, stream="ev")
    assert everything.fp + everything.fn + everything.already == 18
    assert len(labels_of(settings)) == 18

    with pytest.raises(ConfigError, match="fraction must be in"):
        file_labels_from_truth(settings, stream="ev", fraction=1.5)
    with pytest.raises(ConfigError, match="max_labels must be a positive integer"):
        file_labels_from_truth(settings, stream="ev", max_labels=0)
    with pytest.raises(ConfigError, match="stream name '../ev'"):
        file_labels_from_truth(settings, stream="../ev")


def test_flagged_elsewhere_is_not_missed_and_other_labels_are_left_alone(settings: Settings) -> None:
    simulate(settings, stream="ev", kind="events", hours=2, start=T0, sessions_per_hour=60)
    truth = read_truth(settings, "ev")
    normal, abnormal = pick(truth, False, 1), pick(truth, True, 2)
    # A human labelled the normal entity FN before the scorer flagged it: the truth says FP, a conflict.
    with LabelStore.from_settings(settings) as store:
        store.add_label(stream="ev", entity_id=normal[0], kind="FN", sample=[4, 4], analyst="human")
    record_alerts(settings, normal)
    # abnormal[0] passed in hour 0 but was flagged in hour 1: not a missed anomaly.
    record_alerts(settings, abnormal[:1], start=T0 + HOUR)
    write_scores(settings, [(abnormal[0], False, [1]), (abnormal[1], False, [2])])

    summary = file_labels_from_truth(settings, stream="ev", end=T0 + HOUR)
    assert summary == TruthLabelSummary(
        fp=0, fn=1, skipped=0, already=0, false_alerts=1, missed=1, conflicts=1
    )
    labels = labels_of(settings)
    assert (labels[normal[0]].kind, labels[normal[0]].analyst) == ("FN", "human")
    assert labels[abnormal[1]].kind == "FN" and abnormal[0] not in labels


def test_missed_entity_without_a_sample_is_a_format_error(settings: Settings) -> None:
    simulate(settings, stream="ev", kind="events", hours=1, start=T0, sessions_per_hour=30)
    (entity,) = pick(read_truth(settings, "ev"), True, 1)
    write_scores(settings, [(entity, False, None)])
    with pytest.raises(DatasetFormatError, match=f"score row of '{entity}' has no sample"):
        file_labels_from_truth(settings, stream="ev")
    assert labels_of(settings) == {}


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def app() -> typer.Typer:
    """An app with the label commands and the simulator's (independent of the other command groups)."""
    app = typer.Typer()
    labels_cli.register(app)
    simulate_cli.register(app)
    simulate_cli.register(app)  # registering twice must not add `labels from-truth` twice
    return app


def test_cli_simulate_table_and_json(settings: Settings, app: typer.Typer) -> None:
    result = runner.invoke(
        app,
        [
            "simulate",
            "--hours",
            "2",
            "--stream",
            "demo",
            "--start",
            "2024-05-01T10",
            "--sessions-per-hour",
            "40",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2024-05-01 10:00" in result.output and "2024-05-01 11:00" in result.output
    assert "raw/demo/date=2024-05-01/hour=10/{part-000.parquet, part-001.parquet}" in result.output
    assert "ground truth kept at truth/demo/" in result.output
    assert len(lake_of(settings).list_files("demo", area=RAW)) == 4

    result = runner.invoke(
        app,
        [
            *("simulate", "-n", "1", "-s", "vec", "--kind", "vectors", "--start", "2024-05-01T10:00Z"),
            *("--format", "jsonl", "--shards", "1", "--sessions-per-hour", "25", "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    (hour,) = json.loads(result.output)
    assert hour["interval_start"] == "2024-05-01T10:00:00+00:00"
    assert hour["files"] == ["raw/vec/date=2024-05-01/hour=10/part-000.jsonl"]
    assert (hour["n"], hour["rows"], hour["n_abnormal"]) == (25, 25, 2)


def test_cli_simulate_defaults(settings: Settings, app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake(settings_arg: Settings, **kwargs: Any) -> list[SimulatedHour]:
        calls.append(kwargs)
        return []

    monkeypatch.setattr("lifelong.simulation.simulate", fake)
    monkeypatch.setenv("LIFELONG_STREAM_KIND", "vectors")
    monkeypatch.setenv("LIFELONG_SEED", "11")
    get_settings.cache_clear()
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result = runner.invoke(app, ["simulate", "--hours", "6", "--json"])
    after = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert kwargs["start"] in (before - 6 * HOUR, after - 6 * HOUR)
    assert {k: v for k, v in kwargs.items() if k != "start"} == {
        "stream": "events",
        "kind": "vectors",
        "hours": 6,
        "seed": 11,
        "sessions_per_hour": 300,
        "anomaly_rate": 0.08,
        "drift_from_hour": 4,
        "drift_rate": 0.3,
        "shards": 2,
        "fmt": "parquet",
        "n_features": 8,
    }


def test_cli_simulate_rejects_a_bad_start(settings: Settings, app: typer.Typer) -> None:
    result = runner.invoke(app, ["simulate", "--hours", "1", "--start", "yesterday"])
    assert result.exit_code == 2
    assert "'yesterday' is not an ISO 8601 date or time" in result.output


def test_cli_labels_from_truth(settings: Settings, app: typer.Typer, scored: dict[str, list[str]]) -> None:
    result = runner.invoke(
        app,
        [
            "labels",
            "from-truth",
            "--stream",
            "ev",
            "--since",
            "2024-05-01T10",
            "--until",
            "2024-05-01T11",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "stream": "ev",
        "fp": 2,
        "fn": 3,
        "skipped": 2,
        "already": 0,
        "false_alerts": 2,
        "missed": 3,
        "conflicts": 0,
        "left_out": 0,
    }
    result = runner.invoke(app, ["labels", "from-truth", "-s", "ev", "--analyst", "team-b"])
    assert result.exit_code == 0, result.output
    assert "5 already labelled" in result.output and "2 without ground truth" in result.output


def test_main_app_has_both_commands() -> None:
    from lifelong.cli import app as main_app

    result = runner.invoke(main_app, ["labels", "--help"])
    assert result.exit_code == 0 and "from-truth" in result.output
    result = runner.invoke(main_app, ["simulate", "--help"])
    assert result.exit_code == 0 and "--sessions-per-hour" in result.output


def test_simulate_and_label_on_an_s3_lake(tmp_path: Path, moto_server: str, s3_bucket: str) -> None:
    """The same round trip on S3 (moto over HTTP): raw, truth, stale-file removal and labels from truth."""
    s3 = Settings(home=tmp_path, lake_url=f"s3://{s3_bucket}/lake", s3_endpoint_url=moto_server)
    simulate(s3, stream="ev", kind="events", hours=2, start=T0, sessions_per_hour=40, shards=3)
    hours = simulate(s3, stream="ev", kind="events", hours=2, start=T0, sessions_per_hour=40, shards=2)
    lake = lake_of(s3)
    assert lake.list_files("ev", area=RAW) == sorted(f for h in hours for f in h.files)
    assert len(lake.list_files("ev", area=RAW)) == 4
    truth = read_truth(s3, "ev")
    assert len(truth) == 80 and int(truth["abnormal"].sum()) == 2 * 3  # round(40 * 0.08) per hour

    (normal,), (missed,) = pick(truth, False, 1), pick(truth, True, 1)
    record_alerts(s3, [normal])
    frame = pd.DataFrame(
        {
            "entity_id": [normal, missed],
            "score": [9.0, 0.1],
            "threshold": 2.0,
            "abnormal": [True, False],
            "model_version": "v-prod",
            "interval_start": pd.Timestamp(T0),
            "sample": [json.dumps([1, 2]), json.dumps([3, 4])],
        }
    )
    lake.write_scores("ev", T0, "part-000", frame)
    summary = file_labels_from_truth(s3, stream="ev", start=T0, end=T0 + 2 * HOUR)
    assert (summary.fp, summary.fn, summary.false_alerts, summary.missed) == (1, 1, 1, 1)
    with LabelStore.from_settings(s3) as store:
        assert {(lb.entity_id, lb.kind, tuple(lb.sample)) for lb in store.list_labels(stream="ev")} == {
            (normal, "FP", (1, 2, 3)),
            (missed, "FN", (3, 4)),
        }
