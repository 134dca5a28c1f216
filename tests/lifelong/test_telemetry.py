"""Telemetry schemas, timestamp parsing and events-to-sessions grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lifelong.errors import DatasetFormatError
from lifelong.telemetry import (
    EVENTS_SCHEMA,
    VECTORS_SCHEMA,
    events_to_sessions,
    feature_columns,
    normalize_columns,
    parse_timestamps,
    schema_for,
)


def stamps(*seconds: int) -> pd.Series:
    return pd.Timestamp("2024-03-01T05:00:00Z") + pd.to_timedelta(list(seconds), unit="s")


def test_schemas() -> None:
    assert schema_for("events") is EVENTS_SCHEMA
    assert EVENTS_SCHEMA.required == ("entity_id", "timestamp", "event_key")
    assert EVENTS_SCHEMA.optional == ("seq",)
    assert VECTORS_SCHEMA.required == ("entity_id", "timestamp")
    with pytest.raises(ValueError, match="unknown stream kind 'logs'"):
        schema_for("logs")
    frame = pd.DataFrame(columns=["entity_id", "timestamp", "cpu", "host"])
    assert feature_columns(frame) == ["cpu", "host"]


def test_sessions_follow_timestamps_then_file_order() -> None:
    frame = pd.DataFrame(
        {
            "entity_id": ["b", "a", "b", "a", "b"],
            "timestamp": stamps(3, 1, 1, 0, 1),
            "event_key": [3, 2, 1, 0, 9],
        }
    )
    sessions = events_to_sessions(frame)
    # Entities in order of first appearance; the tie at second 1 keeps file order (1 before 9).
    assert list(sessions) == ["b", "a"]
    assert sessions == {"b": [1, 9, 3], "a": [0, 2]}


def test_seq_overrides_timestamps() -> None:
    frame = pd.DataFrame(
        {
            "entity_id": ["b", "a", "b", "a", "b"],
            "timestamp": stamps(3, 1, 1, 0, 1),
            "event_key": [3, 2, 1, 0, 9],
            "seq": [0, 1, 2, 0, 1],
        }
    )
    assert events_to_sessions(frame) == {"b": [3, 9, 1], "a": [0, 2]}


def test_sessions_accept_text_timestamps_and_whole_float_keys() -> None:
    frame = pd.DataFrame(
        {
            "entity_id": ["s1", "s1", "s2"],
            "timestamp": ["2024-03-01T05:00:02Z", "2024-03-01 05:00:01+00:00", "2024-03-01T05:00:00Z"],
            "event_key": [4.0, 5.0, 6.0],
        }
    )
    assert events_to_sessions(frame) == {"s1": [5, 4], "s2": [6]}


def test_sessions_scale_without_a_python_row_loop() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    frame = pd.DataFrame(
        {
            "entity_id": rng.integers(0, 5000, n).astype(str),
            "event_key": rng.integers(0, 50, n),
            "seq": rng.permutation(n),
        }
    )
    sessions = events_to_sessions(frame)
    assert len(sessions) == frame["entity_id"].nunique()
    assert sum(map(len, sessions.values())) == n
    one = frame[frame["entity_id"] == "42"].sort_values("seq")
    assert sessions["42"] == one["event_key"].tolist()


def test_sessions_refuse_broken_frames() -> None:
    with pytest.raises(DatasetFormatError, match="lacks column"):
        events_to_sessions(pd.DataFrame({"entity_id": ["a"], "event_key": [1]}))
    with pytest.raises(DatasetFormatError, match="not integers, e.g. 1.5"):
        events_to_sessions(pd.DataFrame({"entity_id": ["a"], "event_key": [1.5], "seq": [0]}))
    with pytest.raises(DatasetFormatError, match="have no entity_id"):
        events_to_sessions(pd.DataFrame({"entity_id": [None], "event_key": [1], "seq": [0]}))
    with pytest.raises(DatasetFormatError, match="unreadable timestamp"):
        events_to_sessions(pd.DataFrame({"entity_id": ["a"], "event_key": [1], "timestamp": ["noon"]}))
    assert events_to_sessions(pd.DataFrame(columns=["entity_id", "event_key", "seq"])) == {}


def test_parse_timestamps() -> None:
    naive = pd.Series(pd.to_datetime(["2024-03-01 05:00:00"]))
    assert parse_timestamps(naive).iloc[0] == pd.Timestamp("2024-03-01T05:00:00Z")
    text = pd.Series(["2024-03-01T07:00:00+02:00", "garbage", None])
    parsed = parse_timestamps(text)
    assert parsed.iloc[0] == pd.Timestamp("2024-03-01T05:00:00Z")
    assert parsed.isna().tolist() == [False, True, True]
    # Numbers are not guessed as epochs.
    assert parse_timestamps(pd.Series([1_709_269_200])).isna().all()


def test_normalize_columns_reads_text_ids_as_text() -> None:
    chunk = pd.DataFrame({"entity_id": [42.0, np.nan], "timestamp": ["2024-03-01T05:00:00Z", "x"]})
    out = normalize_columns(chunk, text_format=True)
    assert out["entity_id"].iloc[0] == "42"
    assert out["entity_id"].isna().iloc[1]
    assert str(out["timestamp"].dt.tz) == "UTC"
    # In Parquet the stored type is kept, so validation can flag it.
    assert normalize_columns(pd.DataFrame({"entity_id": [1, 2]}), text_format=False)[
        "entity_id"
    ].tolist() == [1, 2]
