"""Feature-vector datasets: the ``VectorDataset`` container and the CSV loader (banknote, ...)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lifelong.errors import DatasetFormatError

logger = logging.getLogger(__name__)

# Spellings read as a missing value in a numeric column (compared case-insensitively).
MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})
SOURCE_ROW = "source_row"

_SHUFFLE_STREAM = 2


@dataclass(frozen=True, eq=False)
class VectorDataset:
    """Feature rows split for zero-positive training and a labelled test stream.

    The frames hold only ``feature_columns`` (never the label). Numeric columns are float64 (NaN where a value
    is missing); string columns stay object dtype for the autoencoder's one-hot encoding. For a CSV source the
    index is ``source_row``, the 0-based data row in the file, so any sample can be traced back.

    Attributes:
        name: Dataset name.
        train: Normal rows to fit on.
        validation: Held-out normal rows (threshold calibration, the forgetting memory set).
        stream: The test stream in arrival order.
        stream_labels: Bool array (N,), True where the stream row is abnormal.
        stream_kinds: Per stream row: ``"normal"``, ``"drift"`` or the anomaly kind (``"abnormal"`` when the
            source does not say).
        feature_columns: The model's input columns, in order.
        notes: Decisions a reader should know.
    """

    name: str
    train: pd.DataFrame
    validation: pd.DataFrame
    stream: pd.DataFrame
    stream_labels: np.ndarray
    stream_kinds: list[str]
    feature_columns: list[str]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        labels = np.asarray(self.stream_labels, dtype=bool)
        object.__setattr__(self, "stream_labels", labels)
        n = len(self.stream)
        if labels.shape != (n,) or len(self.stream_kinds) != n:
            raise ValueError(
                f"{self.name}: stream has {n} rows but {labels.shape[0] if labels.ndim else 0} labels "
                f"and {len(self.stream_kinds)} kinds"
            )
        for part in ("train", "validation", "stream"):
            missing = [c for c in self.feature_columns if c not in getattr(self, part).columns]
            if missing:
                raise ValueError(f"{self.name}: {part} lacks feature columns {missing}")

    @property
    def n_test_normal(self) -> int:
        """Number of normal rows (including drift) in the stream."""
        return int((~self.stream_labels).sum())

    @property
    def n_test_abnormal(self) -> int:
        """Number of abnormal rows in the stream."""
        return int(self.stream_labels.sum())

    @property
    def categorical_columns(self) -> list[str]:
        """Feature columns holding strings (one-hot encoded by the model)."""
        return [c for c in self.feature_columns if not pd.api.types.is_numeric_dtype(self.train[c])]

    def summary(self) -> dict[str, int | str]:
        """Counts per split, JSON-able."""
        return {
            "name": self.name,
            "train": len(self.train),
            "validation": len(self.validation),
            "stream": len(self.stream),
            "test_normal": self.n_test_normal,
            "test_abnormal": self.n_test_abnormal,
            "drift": sum(k == "drift" for k in self.stream_kinds),
        }


def _as_float(value: str) -> float | None:
    """The float a cell holds, NaN for a missing-value token, None when it is not a number."""
    if value.strip().lower() in MISSING_TOKENS:
        return float("nan")
    try:
        return float(value)
    except ValueError:
        return None


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and the physical line each data row starts on."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc.strerror})") from None
    rows: list[list[str]] = []
    lines: list[int] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DatasetFormatError(f"{path}: empty file; expected a header row")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header) or "" in header:
                raise DatasetFormatError(
                    f"{path}, line 1: header {header} has an empty or repeated column name"
                )
            start = reader.line_num + 1
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    if len(row) != len(header):
                        raise DatasetFormatError(
                            f"{path}, line {start}: {len(row)} values, "
                            f"but the header has {len(header)} columns"
                        )
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DatasetFormatError(f"{path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DatasetFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return header, rows, lines


def _build_column(
    path: Path, column: str, values: list[str], lines: list[int], categorical: bool
) -> pd.Series:
    """A float64 column, or an object column of stripped strings (None where missing) when categorical."""
    if not categorical:
        parsed = [_as_float(v) for v in values]
        bad = [i for i, v in enumerate(parsed) if v is None]
        if not bad:
            return pd.Series(parsed, dtype="float64", name=column)
        # A column that is mostly numbers with a few words is a corrupt numeric column, not a category.
        if len(bad) * 2 < len(values):
            i = bad[0]
            raise DatasetFormatError(
                f"{path}, line {lines[i]}: column {column!r} is numeric but holds {values[i]!r} "
                f"({len(bad)} such values); fix the value or pass it in categorical_columns"
            )
    cells = [None if v.strip().lower() in MISSING_TOKENS else v.strip() for v in values]
    return pd.Series(cells, dtype="object", name=column)


def _is_normal(label: str, normal_value: object) -> bool:
    """Whether a label cell means normal: equal as text ("0" == "0") or as a number ("0.0" == 0)."""
    if label.strip() == str(normal_value).strip():
        return True
    number = _as_float(label)
    target = _as_float(str(normal_value))
    return number is not None and target is not None and not np.isnan(number) and number == target


def load_vector_csv(
    path: str | Path,
    *,
    train_normal: int,
    label_column: str | None = None,
    normal_value: object = 0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    categorical_columns: Sequence[str] = (),
) -> VectorDataset:
    """Load a labelled CSV (with a header) as a zero-positive training set and a shuffled test stream.

    The first ``train_normal`` normal rows in file order are the model's normal data; the last
    ``validation_fraction`` of them is the validation split (file order, not random, so the split does not
    depend on the seed). Every other row, normal or not, is the test stream in a seeded shuffle.

    A column is numeric when every non-missing value parses as a float. A column whose values are mostly not
    numbers is categorical and kept as strings; a mostly-numeric column with a few words is an error, unless
    it is named in ``categorical_columns``. Missing values (empty, NA, NaN, null) become NaN and are kept;
    their count goes into the notes so the model side can decide.

    Args:
        path: The CSV file.
        train_normal: How many normal rows (from the top) train the model, validation included.
        label_column: The label column; default: the last column.
        normal_value: The label value of normal rows (compared as text and as a number).
        validation_fraction: Share of the ``train_normal`` rows held out as validation, in [0, 1).
        seed: Seed of the stream shuffle.
        name: Dataset name; default: the file's stem.
        categorical_columns: Feature columns to keep as strings whatever they hold.

    Returns:
        The dataset, with ``stream_kinds`` ``"normal"`` / ``"abnormal"``.

    Raises:
        DatasetFormatError: A missing file or label column, a row with the wrong number of values, a word in
            a numeric column, an empty label, or fewer normal rows than ``train_normal``.
        ValueError: ``train_normal`` or ``validation_fraction`` is out of range.
    """
    path = Path(path)
    if train_normal < 1:
        raise ValueError(f"train_normal must be >= 1, got {train_normal}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    header, rows, lines = _read_rows(path)
    label_column = label_column or header[-1]
    if label_column not in header:
        raise DatasetFormatError(f"{path}: no label column {label_column!r}; the columns are {header}")
    unknown = [c for c in categorical_columns if c not in header or c == label_column]
    if unknown:
        raise DatasetFormatError(f"{path}: categorical_columns {unknown} are not feature columns of {header}")
    if not rows:
        raise DatasetFormatError(f"{path}: no data rows")

    label_pos = header.index(label_column)
    feature_columns = [c for c in header if c != label_column]
    labels_text = [row[label_pos] for row in rows]
    for text, line in zip(labels_text, lines, strict=True):
        if text.strip().lower() in MISSING_TOKENS:
            raise DatasetFormatError(f"{path}, line {line}: empty label in column {label_column!r}")
    abnormal = np.array([not _is_normal(t, normal_value) for t in labels_text], dtype=bool)

    columns = {
        c: _build_column(path, c, [row[header.index(c)] for row in rows], lines, c in categorical_columns)
        for c in feature_columns
    }
    frame = pd.DataFrame(columns, columns=feature_columns)
    frame.index = pd.RangeIndex(len(frame), name=SOURCE_ROW)

    normal_rows = np.flatnonzero(~abnormal)
    if len(normal_rows) < train_normal:
        raise DatasetFormatError(
            f"{path}: {len(normal_rows)} rows have {label_column}={normal_value!r}, "
            f"fewer than train_normal={train_normal}"
        )
    model_rows = normal_rows[:train_normal]
    n_val = int(np.floor(train_normal * validation_fraction + 0.5))
    if validation_fraction > 0 and n_val == 0 and train_normal >= 2:
        n_val = 1
    train_rows, val_rows = model_rows[: train_normal - n_val], model_rows[train_normal - n_val :]
    in_model = np.zeros(len(frame), dtype=bool)
    in_model[model_rows] = True
    stream_rows = np.flatnonzero(~in_model)
    stream_rows = stream_rows[np.random.default_rng([seed, _SHUFFLE_STREAM]).permutation(len(stream_rows))]
    stream_labels = abnormal[stream_rows]

    notes = [
        f"model rows: the first {train_normal} rows with {label_column}={normal_value!r} in file order; "
        f"train {len(train_rows)}, validation {len(val_rows)} (the last {validation_fraction:.0%} of them)",
        f"stream: every other row, {int((~stream_labels).sum())} normal + "
        f"{int(stream_labels.sum())} abnormal, in a seeded shuffle (seed {seed})",
    ]
    categorical = [c for c in feature_columns if columns[c].dtype == object]
    if categorical:
        notes.append(f"categorical (string) columns kept for one-hot encoding: {categorical}")
    for part, idx in (("train", train_rows), ("validation", val_rows), ("stream", stream_rows)):
        n_missing = int(frame.iloc[idx].isna().any(axis=1).sum())
        if n_missing:
            notes.append(f"{part}: {n_missing} rows have a missing (NaN) feature value; they are kept")

    dataset = VectorDataset(
        name=name or path.stem,
        train=frame.iloc[train_rows].copy(),
        validation=frame.iloc[val_rows].copy(),
        stream=frame.iloc[stream_rows].copy(),
        stream_labels=stream_labels,
        stream_kinds=["abnormal" if a else "normal" for a in stream_labels],
        feature_columns=feature_columns,
        notes=notes,
    )
    logger.info("loaded %s from %s: %s", dataset.name, path, dataset.summary())
    return dataset
