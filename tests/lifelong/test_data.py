"""Dataset loaders, presets and the seeded synthetic generators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifelong.data import (
    SEQUENCE_ANOMALY_KINDS,
    VECTOR_ANOMALY_KINDS,
    generate_event_telemetry,
    generate_vector_telemetry,
    load_preset,
    load_sequence_folder,
    load_vector_csv,
    read_sequence_file,
    shared_data_root,
    synthetic_sequences,
    synthetic_vectors,
)
from lifelong.data.synthetic import make_anomaly, sample_session
from lifelong.errors import ConfigError, DatasetFormatError

SHARED = shared_data_root()


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def _seq_equal(a, b) -> bool:
    return (
        a.train == b.train
        and a.validation == b.validation
        and a.stream == b.stream
        and np.array_equal(a.stream_labels, b.stream_labels)
        and a.stream_kinds == b.stream_kinds
    )


# --- sequence files --------------------------------------------------------------------------------------
def test_read_sequence_file_both_formats_and_whitespace(tmp_path: Path) -> None:
    # HDFS style: trailing spaces, no final newline; a blank line and CRLF in between.
    plain = _write(tmp_path / "x_train", "5 5 22 \n\n  11 9 \r\n3 4 ")
    ids, sessions = read_sequence_file(plain)
    assert sessions == [[5, 5, 22], [11, 9], [3, 4]]
    assert ids == ["x_train:1", "x_train:3", "x_train:4"]
    # Hadoop style: id,keys with a final newline.
    with_ids = _write(tmp_path / "y_train", "app_1/c_1,63 92 128\napp_1/c_2 , 7\n")
    ids, sessions = read_sequence_file(with_ids)
    assert ids == ["app_1/c_1", "app_1/c_2"]
    assert read_sequence_file(_write(tmp_path / "bom_train", "\ufeff1 2\n"))[1] == [[1, 2]]
    assert sessions == [[63, 92, 128], [7]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 2\n3 x4 5\n", ["line 2", "'x4'", "not an integer"]),
        ("1 2\n\n3 -4\n", ["line 3", "'-4'", "negative"]),
        ("a,1 2\nb,1,2\n", ["line 2", "2 commas"]),
        ("1 2.5\n", ["line 1", "'2.5'"]),
        ("a,\n", ["line 1", "no keys"]),
    ],
)
def test_malformed_line_names_file_line_and_token(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _write(tmp_path / "bad_train", text)
    with pytest.raises(DatasetFormatError) as info:
        read_sequence_file(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_folder_missing_files_names_folder_and_expected_names(tmp_path: Path) -> None:
    _write(tmp_path / "d_train", "1 2 3\n")
    with pytest.raises(DatasetFormatError) as info:
        load_sequence_folder(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "'test_abnormal'" in message and "<name>_train" in message
    with pytest.raises(DatasetFormatError, match="not a folder"):
        load_sequence_folder(tmp_path / "nope")


def test_malformed_file_in_folder_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "d_train", "1 2 3\n1 2 3\n")
    _write(tmp_path / "d_test_abnormal", "1 2\n1 2 oops\n")
    with pytest.raises(DatasetFormatError, match=r"d_test_abnormal, line 2: 'oops'"):
        load_sequence_folder(tmp_path)


def _folder(tmp_path: Path, *, with_normal: bool) -> Path:
    _write(tmp_path / "d_train", "".join(f"1 2 {i} \n" for i in range(40)))
    _write(tmp_path / "d_test_abnormal", "".join(f"9 9 {i}\n" for i in range(7)))
    if with_normal:
        _write(tmp_path / "d_test_normal", "".join(f"n{i},1 2 {i}\n" for i in range(12)))
    return tmp_path


def test_folder_with_test_normal(tmp_path: Path) -> None:
    ds = load_sequence_folder(_folder(tmp_path, with_normal=True), seed=3)
    assert (len(ds.train), len(ds.validation)) == (36, 4)  # 10% of 40
    assert (ds.n_test_normal, ds.n_test_abnormal) == (12, 7)
    assert ds.name == tmp_path.name
    # Labels follow the sessions through the shuffle.
    for session, label, kind, sid in zip(
        ds.stream, ds.stream_labels, ds.stream_kinds, ds.stream_ids, strict=True
    ):
        assert label == (session[0] == 9) and kind == ("abnormal" if label else "normal")
        assert sid.startswith("d_test_abnormal:" if label else "n")
    # Train and validation are disjoint, cover the file, and keep file order.
    assert sorted(ds.train + ds.validation) == sorted([[1, 2, i] for i in range(40)])
    assert ds.train == sorted(ds.train, key=lambda s: s[2])
    assert ds.stream_labels.dtype == bool


def test_folder_carves_test_normals_when_missing(tmp_path: Path) -> None:
    ds = load_sequence_folder(_folder(tmp_path, with_normal=False), seed=0, carve_test_fraction=0.5)
    assert ds.n_test_normal == 20 and ds.n_test_abnormal == 7
    assert (len(ds.train), len(ds.validation)) == (18, 2)
    normals = [s for s, a in zip(ds.stream, ds.stream_labels, strict=True) if not a]
    assert sorted(ds.train + ds.validation + normals) == sorted([[1, 2, i] for i in range(40)])
    assert any("carved" in note for note in ds.notes)
    again = load_sequence_folder(tmp_path, seed=0, carve_test_fraction=0.5)
    assert _seq_equal(ds, again)
    other = load_sequence_folder(tmp_path, seed=1, carve_test_fraction=0.5)
    assert other.train != ds.train
    with pytest.raises(ValueError, match="carve_test_fraction"):
        load_sequence_folder(tmp_path, carve_test_fraction=1.0)


# --- vector CSVs -----------------------------------------------------------------------------------------
CSV = """a,b,region,label
1.0,2.0,north,0
1.5,,south,0
2.0,3.0,north,1
2.5,4.0,east,0
3.0,5.0,north,0
9.0,9.0,west,1
3.5,NaN,south,0
"""


def test_load_vector_csv_splits_and_dtypes(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", CSV)
    ds = load_vector_csv(path, train_normal=4, validation_fraction=0.25, seed=1)
    assert ds.feature_columns == ["a", "b", "region"]
    # First 4 normal rows in file order are rows 0, 1, 3, 4; the last quarter (1 row) is validation.
    assert list(ds.train.index) == [0, 1, 3] and list(ds.validation.index) == [4]
    assert sorted(ds.stream.index) == [2, 5, 6]
    assert (ds.n_test_normal, ds.n_test_abnormal) == (1, 2)
    assert dict(zip(ds.stream.index, ds.stream_labels, strict=True)) == {2: True, 5: True, 6: False}
    assert ds.stream["a"].dtype == np.float64 and ds.train["region"].dtype == object
    assert ds.categorical_columns == ["region"]
    assert np.isnan(ds.train.loc[1, "b"]) and np.isnan(ds.stream.loc[6, "b"])
    assert "label" not in ds.stream.columns
    assert any("train: 1 rows have a missing" in n for n in ds.notes)
    assert any("stream: 1 rows have a missing" in n for n in ds.notes)
    again = load_vector_csv(path, train_normal=4, validation_fraction=0.25, seed=1)
    assert ds.stream.equals(again.stream)


def test_load_vector_csv_label_options(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "kind,x,y\nok,1,2\nbad,3,4\nok,5,6\n")
    ds = load_vector_csv(path, label_column="kind", normal_value="ok", train_normal=1, validation_fraction=0)
    assert ds.feature_columns == ["x", "y"] and len(ds.train) == 1 and len(ds.validation) == 0
    assert list(ds.stream_labels[np.argsort(ds.stream.index)]) == [True, False]
    # "0.0" is normal when the normal value is 0.
    path = _write(tmp_path / "f.csv", "x,y\n1,0.0\n2,1.0\n3,0\n")
    assert len(load_vector_csv(path, train_normal=2, validation_fraction=0).train) == 2


@pytest.mark.parametrize(
    ("text", "kw", "expected"),
    [
        ("a,b\n1,0\n", {"label_column": "cls"}, ["no label column 'cls'", "['a', 'b']"]),
        ("a,b,c\n1,2,0\n1,2\n", {}, ["line 3", "2 values", "3 columns"]),
        ("a,b,c\n1,2,0\n1,2,0\n1,2,0\nx,2,0\n", {}, ["line 5", "column 'a' is numeric", "'x'"]),
        ("a,b\n1,0\n2,1\n", {"train_normal": 2}, ["1 rows have b=0", "train_normal=2"]),
        ("a,b\n1,0\n2,\n", {}, ["line 3", "empty label"]),
    ],
)
def test_load_vector_csv_errors(tmp_path: Path, text: str, kw: dict, expected: list[str]) -> None:
    path = _write(tmp_path / "bad.csv", text)
    kw = {"train_normal": 1, **kw}
    with pytest.raises(DatasetFormatError) as info:
        load_vector_csv(path, **kw)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_forced_categorical_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", "code,x,label\n1,1,0\n2,2,0\nA,3,0\n3,4,1\n")
    ds = load_vector_csv(path, train_normal=3, validation_fraction=0, categorical_columns=["code"])
    assert ds.train["code"].tolist() == ["1", "2", "A"]


# --- presets on the shared data ----------------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not (SHARED / "hdfs").is_dir(), reason=f"shared data not found at {SHARED}")


@needs_shared
def test_hdfs_preset_counts() -> None:
    ds = load_preset("hdfs")
    assert len(ds.train) + len(ds.validation) + ds.n_test_normal == 4855
    assert (len(ds.train), len(ds.validation), ds.n_test_normal) == (2184, 243, 2428)
    assert ds.n_test_abnormal == 16838
    assert ds.max_key == 28
    assert any("DeepLog" in note for note in ds.notes)


@needs_shared
def test_hadoop_preset_counts() -> None:
    ds = load_preset("hadoop", data=SHARED)  # the shared root is accepted too
    assert (len(ds.train), len(ds.validation)) == (15, 2)
    assert (ds.n_test_normal, ds.n_test_abnormal) == (150, 811)
    assert max(len(s) for s in ds.stream) == 99_001
    assert all(sid.startswith("application_") for sid in ds.stream_ids)


@needs_shared
def test_banknote_preset_counts() -> None:
    ds = load_preset("banknote")
    assert len(ds.train) + len(ds.validation) == 146
    assert (len(ds.train), len(ds.validation)) == (117, 29)
    assert (ds.n_test_normal, ds.n_test_abnormal) == (616, 610)
    assert ds.feature_columns == ["WaveletVariance", "WaveletSkewness", "WaveletCurtosis", "Entropy"]
    assert list(ds.train.index) == list(range(117))  # the first normal rows in file order
    assert any("586" in note for note in ds.notes)


def test_missing_shared_data_says_where_and_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_SHARED_DATA", str(tmp_path / "empty"))
    assert shared_data_root() == tmp_path / "empty"
    for name in ("hdfs", "banknote"):
        with pytest.raises(DatasetFormatError) as info:
            load_preset(name)
        assert str(tmp_path / "empty") in str(info.value)
        assert "--data" in str(info.value) and "LIFELONG_SHARED_DATA" in str(info.value)


def test_preset_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset preset 'nope'"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="needs a data path"):
        load_preset("sequences")
    path = _write(tmp_path / "v.csv", "x,label\n1,0\n2,0\n")
    with pytest.raises(ConfigError, match="train_normal"):
        load_preset("vectors", data=path)
    assert len(load_preset("vectors", data=path, train_normal=1, validation_fraction=0).train) == 1
    with pytest.raises(ConfigError, match="generated"):
        load_preset("synthetic-seq", data=tmp_path)


# --- synthetic sequences -----------------------------------------------------------------------------------
def _bigrams(sessions) -> set[tuple[int, int]]:
    return {pair for s in sessions for pair in zip(s, s[1:], strict=False)}


def test_synthetic_sequences_deterministic_and_seeded() -> None:
    a = synthetic_sequences(seed=4, n_train=300, n_test=400)
    assert _seq_equal(a, synthetic_sequences(seed=4, n_train=300, n_test=400))
    assert a.train != synthetic_sequences(seed=5, n_train=300, n_test=400).train
    # The training set does not depend on the stream size.
    assert a.train == synthetic_sequences(seed=4, n_train=300, n_test=50).train


def test_synthetic_sequences_stream_composition() -> None:
    ds = synthetic_sequences(
        seed=0, n_train=500, n_test=2000, anomaly_rate=0.1, drift_start=0.5, drift_rate=0.3
    )
    kinds = np.array(ds.stream_kinds)
    assert ds.n_test_abnormal == 200
    for kind in SEQUENCE_ANOMALY_KINDS:
        assert (kinds == kind).sum() == 40
    drift_pos = np.flatnonzero(kinds == "drift")
    assert drift_pos.min() >= 1000
    normals_after = ((kinds == "normal") | (kinds == "drift"))[1000:].sum()
    assert len(drift_pos) == round(0.3 * normals_after)
    assert not ds.stream_labels[drift_pos].any()
    lengths = [len(s) for s in ds.train]
    assert 8 <= min(lengths) and max(lengths) <= 45 and len(ds.validation) == 100
    assert max(k for s in ds.train + ds.validation for k in s) <= 26  # error keys never in normal sessions


def test_synthetic_anomalies_break_the_grammar() -> None:
    rng = np.random.default_rng(0)
    normal = _bigrams(sample_session(rng) for _ in range(20_000))
    for kind in ("missing_step", "extra_error", "wrong_order", "unknown_key"):
        sessions = [make_anomaly(rng, kind) for _ in range(300)]
        assert all(_bigrams([s]) - normal for s in sessions), kind
    # Drift is new behaviour (base model flags it); most subtle anomalies use only known transitions.
    assert all(_bigrams([sample_session(rng, "snapshot")]) - normal for _ in range(100))
    subtle = [bool(_bigrams([make_anomaly(rng, "subtle")]) - normal) for _ in range(500)]
    assert np.mean(subtle) < 0.3


# --- synthetic vectors -------------------------------------------------------------------------------------
def test_synthetic_vectors_deterministic_and_composed() -> None:
    a = synthetic_vectors(seed=2, n_train=400, n_test=1200)
    b = synthetic_vectors(seed=2, n_train=400, n_test=1200)
    assert a.train.equals(b.train) and a.stream.equals(b.stream) and a.stream_kinds == b.stream_kinds
    assert not a.train.equals(synthetic_vectors(seed=3, n_train=400, n_test=1200).train)
    assert a.feature_columns[-1] == "mode" and a.categorical_columns == ["mode"]
    assert set(a.train["mode"]) == {"idle", "batch", "interactive"}
    kinds = np.array(a.stream_kinds)
    for kind in VECTOR_ANOMALY_KINDS:
        assert (kinds == kind).sum() == 40
    assert np.flatnonzero(kinds == "drift").min() >= 600
    # "far" rows lie far out in standardised units; "near" rows do not (their marginals stay normal).
    num = a.feature_columns[:-1]
    z = ((a.stream[num] - a.train[num].mean()) / a.train[num].std()).abs().max(axis=1).to_numpy()
    assert np.median(z[kinds == "far"]) > 2 * np.median(z[kinds == "normal"])
    assert np.median(z[kinds == "near"]) < 1.5 * np.median(z[kinds == "normal"])


# --- telemetry ---------------------------------------------------------------------------------------------
def test_event_telemetry_inside_interval_and_ordered() -> None:
    start = datetime(2024, 3, 1, 6, tzinfo=UTC)
    events, truth = generate_event_telemetry(hour_index=6, interval_start=start, n_sessions=300, seed=9)
    assert events["timestamp"].min() >= pd.Timestamp(start)
    assert events["timestamp"].max() < pd.Timestamp(start + timedelta(hours=1))
    assert str(events["timestamp"].dt.tz) == "UTC"
    assert list(events.columns) == ["entity_id", "timestamp", "event_key", "seq"]
    assert truth["entity_id"].is_unique and len(truth) == 300
    assert set(events["entity_id"]) == set(truth["entity_id"])
    assert truth["entity_id"].iloc[0] == "s0006-00000"
    assert events["timestamp"].is_monotonic_increasing  # arrival order across sessions
    for _, group in events.groupby("entity_id"):
        group = group.sort_values("seq")
        assert group["seq"].tolist() == list(range(len(group)))
        assert group["timestamp"].is_monotonic_increasing and group["timestamp"].is_unique
    assert (truth["kind"] == "drift").sum() > 0 and truth["abnormal"].sum() == 24
    # Same (seed, hour) -> same frames; before drift_from_hour there is no drift.
    again, truth_again = generate_event_telemetry(hour_index=6, interval_start=start, n_sessions=300, seed=9)
    assert events.equals(again) and truth.equals(truth_again)
    _, early = generate_event_telemetry(hour_index=1, interval_start=start, n_sessions=300, seed=9)
    assert (early["kind"] == "drift").sum() == 0


def test_empty_hour() -> None:
    events, truth = generate_event_telemetry(
        hour_index=0, interval_start=datetime(2024, 1, 1), n_sessions=0, seed=0
    )
    assert (
        events.empty
        and truth.empty
        and list(events.columns) == ["entity_id", "timestamp", "event_key", "seq"]
    )


def test_event_telemetry_sessions_match_the_training_grammar() -> None:
    train = synthetic_sequences(seed=0, n_train=2000, n_test=10).train
    events, truth = generate_event_telemetry(
        hour_index=0, interval_start=datetime(2024, 1, 1), n_sessions=200, seed=1, anomaly_rate=0.0
    )
    sessions = events.sort_values(["entity_id", "seq"]).groupby("entity_id")["event_key"].apply(list)
    assert _bigrams(sessions) <= _bigrams(train)
    assert not truth["abnormal"].any()


def test_vector_telemetry_inside_interval() -> None:
    start = datetime(2024, 3, 1, 7, tzinfo=timezone(timedelta(hours=2)))  # 05:00 UTC
    rows, truth = generate_vector_telemetry(hour_index=8, interval_start=start, n_rows=250, seed=3)
    lo = pd.Timestamp("2024-03-01 05:00", tz="UTC")
    assert rows["timestamp"].min() >= lo and rows["timestamp"].max() < lo + pd.Timedelta(hours=1)
    assert rows["timestamp"].is_monotonic_increasing
    assert list(rows.columns[:2]) == ["entity_id", "timestamp"] and "mode" in rows.columns
    assert rows["entity_id"].tolist() == truth["entity_id"].tolist()
    assert truth["abnormal"].sum() == 20 and set(truth["kind"]) >= {"normal", "drift", *VECTOR_ANOMALY_KINDS}
    # The columns a model bootstrapped on synthetic_vectors expects.
    assert set(synthetic_vectors(n_train=10, n_test=10).feature_columns) <= set(rows.columns)
