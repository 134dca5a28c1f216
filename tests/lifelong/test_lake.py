"""The telemetry lake, against a local folder and against S3 (moto's server over HTTP on loopback)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from lifelong.errors import DatasetFormatError, NotFoundError
from lifelong.settings import Settings
from lifelong.stores.lake import TelemetryLake, file_format, find_scored_sample, hour_floor, interval_hours
from lifelong.telemetry import SCORE_COLUMNS

T0 = datetime(2024, 3, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path) -> TelemetryLake:
    """The same contract on both backends; a fresh lake per test."""
    if request.param == "local":
        return TelemetryLake(str(tmp_path / "lake"), chunk_rows=1000)
    endpoint = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return TelemetryLake(f"s3://{bucket}/lake", endpoint_url=endpoint, chunk_rows=1000)


@pytest.fixture
def local_lake(tmp_path) -> TelemetryLake:
    return TelemetryLake(str(tmp_path / "lake"), chunk_rows=1000)


def events(n: int, start: datetime = T0, *, prefix: str = "s") -> pd.DataFrame:
    """n events of sessions with zero-padded ids (a leading zero must survive text formats)."""
    return pd.DataFrame(
        {
            "entity_id": [f"{prefix}{i // 5:04d}" for i in range(n)],
            "timestamp": pd.Timestamp(start) + pd.to_timedelta(np.arange(n), unit="s"),
            "event_key": (np.arange(n) * 7) % 13,
        }
    )


def scores(entities: list[str], interval_start: datetime, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": entities,
            "score": np.linspace(0.1, 0.9, len(entities)),
            "threshold": 0.5,
            "abnormal": np.linspace(0.1, 0.9, len(entities)) > 0.5,
            "model_version": version,
            "interval_start": pd.Timestamp(interval_start),
            "sample": [json.dumps({"keys": [i, i + 1], "version": version}) for i in range(len(entities))],
        }
    )


# Paths ------------------------------------------------------------------------------------------------
def test_partition_is_the_utc_hour_of_the_instant(local_lake: TelemetryLake) -> None:
    assert local_lake.partition("events", T0) == "raw/events/date=2024-03-01/hour=05"
    # 07:59 at +02:00 is 05:59 UTC: same partition; a naive instant is UTC.
    plus2 = datetime(2024, 3, 1, 7, 59, tzinfo=timezone(timedelta(hours=2)))
    assert local_lake.partition("events", plus2) == "raw/events/date=2024-03-01/hour=05"
    assert local_lake.partition("events", datetime(2024, 3, 1, 23, 30), "scores") == (
        "scores/events/date=2024-03-01/hour=23"
    )
    with pytest.raises(ValueError, match="stream name"):
        local_lake.partition("../etc", T0)


def test_interval_hours_cover_every_overlapping_hour() -> None:
    assert interval_hours(T0, T0 + HOUR) == [T0]
    assert interval_hours(T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)) == [T0, T0 + HOUR]
    assert len(interval_hours(T0, T0 + timedelta(days=1))) == 24
    assert interval_hours(T0, T0) == []
    assert hour_floor(datetime(2024, 3, 1, 5, 59, 59, tzinfo=UTC)) == T0
    with pytest.raises(ValueError, match="before its start"):
        interval_hours(T0, T0 - HOUR)


def test_file_format_by_extension() -> None:
    assert file_format("a/b.parquet") == "parquet"
    assert file_format("b.CSV.gz") == "csv"
    assert file_format("b.jsonl") == "jsonl"
    with pytest.raises(DatasetFormatError, match=r"b\.xlsx: unsupported telemetry file type"):
        file_format("b.xlsx")


# Reading ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_chunked_read_round_trips_every_format(lake: TelemetryLake, fmt: str) -> None:
    frame = events(50)
    path = lake.write_raw("events", T0, frame, "batch", fmt=fmt)
    assert path == f"raw/events/date=2024-03-01/hour=05/batch.{fmt}"

    chunks = list(lake.read_file_chunks(path, chunk_rows=12))

    assert [len(c) for c in chunks] == [12, 12, 12, 12, 2]
    back = pd.concat(chunks, ignore_index=True)
    assert back["entity_id"].tolist() == frame["entity_id"].tolist()  # "s0000" kept as text
    assert str(back["timestamp"].dt.tz) == "UTC"
    assert (back["timestamp"] == frame["timestamp"]).all()
    assert back["event_key"].tolist() == frame["event_key"].tolist()


def test_chunk_size_defaults_to_the_lake_setting(tmp_path) -> None:
    lake = TelemetryLake(str(tmp_path), chunk_rows=1000)
    path = lake.write_raw("events", T0, events(2500), "big")
    assert [len(c) for c in lake.read_file_chunks(path)] == [1000, 1000, 500]
    assert lake.read_file(path, columns=["event_key"]).columns.tolist() == ["event_key"]


def test_from_settings_reads_the_lake_url_and_chunk_size(tmp_path) -> None:
    lake = TelemetryLake.from_settings(Settings(home=tmp_path, chunk_rows=1234))
    assert lake.url == str((tmp_path / "lake").resolve())
    assert lake.chunk_rows == 1234


def test_from_settings_takes_the_s3_endpoint_from_aws_endpoint_url(s3_endpoint: str, s3_bucket: str) -> None:
    lake = TelemetryLake.from_settings(Settings(lake_url=f"s3://{s3_bucket}/telemetry"))
    assert lake.endpoint_url == s3_endpoint
    path = lake.write_raw("events", T0, events(5), "a")
    assert len(lake.read_file(path)) == 5


def test_gzipped_csv_is_streamed(local_lake: TelemetryLake) -> None:
    data = gzip.compress(events(30).to_csv(index=False).encode())
    path = local_lake.write_bytes("raw/events/date=2024-03-01/hour=05/b.csv.gz", data)
    assert [len(c) for c in local_lake.read_file_chunks(path, chunk_rows=20)] == [20, 10]


def test_unsupported_file_is_listed_and_refused_by_name(lake: TelemetryLake) -> None:
    path = lake.write_bytes("raw/events/date=2024-03-01/hour=05/report.xlsx", b"PK\x03\x04")
    # Listed, so that the run fails on it instead of skipping its data silently.
    assert lake.list_interval_files("events", T0, T0 + HOUR) == [path]
    with pytest.raises(DatasetFormatError, match=r"report\.xlsx: unsupported telemetry file type"):
        next(lake.read_file_chunks(path))


def test_malformed_files_name_the_file_and_place(local_lake: TelemetryLake) -> None:
    base = "raw/events/date=2024-03-01/hour=05"
    csv = local_lake.write_bytes(
        f"{base}/bad.csv", b"entity_id,timestamp,event_key\na,2024-03-01T05:00:00Z,1\nb,x,2,9\n"
    )
    with pytest.raises(DatasetFormatError, match=r"bad\.csv: unreadable CSV .*line 3"):
        list(local_lake.read_file_chunks(csv))
    jsonl = local_lake.write_bytes(f"{base}/bad.jsonl", b'{"entity_id": "a"}\n{not json\n')
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl: unreadable JSON Lines in lines 1-"):
        list(local_lake.read_file_chunks(jsonl))
    parquet = local_lake.write_bytes(f"{base}/bad.parquet", b"not parquet at all")
    with pytest.raises(DatasetFormatError, match=r"bad\.parquet: not a readable Parquet file"):
        list(local_lake.read_file_chunks(parquet))
    empty = local_lake.write_bytes(f"{base}/empty.csv", b"")
    with pytest.raises(DatasetFormatError, match=r"empty\.csv: empty CSV file"):
        list(local_lake.read_file_chunks(empty))
    good = local_lake.write_raw("events", T0, events(3), "good")
    with pytest.raises(DatasetFormatError, match=r"good\.parquet: no column\(s\) \['nope'\]"):
        list(local_lake.read_file_chunks(good, columns=["nope"]))
    with pytest.raises(NotFoundError, match=r"missing\.parquet"):
        list(local_lake.read_file_chunks(f"{base}/missing.parquet"))


def test_empty_parquet_yields_one_empty_frame_with_its_columns(local_lake: TelemetryLake) -> None:
    path = local_lake.write_raw("events", T0, events(0), "empty")
    chunks = list(local_lake.read_file_chunks(path))
    assert len(chunks) == 1 and len(chunks[0]) == 0
    assert chunks[0].columns.tolist() == ["entity_id", "timestamp", "event_key"]


def test_interval_listing_spans_hours_and_days(lake: TelemetryLake) -> None:
    late = datetime(2024, 3, 1, 23, tzinfo=UTC)
    written = [
        lake.write_raw("events", late - HOUR, events(3), "before"),
        lake.write_raw("events", late, events(4, late), "a", fmt="csv"),
        lake.write_raw("events", late, events(5, late), "b"),
        lake.write_raw("events", late + HOUR, events(6, late + HOUR), "c", fmt="jsonl"),
        lake.write_raw("events", late + 2 * HOUR, events(7, late + 2 * HOUR), "after"),
        lake.write_raw("other", late, events(3, late), "elsewhere"),
    ]
    # Hidden and underscore files are temporary or markers, never data.
    lake.write_bytes("raw/events/date=2024-03-01/hour=23/_SUCCESS", b"")
    lake.write_bytes("raw/events/date=2024-03-01/hour=23/.part-0.tmp", b"partial")

    two_hours = lake.list_interval_files("events", late, late + 2 * HOUR)
    assert two_hours == sorted(written[1:4]) == written[1:4]
    # An interval not aligned to hours covers every hour it overlaps.
    assert (
        lake.list_interval_files("events", late + timedelta(minutes=30), late + timedelta(minutes=61))
        == (written[1:4])
    )
    assert lake.list_interval_files("events", late, late + HOUR) == written[1:3]
    assert lake.list_interval_files("events", late + 5 * HOUR, late + 6 * HOUR) == []
    frame = lake.read_interval("events", late, late + 2 * HOUR)
    assert len(frame) == 4 + 5 + 6
    assert str(frame["timestamp"].dt.tz) == "UTC"


# Scores -----------------------------------------------------------------------------------------------
def test_scores_are_overwritten_per_shard_and_read_by_interval(lake: TelemetryLake) -> None:
    first = lake.write_scores("events", T0, "000", scores(["a", "b"], T0, "v1"))
    again = lake.write_scores("events", T0, "000", scores(["a", "b", "c"], T0, "v2"))
    assert first == again == "scores/events/date=2024-03-01/hour=05/000.parquet"
    lake.write_scores("events", T0, "001", scores(["d"], T0, "v2"))
    lake.write_scores("events", T0 + HOUR, "000", scores(["e"], T0 + HOUR, "v2"))

    hour = lake.read_scores("events", T0, T0 + HOUR)
    assert sorted(hour["entity_id"]) == ["a", "b", "c", "d"]
    assert set(hour["model_version"]) == {"v2"}
    assert list(hour.columns) == list(SCORE_COLUMNS)
    assert len(lake.read_scores("events")) == 5
    assert lake.read_scores("nothing").columns.tolist() == list(SCORE_COLUMNS)
    with pytest.raises(ValueError, match="lacks column"):
        lake.write_scores("events", T0, "002", pd.DataFrame({"entity_id": ["x"]}))


def test_find_scored_sample_returns_the_most_recent_row(lake: TelemetryLake) -> None:
    lake.write_scores("events", T0, "000", scores(["a", "b"], T0, "old"))
    lake.write_scores("events", T0 + 2 * HOUR, "000", scores(["x", "b"], T0 + 2 * HOUR, "new"))
    lake.write_scores("events", T0 + 3 * HOUR, "000", scores(["y"], T0 + 3 * HOUR, "newest"))

    assert lake.find_scored_sample("events", "b") == {"keys": [1, 2], "version": "new"}
    assert lake.find_scored_sample("events", "a") == {"keys": [0, 1], "version": "old"}
    assert lake.find_scored_sample("events", "never-scored") is None
    assert lake.find_scored_sample("other-stream", "b") is None


def test_module_level_find_scored_sample_uses_the_settings_lake(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    TelemetryLake.from_settings(settings).write_scores("events", T0, "000", scores(["a"], T0, "v"))
    assert find_scored_sample(settings, "events", "a") == {"keys": [0, 1], "version": "v"}


def test_find_scored_sample_refuses_a_broken_sample(local_lake: TelemetryLake) -> None:
    frame = scores(["a"], T0, "v")
    frame["sample"] = "{broken"
    local_lake.write_scores("events", T0, "000", frame)
    with pytest.raises(DatasetFormatError, match="sample of entity 'a' is not valid JSON"):
        local_lake.find_scored_sample("events", "a")


# Quarantine -------------------------------------------------------------------------------------------
def test_quarantine_moves_the_file_with_its_report_and_a_fixed_file_goes_through(lake: TelemetryLake) -> None:
    bad = events(10)
    bad.loc[3, "event_key"] = -1
    source = lake.write_raw("events", T0, bad, "batch", fmt="csv")
    original = lake.read_text(source)
    report = {"success": False, "results": [{"expectation_config": {"type": "expect_x"}}]}

    target = lake.quarantine("events", T0, source, report, "FAILED\n- negative event_key: 1 of 10 rows")

    assert target == "quarantine/events/date=2024-03-01/hour=05/batch.csv"
    assert not lake.exists(source)
    assert lake.list_interval_files("events", T0, T0 + HOUR) == []
    assert lake.read_text(target) == original  # nothing lost
    assert json.loads(lake.read_text(target + ".validation.json")) == report
    assert "negative event_key" in lake.read_text(target + ".summary.txt")
    [entry] = lake.list_quarantine("events")
    assert (entry.stream, entry.interval_start, entry.path) == ("events", T0, target)
    assert entry.report_path == target + ".validation.json"
    assert entry.summary_path == target + ".summary.txt"

    # A second, different bad delivery under the same name keeps the first one.
    bad.loc[4, "event_key"] = -2
    source = lake.write_raw("events", T0, bad, "batch", fmt="csv")
    second = lake.quarantine("events", T0, source, report, "FAILED again")
    assert second == "quarantine/events/date=2024-03-01/hour=05/batch~2.csv"
    assert lake.read_text(target) == original
    assert [e.path for e in lake.list_quarantine()] == [target, second]

    # The fixed file landed again in raw/ is what the rerun sees.
    fixed = lake.write_raw("events", T0, events(10), "batch", fmt="csv")
    assert lake.list_interval_files("events", T0, T0 + HOUR) == [fixed]
    assert (lake.read_file(fixed)["event_key"] >= 0).all()


def test_quarantining_the_same_file_twice_is_idempotent(local_lake: TelemetryLake) -> None:
    source = local_lake.write_raw("events", T0, events(5), "batch")
    first = local_lake.quarantine("events", T0, source, {"n": 1}, "one", keep_source=True)
    second = local_lake.quarantine("events", T0, source, {"n": 2}, "two")
    assert first == second
    assert json.loads(local_lake.read_text(first + ".validation.json")) == {"n": 2}
    assert len(local_lake.list_quarantine()) == 1
    with pytest.raises(NotFoundError, match="no such file"):
        local_lake.quarantine("events", T0, source, {}, "")


def test_markers_record_finished_steps(lake: TelemetryLake) -> None:
    assert lake.read_marker("events", T0, "scored") is None
    path = lake.write_marker("events", T0, "scored", {"rows": 10})
    assert path == "_markers/events/date=2024-03-01/hour=05/scored.json"
    assert lake.read_marker("events", T0 + timedelta(minutes=10), "scored") == {"rows": 10}


def test_paths_outside_the_lake_are_refused(local_lake: TelemetryLake) -> None:
    with pytest.raises(ValueError, match="not a path inside the lake"):
        local_lake.read_text("../secrets.txt")
    # A full path inside the lake is accepted and made relative.
    path = local_lake.write_raw("events", T0, events(2), "a")
    assert local_lake.read_file(local_lake.url_of(path)).shape == (2, 3)
