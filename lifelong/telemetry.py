"""The two telemetry schemas (events, vectors), the score-frame schema, and events-to-sessions grouping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from lifelong.errors import DatasetFormatError

StreamKind = Literal["events", "vectors"]

ENTITY_ID = "entity_id"
TIMESTAMP = "timestamp"
EVENT_KEY = "event_key"
SEQ = "seq"

#: Columns of a score frame (one row per scored entity), as written by the scorer to ``scores/``.
#: ``sample`` is the JSON text of what was scored (an event-key list, or a feature record), so an analyst's
#: label can snapshot it later.
SCORE_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "score",
    "threshold",
    "abnormal",
    "model_version",
    "interval_start",
    "sample",
)


@dataclass(frozen=True)
class TelemetrySchema:
    """The columns one kind of telemetry stream carries.

    Attributes:
        kind: ``"events"`` or ``"vectors"``.
        required: Columns every batch must have, in canonical order.
        optional: Columns a batch may have; their meaning is fixed when present.
        description: One line for people (CLI help, reports).
    """

    kind: StreamKind
    required: tuple[str, ...]
    optional: tuple[str, ...]
    description: str

    @property
    def reserved(self) -> tuple[str, ...]:
        """Every column with a schema-defined meaning; the rest of a vectors frame are features."""
        return self.required + self.optional


EVENTS_SCHEMA = TelemetrySchema(
    kind="events",
    required=(ENTITY_ID, TIMESTAMP, EVENT_KEY),
    optional=(SEQ,),
    description="one row per log event: entity_id (session id, str), timestamp (UTC), event_key (int >= 0), "
    "optional seq (int, order within the entity)",
)
VECTORS_SCHEMA = TelemetrySchema(
    kind="vectors",
    required=(ENTITY_ID, TIMESTAMP),
    optional=(),
    description="one row per observation: entity_id (row id, str), timestamp (UTC), then feature columns "
    "(numeric, or string categorical)",
)
SCHEMAS: dict[str, TelemetrySchema] = {"events": EVENTS_SCHEMA, "vectors": VECTORS_SCHEMA}


def schema_for(kind: str) -> TelemetrySchema:
    """The schema of a stream kind.

    Args:
        kind: ``"events"`` or ``"vectors"``.

    Returns:
        The matching :class:`TelemetrySchema`.

    Raises:
        ValueError: ``kind`` is not a known stream kind.
    """
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {sorted(SCHEMAS)}") from None


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a vectors frame: every column but ``entity_id`` and ``timestamp``, in order."""
    reserved = set(VECTORS_SCHEMA.reserved)
    return [str(c) for c in df.columns if c not in reserved]


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Turn a timestamp column into ``datetime64[.., UTC]``; what cannot be read becomes ``NaT``.

    Naive datetimes are taken as UTC; aware ones are converted. Text is read as ISO 8601
    (``2024-01-01T05:00:00Z``, ``2024-01-01 05:00:00+00:00``, ...). Numbers are *not* guessed as epoch
    seconds or milliseconds: the schema says UTC datetime, so they become ``NaT`` and validation reports them.

    Args:
        values: The raw column (any dtype).

    Returns:
        A series with the same index and a UTC datetime dtype.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    # Object columns may mix text with non-text values; only text and datetimes are readable.
    if values.dtype == object:
        readable = values.map(lambda v: isinstance(v, str | pd.Timestamp), na_action="ignore")
        values = values.where(readable.fillna(False).astype(bool))
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def normalize_columns(df: pd.DataFrame, *, text_format: bool) -> pd.DataFrame:
    """Give a freshly read chunk the schema's physical types where that loses nothing.

    ``timestamp`` always becomes UTC datetime (unreadable values become ``NaT`` so validation can count them).
    In text formats (CSV, JSON Lines) ``entity_id`` is read as text, since ``"0042"`` and ``42`` are the same
    token there; in Parquet its stored type is kept, so a wrong type is caught by validation.

    Args:
        df: One chunk as read from a file.
        text_format: Whether the chunk came from CSV or JSON Lines.

    Returns:
        The same frame, modified in place and returned for chaining.
    """
    if TIMESTAMP in df.columns:
        df[TIMESTAMP] = parse_timestamps(df[TIMESTAMP])
    if text_format and ENTITY_ID in df.columns and not isinstance(df[ENTITY_ID].dtype, pd.StringDtype):
        ids = df[ENTITY_ID]
        # JSON numbers arrive as floats when a null is present; 42.0 must read back as "42", not "42.0".
        if pd.api.types.is_float_dtype(ids.dtype):
            whole = (ids.notna() & np.isfinite(ids) & (ids == np.floor(ids))).to_numpy()
            cells = ids.to_numpy(dtype=object)
            cells[whole] = ids.to_numpy()[whole].astype("int64")
            ids = pd.Series(cells, index=ids.index)
        elif ids.dtype == object:
            ids = ids.map(_id_text, na_action="ignore")
        df[ENTITY_ID] = ids.astype("str")
    return df


def events_to_sessions(df: pd.DataFrame) -> dict[str, list[int]]:
    """Group an events frame into the ordered event-key sequence of each entity (session).

    Order within an entity: ``seq`` when the column is present, else ``timestamp``; ties keep file order
    (the sort is stable). Entities appear in the order of their first row. Vectorised: one factorize, one
    stable lexsort and one split, no per-row Python loop.

    Args:
        df: Events frame with ``entity_id``, ``event_key`` and ``seq`` or ``timestamp`` (n rows).

    Returns:
        ``{entity_id: [event_key, ...]}``.

    Raises:
        DatasetFormatError: A needed column is missing, or ids/keys/order values are null or not integers.
    """
    order_col = SEQ if SEQ in df.columns else TIMESTAMP
    missing = [c for c in (ENTITY_ID, EVENT_KEY, order_col) if c not in df.columns]
    if missing:
        raise DatasetFormatError(f"events frame lacks column(s) {missing}; it has {list(df.columns)}")
    if df.empty:
        return {}

    codes, uniques = pd.factorize(df[ENTITY_ID], use_na_sentinel=True)  # (n,), first-appearance order
    if (codes < 0).any():
        raise DatasetFormatError(f"{int((codes < 0).sum())} event(s) have no entity_id")
    keys = _as_int64(df[EVENT_KEY], EVENT_KEY)  # (n,)
    if order_col == SEQ:
        order_values = _as_int64(df[SEQ], SEQ)
    else:
        stamps = parse_timestamps(df[TIMESTAMP])
        if stamps.isna().any():
            raise DatasetFormatError(
                f"{int(stamps.isna().sum())} event(s) have a null or unreadable timestamp"
            )
        order_values = stamps.to_numpy(dtype="datetime64[ns]").view("int64")

    # lexsort sorts by the last key first and is stable: entity, then order value, then file position.
    order = np.lexsort((order_values, codes))
    sorted_codes = codes[order]
    sorted_keys = keys[order]
    bounds = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    ids = [str(u) for u in uniques]
    return {entity: part.tolist() for entity, part in zip(ids, np.split(sorted_keys, bounds), strict=True)}


def _id_text(value: object) -> str:
    """One id as text, with whole floats written without a fractional part."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_int64(values: pd.Series, name: str) -> np.ndarray:
    """The column as an int64 array, refusing nulls and fractional values rather than truncating them."""
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype="int64")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric) | (numeric != np.floor(numeric))
    if bad.any():
        example = values[bad].iloc[0]
        example = example.item() if isinstance(example, np.generic) else example  # 1.5, not np.float64(1.5)
        raise DatasetFormatError(
            f"{int(bad.sum())} value(s) of column {name!r} are not integers, e.g. {example!r}"
        )
    return numeric.to_numpy(dtype="int64")
