"""Great Expectations suites for telemetry batches: what passes, what fails and how it is reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from lifelong.settings import Settings
from lifelong.stores.lake import TelemetryLake
from lifelong.validation import ValidationOutcome, validate_batch

START = datetime(2024, 3, 1, 5, tzinfo=UTC)
END = START + timedelta(hours=1)
N = 200


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        min_rows=10, max_rows=100_000, feature_min=-100.0, feature_max=100.0, unknown_key_surge=0.1
    )


def good_events(n: int = N, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "entity_id": [f"s{i // 10:05d}" for i in range(n)],
            "timestamp": pd.Timestamp(START) + pd.to_timedelta(np.sort(rng.uniform(0, 3599, n)), unit="s"),
            "event_key": rng.integers(0, 10, n),
            "seq": np.arange(n) % 10,
        }
    )


def good_vectors(n: int = N, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "entity_id": [f"r{i}" for i in range(n)],
            "timestamp": pd.Timestamp(START) + pd.to_timedelta(np.arange(n) * 10, unit="s"),
            "f0": rng.normal(0, 1, n),
            "f1": rng.uniform(-50, 50, n),
            "host": rng.choice(["web-1", "web-2", "db-1"], n),
        }
    )


def check(df: pd.DataFrame, kind: str, settings: Settings, **kwargs) -> ValidationOutcome:
    return validate_batch(df, kind=kind, interval_start=START, interval_end=END, settings=settings, **kwargs)


def the_failure(outcome: ValidationOutcome, name: str) -> str:
    """The one ``failed`` entry that starts with ``name``."""
    matches = [f for f in outcome.failed if f.startswith(name)]
    assert len(matches) == 1, (name, outcome.failed)
    return matches[0]


# Passing batches --------------------------------------------------------------------------------------
def test_a_good_events_batch_passes(settings: Settings) -> None:
    frame = good_events()
    before = frame.copy()

    outcome = check(frame, "events", settings, known_keys=set(range(10)))

    assert outcome.success, outcome.summary
    assert outcome.failed == []
    assert outcome.rows == N
    assert (outcome.unknown_keys, outcome.unknown_key_share, outcome.surge) == (0, 0.0, False)
    assert outcome.summary.startswith(
        "events batch [2024-03-01T05:00:00+00:00, 2024-03-01T06:00:00+00:00): PASSED"
    )
    assert outcome.result_json["success"] is True
    assert outcome.result_json["meta"]["lifelong"]["rows"] == N
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is untouched


def test_a_good_vectors_batch_passes(settings: Settings) -> None:
    outcome = check(good_vectors(), "vectors", settings)
    assert outcome.success, outcome.summary
    assert outcome.unknown_keys == 0


def test_text_timestamps_from_csv_validate_like_datetimes(settings: Settings, tmp_path) -> None:
    lake = TelemetryLake(str(tmp_path))
    path = lake.write_raw("events", START, good_events(), "batch", fmt="csv")
    raw = pd.read_csv(lake.url_of(path))  # timestamps as text, not parsed
    assert raw["timestamp"].dtype != "datetime64[us, UTC]"
    assert check(raw, "events", settings).success


# Each failure kind ------------------------------------------------------------------------------------
def _set(column: str, rows: list[int], value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        if isinstance(value, str) or value is None:  # text or None in a typed column makes it object
            df[column] = df[column].astype(object)
        df.loc[rows, column] = value
        return df

    return mutate


EVENT_FAILURES = {
    "null ids": (_set("entity_id", [1, 2, 3], None), "expect_column_values_to_not_be_null(entity_id)", 3),
    "timestamp after the interval": (
        _set("timestamp", [5, 6], pd.Timestamp(END)),
        "expect_column_values_to_be_between(timestamp)",
        2,
    ),
    "timestamp before the interval": (
        _set("timestamp", [7], pd.Timestamp(START - timedelta(seconds=1))),
        "expect_column_values_to_be_between(timestamp)",
        1,
    ),
    "unreadable timestamp": (
        lambda df: df.assign(timestamp=df["timestamp"].astype(str).where(df.index != 4, "yesterday")),
        "expect_column_values_to_not_be_null(timestamp)",
        1,
    ),
    "negative key": (_set("event_key", [0, 9], -4), "expect_column_values_to_be_between(event_key)", 2),
    "non-integer key": (
        lambda df: df.assign(event_key=df["event_key"].astype(float).where(df.index != 3, 2.5)),
        "expect_column_values_to_be_in_type_list(event_key)",
        1,  # the column is float64; the bad rows are those with a fraction
    ),
    "text key": (_set("event_key", [8], "login"), "expect_column_values_to_be_in_type_list(event_key)", 1),
    "duplicate rows": (
        lambda df: pd.concat([df, df.iloc[[3, 4]]], ignore_index=True),
        "expect_compound_columns_to_be_unique(all columns)",
        4,  # both copies of each duplicated row
    ),
    "too few rows": (lambda df: df.iloc[:5], "expect_table_row_count_to_be_between(table)", None),
    "missing column": (
        lambda df: df.drop(columns=["event_key"]),
        "expect_table_columns_to_match_set(table)",
        None,
    ),
    "repeated seq": (_set("seq", [1], 0), "expect_compound_columns_to_be_unique(entity_id,seq)", 2),
    "numeric entity ids": (
        lambda df: df.assign(entity_id=np.arange(len(df))),
        "expect_column_values_to_be_in_type_list(entity_id)",
        N,
    ),
}


@pytest.mark.parametrize("case", list(EVENT_FAILURES))
def test_each_events_failure_is_named_with_its_bad_row_count(settings: Settings, case: str) -> None:
    mutate, name, bad_rows = EVENT_FAILURES[case]
    frame = mutate(good_events())

    outcome = check(frame, "events", settings, known_keys=set(range(10)))

    assert not outcome.success
    entry = the_failure(outcome, name)
    assert name in outcome.summary
    assert "FAILED" in outcome.summary.splitlines()[0]
    if bad_rows is not None:
        assert f"({bad_rows} of {len(frame)} rows" in entry
        assert f"{bad_rows} of {len(frame)} rows" in outcome.summary
    json.dumps(outcome.result_json, allow_nan=False)


def test_a_missing_column_is_named_once(settings: Settings) -> None:
    outcome = check(good_events().drop(columns=["event_key"]), "events", settings)
    assert outcome.failed == [
        "expect_table_columns_to_match_set(table): required column(s) missing: ['event_key']"
    ]
    assert "missing ['event_key']" in outcome.summary


def test_row_count_bounds(settings: Settings) -> None:
    outcome = check(good_events(5), "events", settings)
    assert "row count outside [10, 100000]" in the_failure(outcome, "expect_table_row_count_to_be_between")
    many = settings.model_copy(update={"max_rows": 50})
    assert not check(good_events(), "events", many).success


def test_an_unreadable_timestamp_is_reported_as_unreadable(settings: Settings) -> None:
    frame = good_events()
    frame["timestamp"] = frame["timestamp"].astype(str)
    frame.loc[[2, 3], "timestamp"] = "noon"
    frame.loc[4, "timestamp"] = None
    outcome = check(frame, "events", settings)
    assert "(3 of 200 rows)" in the_failure(outcome, "expect_column_values_to_not_be_null(timestamp)")
    assert "2 of them unreadable, not null" in outcome.summary


VECTOR_FAILURES = {
    "NaN feature": (_set("f0", [2, 3], np.nan), "expect_column_values_to_not_be_null(f0)", 2),
    "infinite feature": (_set("f0", [4], np.inf), "expect_column_values_to_be_between(f0)", 1),
    "minus infinite feature": (_set("f1", [4], -np.inf), "expect_column_values_to_be_between(f1)", 1),
    "feature out of bounds": (_set("f1", [0, 1, 2], 250.0), "expect_column_values_to_be_between(f1)", 3),
    "null categorical": (_set("host", [7], None), "expect_column_values_to_not_be_null(host)", 1),
    "duplicate rows": (
        lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True),
        "expect_compound_columns_to_be_unique(all columns)",
        2,
    ),
    "null timestamp": (_set("timestamp", [1], None), "expect_column_values_to_not_be_null(timestamp)", 1),
}


@pytest.mark.parametrize("case", list(VECTOR_FAILURES))
def test_each_vectors_failure_is_named_with_its_bad_row_count(settings: Settings, case: str) -> None:
    mutate, name, bad_rows = VECTOR_FAILURES[case]
    frame = mutate(good_vectors())

    outcome = check(
        frame, "vectors", settings, feature_columns=["f0", "f1", "host"], categorical_columns={"host"}
    )

    assert not outcome.success
    entry = the_failure(outcome, name)
    assert f"({bad_rows} of {len(frame)} rows)" in entry
    assert name in outcome.summary
    # Strict JSON even when the batch holds inf or NaN.
    json.dumps(outcome.result_json, allow_nan=False)


def test_text_in_a_numeric_feature_fails_its_type(settings: Settings) -> None:
    frame = good_vectors()
    frame["f0"] = frame["f0"].astype(str)
    frame.loc[3, "f0"] = "n/a"
    outcome = check(
        frame, "vectors", settings, feature_columns=["f0", "f1", "host"], categorical_columns={"host"}
    )
    entry = the_failure(outcome, "expect_column_values_to_be_in_type_list(f0)")
    assert "feature f0 is not numeric" in entry


def test_named_features_must_be_present(settings: Settings) -> None:
    outcome = check(good_vectors(), "vectors", settings, feature_columns=["f0", "f1", "f2"])
    assert outcome.failed == ["expect_table_columns_to_match_set(table): required column(s) missing: ['f2']"]


# Unknown keys -----------------------------------------------------------------------------------------
def test_unknown_keys_are_counted_and_a_surge_warns_without_failing(settings: Settings) -> None:
    frame = good_events()
    frame.loc[:29, "event_key"] = 77  # 30 of 200 = 15 % > 10 %

    outcome = check(frame, "events", settings, known_keys=set(range(10)))

    assert outcome.success, outcome.summary
    assert outcome.unknown_keys == 30
    assert outcome.unknown_key_share == pytest.approx(0.15)
    assert outcome.surge is True
    assert outcome.warnings and "30 of 200 keys (15.00%)" in outcome.warnings[0]
    assert "WARNING: unknown event keys surge" in outcome.summary
    assert outcome.result_json["meta"]["lifelong"]["surge"] is True
    # The GX result itself records the warning-level expectation as failed.
    [item] = [
        r
        for r in outcome.result_json["results"]
        if r["expectation_config"]["meta"]["check"] == "unknown_keys"
    ]
    assert item["success"] is False and item["expectation_config"]["severity"] == "warning"


def test_few_unknown_keys_are_counted_without_a_surge(settings: Settings) -> None:
    frame = good_events()
    frame.loc[:9, "event_key"] = 77  # 5 %
    outcome = check(frame, "events", settings, known_keys=set(range(10)))
    assert (outcome.success, outcome.unknown_keys, outcome.surge) == (True, 10, False)
    assert outcome.unknown_key_share == pytest.approx(0.05)
    assert "unknown event keys: 10 of 200 (5.00%)" in outcome.summary


def test_without_a_vocabulary_nothing_is_unknown(settings: Settings) -> None:
    frame = good_events()
    frame["event_key"] = 1000
    outcome = check(frame, "events", settings)
    assert (outcome.success, outcome.unknown_keys, outcome.surge) == (True, 0, False)


# Mechanics --------------------------------------------------------------------------------------------
def test_bad_arguments_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="empty data interval"):
        validate_batch(
            good_events(), kind="events", interval_start=END, interval_end=START, settings=settings
        )
    with pytest.raises(ValueError, match="unknown telemetry kind"):
        check(good_events(), "logs", settings)  # type: ignore[arg-type]


def test_naive_interval_bounds_are_utc(settings: Settings) -> None:
    outcome = validate_batch(
        good_events(),
        kind="events",
        interval_start=START.replace(tzinfo=None),
        interval_end=END.replace(tzinfo=None),
        settings=settings,
    )
    assert outcome.success


def test_repeated_validations_reuse_the_context_and_are_fast(settings: Settings) -> None:
    frame = good_events(10_000)
    check(frame, "events", settings, known_keys=set(range(10)))  # warm (suite for this shape)
    outcome = check(frame, "events", settings, known_keys=set(range(10)))
    assert outcome.success
    # Measured about 0.2 s on two cores; context creation and the GX import (seconds) must not recur.
    assert outcome.seconds < 3.0
    assert outcome.brief() == {
        "success": True,
        "failed": [],
        "rows": 10_000,
        "unknown_keys": 0,
        "unknown_key_share": 0.0,
        "surge": False,
        "warnings": [],
    }


def test_a_quarantined_batch_can_be_fixed_and_rerun(settings: Settings, tmp_path) -> None:
    lake = TelemetryLake(str(tmp_path), chunk_rows=1000)
    bad = good_events()
    bad.loc[0, "event_key"] = -1
    path = lake.write_raw("events", START, bad, "batch")

    outcome = check(lake.read_interval("events", START, END), "events", settings)
    assert not outcome.success
    target = lake.quarantine("events", START, path, outcome.result_json, outcome.summary)
    report = json.loads(lake.read_text(target + ".validation.json"))
    assert report["meta"]["lifelong"]["failed"] == outcome.failed
    assert "negative event_key" in lake.read_text(target + ".summary.txt")

    lake.write_raw("events", START, good_events(), "batch")  # the producer re-delivers a fixed file
    assert check(lake.read_interval("events", START, END), "events", settings).success
