"""Validate one telemetry batch with GX; turn the result into an outcome people can read."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lifelong.telemetry import ENTITY_ID, EVENT_KEY, SEQ, TIMESTAMP, StreamKind, parse_timestamps
from lifelong.telemetry import feature_columns as default_feature_columns
from lifelong.validation.suites import PARAM_END, PARAM_START, SuiteSpec, batch_definition, build_suite

if TYPE_CHECKING:
    from lifelong.settings import Settings

logger = logging.getLogger(__name__)

# GX contexts are not documented as thread-safe; validations in one process take turns.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ValidationOutcome:
    """What a validation found: pass/fail, what failed and why, and the full GX result.

    Attributes:
        success: No critical expectation failed (warnings such as an unknown-key surge do not count).
        failed: ``"<expectation>(<column>): <reason> (<n> bad rows)"`` for each failed critical expectation.
        result_json: The GX validation result as plain JSON (non-finite numbers written as strings), with
            this outcome's counts under ``meta.lifelong``.
        summary: Readable multi-line text: verdict, each failed expectation with bad-row counts and examples,
            and the warnings.
        unknown_keys: Event keys outside the model's vocabulary (0 without a vocabulary or for vectors).
        unknown_key_share: ``unknown_keys`` over the non-null event keys.
        surge: ``unknown_key_share`` exceeds ``settings.unknown_key_surge``.
        rows: Rows in the batch.
        warnings: Readable warnings (the surge), also in ``summary``.
        seconds: Wall time of the validation.
    """

    success: bool
    failed: list[str]
    result_json: dict[str, Any]
    summary: str
    unknown_keys: int
    unknown_key_share: float
    surge: bool
    rows: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def brief(self) -> dict[str, Any]:
        """A small JSON-able digest (for XCom, logs, manifests); the full result stays in ``result_json``."""
        return {
            "success": self.success,
            "failed": list(self.failed),
            "rows": self.rows,
            "unknown_keys": self.unknown_keys,
            "unknown_key_share": round(self.unknown_key_share, 6),
            "surge": self.surge,
            "warnings": list(self.warnings),
        }


def _utc(instant: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(instant)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def _is_numeric(series: pd.Series) -> bool:
    dtype = series.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _prepare(
    df: pd.DataFrame,
    *,
    kind: StreamKind,
    feature_cols: Sequence[str] | None,
    categorical: Collection[str] | None,
) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...], int, dict[str, int]]:
    """The frame GX sees, its numeric and categorical features, unreadable timestamps, wrong-type row counts.

    Timestamps become UTC datetimes (unreadable ones ``NaT``, so the not-null check counts them); pandas
    string and categorical columns become object columns of ``str`` so GX's type check can read them.
    The caller's frame is not modified.
    """
    frame = df.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    unreadable = 0
    if TIMESTAMP in frame.columns:
        raw = frame[TIMESTAMP]
        parsed = parse_timestamps(raw)
        unreadable = int((parsed.isna() & raw.notna()).sum())
        frame[TIMESTAMP] = parsed

    numeric: tuple[str, ...] = ()
    cats: tuple[str, ...] = ()
    if kind == "vectors":
        names = list(feature_cols) if feature_cols is not None else default_feature_columns(frame)
        if categorical is not None:
            cat_set = set(categorical)
        else:
            # Without the model's word on it, a feature is categorical when its column holds text.
            cat_set = {c for c in names if c in frame.columns and not _is_numeric(frame[c])}
        numeric = tuple(c for c in names if c not in cat_set)
        cats = tuple(c for c in names if c in cat_set)

    for column in (ENTITY_ID, *numeric, *cats):
        if column in frame.columns:
            dtype = frame[column].dtype
            if isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
                frame[column] = frame[column].astype(object)
    integer = (EVENT_KEY, SEQ) if kind == "events" else ()
    return frame, numeric, cats, unreadable, _wrong_type_rows(frame, integer, (ENTITY_ID, *cats), numeric)


def _wrong_type_rows(
    frame: pd.DataFrame, integer: Sequence[str], text: Sequence[str], numeric: Sequence[str]
) -> dict[str, int]:
    """Bad-row counts for columns whose dtype itself fails a type check (GX then reports only the dtype).

    Object columns are checked value by value by GX and need nothing here. For an integer column stored as
    floats, the bad rows are the values with a fractional part; for any other wrong dtype, every non-null row.
    """
    counts: dict[str, int] = {}
    for column in integer:
        if column in frame.columns and frame[column].dtype != object:
            values = frame[column]
            if pd.api.types.is_float_dtype(values.dtype):
                counts[column] = int((values.notna() & (values != np.floor(values))).sum())
            elif not pd.api.types.is_integer_dtype(values.dtype):
                counts[column] = int(values.notna().sum())
    for column in text:
        if column in frame.columns and frame[column].dtype != object:
            counts[column] = int(frame[column].notna().sum())
    for column in numeric:
        if column in frame.columns and frame[column].dtype != object and not _is_numeric(frame[column]):
            counts[column] = int(frame[column].notna().sum())
    return counts


def validate_batch(
    df: pd.DataFrame,
    *,
    kind: StreamKind,
    interval_start: datetime,
    interval_end: datetime,
    settings: Settings,
    known_keys: Collection[int] | None = None,
    feature_columns: Sequence[str] | None = None,
    categorical_columns: Collection[str] | None = None,
) -> ValidationOutcome:
    """Validate a telemetry batch against its schema's suite for the data interval [start, end).

    Checks: required columns; non-null, text ``entity_id``; non-null timestamps inside the interval;
    non-negative integer ``event_key`` (and ``seq``, unique per entity) for events; finite numeric
    features inside ``[settings.feature_min, settings.feature_max]`` and non-null text categorical features
    for vectors; no duplicate rows; row count inside ``[settings.min_rows, settings.max_rows]``. Event keys
    outside ``known_keys`` are counted; a share above ``settings.unknown_key_surge`` is a warning, not a
    failure.

    Args:
        df: The batch (not modified). Timestamps may be datetimes or ISO 8601 text; naive means UTC.
        kind: ``"events"`` or ``"vectors"``.
        interval_start: Start of the data interval (inclusive).
        interval_end: End of the data interval (exclusive).
        settings: Thresholds (row bounds, feature bounds, surge share).
        known_keys: The model's event-key vocabulary; ``None`` skips the unknown-key count.
        feature_columns: Vectors: the feature columns the model expects (default: every non-reserved column).
        categorical_columns: Vectors: which features are text (default: those whose dtype is not numeric).

    Returns:
        The outcome; a failed batch is a returned outcome (``success=False``), not an exception.

    Raises:
        ValueError: ``kind`` is unknown or the interval is empty.
    """
    if kind not in ("events", "vectors"):
        raise ValueError(f"unknown telemetry kind {kind!r}; expected 'events' or 'vectors'")
    start, end = _utc(interval_start), _utc(interval_end)
    if end <= start:
        raise ValueError(f"empty data interval [{start.isoformat()}, {end.isoformat()})")

    started = time.perf_counter()
    frame, numeric, cats, unreadable, wrong_type = _prepare(
        df, kind=kind, feature_cols=feature_columns, categorical=categorical_columns
    )
    vocabulary = None
    if known_keys is not None and kind == "events":
        vocabulary = frozenset(int(k) for k in known_keys)
    spec = SuiteSpec(
        kind=kind,
        columns=tuple(frame.columns),
        numeric_dtype=frozenset(c for c in frame.columns if _is_numeric(frame[c])),
        numeric_features=numeric,
        categorical_features=cats,
        known_keys=vocabulary,
        feature_min=settings.feature_min,
        feature_max=settings.feature_max,
        min_rows=settings.min_rows,
        max_rows=settings.max_rows,
        unknown_key_surge=settings.unknown_key_surge,
    )
    with _LOCK:
        suite = build_suite(spec)
        batch = batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite,
            expectation_parameters={PARAM_START: start, PARAM_END: end},
            result_format="SUMMARY",
        )
    result_json = json_safe(result.to_json_dict())
    seconds = time.perf_counter() - started
    return _outcome(
        result_json,
        spec,
        rows=len(frame),
        start=start,
        end=end,
        unreadable=unreadable,
        wrong_type=wrong_type,
        surge_share=settings.unknown_key_surge,
        seconds=seconds,
    )


def _outcome(
    result_json: dict[str, Any],
    spec: SuiteSpec,
    *,
    rows: int,
    start: pd.Timestamp,
    end: pd.Timestamp,
    unreadable: int,
    wrong_type: dict[str, int],
    surge_share: float,
    seconds: float,
) -> ValidationOutcome:
    """Read the GX result: failed critical expectations, the unknown-key counts, the summary text."""
    failed: list[str] = []
    details: list[str] = []
    unknown = 0
    known_total = 0
    counted_keys = False
    for item in result_json.get("results", []):
        config = item.get("expectation_config", {})
        meta = config.get("meta") or {}
        res = item.get("result") or {}
        if meta.get("check") == "unknown_keys":
            counted_keys = True
            unknown = int(res.get("unexpected_count") or 0)
            known_total = int(res.get("element_count") or 0) - int(res.get("missing_count") or 0)
            continue
        if item.get("success") or config.get("severity", "critical") != "critical":
            continue
        label = _label(config)
        typed = wrong_type.get((config.get("kwargs") or {}).get("column", ""))
        if typed is not None and res.get("unexpected_count") is None and "observed_value" in res:
            # A column-level type failure: GX observed only the dtype; give the rows it affects.
            res = {**res, "unexpected_count": typed, "column_type": res["observed_value"]}
        failed.append(f"{label}: {meta.get('reason', 'failed')}{_bad_rows(res, rows)}")
        details.append(_detail(label, meta, res, rows, config, unreadable))

    share = unknown / known_total if known_total else 0.0
    surge = share > surge_share
    warnings: list[str] = []
    if surge:
        warnings.append(
            f"unknown event keys surge: {unknown} of {known_total} keys ({share:.2%}) are outside the "
            f"model's vocabulary, above the {surge_share:.2%} threshold"
        )
    success = not failed
    evaluated = result_json.get("statistics", {}).get("evaluated_expectations", 0)
    lines = [
        f"{spec.kind} batch [{start.isoformat()}, {end.isoformat()}): {'PASSED' if success else 'FAILED'}, "
        f"{len(failed)} of {evaluated} expectations failed, {rows} rows"
    ]
    lines += [f"- {d}" for d in details]
    if spec.known_keys is not None and not counted_keys:
        lines.append("unknown event keys: not counted (event_key is missing or not numeric)")
    elif spec.known_keys is not None:
        lines.append(
            f"unknown event keys: {unknown} of {known_total} ({share:.2%}); surge threshold {surge_share:.2%}"
        )
    lines += [f"WARNING: {w}" for w in warnings]

    result_json.setdefault("meta", {})["lifelong"] = {
        "kind": spec.kind,
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "rows": rows,
        "unreadable_timestamps": unreadable,
        "unknown_keys": unknown,
        "unknown_key_share": share,
        "surge": surge,
        "success": success,
        "failed": failed,
        "warnings": warnings,
    }
    outcome = ValidationOutcome(
        success=success,
        failed=failed,
        result_json=result_json,
        summary="\n".join(lines),
        unknown_keys=unknown,
        unknown_key_share=share,
        surge=surge,
        rows=rows,
        warnings=warnings,
        seconds=seconds,
    )
    log = logger.info if success else logger.warning
    log(
        "validated %s batch of %d rows in %.3f s: %s", spec.kind, rows, seconds, "; ".join(failed) or "passed"
    )
    return outcome


def _label(config: dict[str, Any]) -> str:
    kwargs = config.get("kwargs") or {}
    target = kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or "table"
    if (
        config.get("type") == "expect_compound_columns_to_be_unique"
        and len(kwargs.get("column_list") or []) > 2
    ):
        target = "all columns"
    return f"{config.get('type', 'expectation')}({target})"


def _missing_columns(res: dict[str, Any]) -> list[str]:
    return list(((res.get("details") or {}).get("mismatched") or {}).get("missing") or [])


def _bad_rows(res: dict[str, Any], rows: int) -> str:
    """The short count that ends a ``failed`` entry: bad rows, missing columns, or what GX observed."""
    if missing := _missing_columns(res):
        return f": {missing}"
    if "unexpected_count" in res and res["unexpected_count"] is not None:
        typed = f", column type {res['column_type']}" if "column_type" in res else ""
        return f" ({int(res['unexpected_count'])} of {rows} rows{typed})"
    if "observed_value" in res:
        return f" (observed {_short(res['observed_value'])})"
    return ""


def _detail(
    label: str, meta: dict[str, Any], res: dict[str, Any], rows: int, config: dict[str, Any], unreadable: int
) -> str:
    reason = meta.get("reason", "failed")
    if config.get("type") == "expect_table_columns_to_match_set":
        missing = _missing_columns(res)
        return f"{label}: {reason}: missing {missing}, the batch has {_short(res.get('observed_value'))}"
    if res.get("unexpected_count") is not None:
        count = int(res["unexpected_count"])
        text = f"{label}: {reason}: {count} of {rows} rows ({count / rows if rows else 0:.2%})"
        if "column_type" in res:
            text += f", column type {res['column_type']}"
        examples = res.get("partial_unexpected_list") or []
        if examples:
            text += f", e.g. {_short(examples[:5])}"
        if meta.get("check") == "timestamp_null" and unreadable:
            text += f"; {unreadable} of them unreadable, not null"
        return text
    return f"{label}: {reason} (observed {_short(res.get('observed_value'))})"


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_safe(value: Any) -> Any:
    """A copy of ``value`` strict JSON accepts: non-finite floats become ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
