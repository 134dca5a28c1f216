"""Great Expectations suites for the two telemetry schemas, built from a hashable spec and cached.

A suite depends on the batch's shape (which columns it has, which are numeric) and on the settings, never on
the interval: the interval bounds are GX suite parameters (``$PARAMETER``) filled in at validation time, so
one suite object serves every hourly run of a stream.

Every expectation carries ``meta = {"check": <short id>, "reason": <what a failure means>}``; the validation
summary and the ``failed`` list are written from those, so the text people read and the suite cannot drift.
Expectations with ``severity="warning"`` (the unknown-key surge) are reported, never failed.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lifelong.telemetry import ENTITY_ID, EVENT_KEY, SEQ, TIMESTAMP, StreamKind, schema_for

if TYPE_CHECKING:
    import great_expectations as gx

logger = logging.getLogger(__name__)

#: Suite parameter names of the data interval [start, end).
PARAM_START = "interval_start"
PARAM_END = "interval_end"

#: GX type names accepted as integers: numpy dtypes, pandas nullable dtypes, Python ``int`` in object columns.
INT_TYPES: tuple[str, ...] = (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
    "int",
)  # fmt: skip
#: GX type names accepted as numeric features: the integers plus floats.
NUMERIC_TYPES: tuple[str, ...] = INT_TYPES + (
    "float16",
    "float32",
    "float64",
    "Float32Dtype",
    "Float64Dtype",
    "float",
)
#: Text columns are validated as object columns of Python ``str`` (pandas' own string dtypes are cast first,
#: since GX 1.x does not recognise pandas 3's ``str`` dtype).
TEXT_TYPES: tuple[str, ...] = ("str",)

# Largest finite float: bounds are clamped to it so that +-inf always fails the range check, even when the
# configured bounds are infinite.
_FINITE = sys.float_info.max


@dataclass(frozen=True)
class SuiteSpec:
    """Everything a suite depends on; hashable, so equal specs share one cached suite.

    Attributes:
        kind: ``"events"`` or ``"vectors"``.
        columns: The batch's columns, in order (the duplicate-row check spans all of them).
        numeric_dtype: Columns whose dtype is numeric (range checks are only meaningful on those).
        numeric_features: Feature columns that must be numeric (vectors).
        categorical_features: Feature columns that must be text (vectors).
        known_keys: The model's event-key vocabulary, or ``None`` to skip the unknown-key count.
        feature_min: Lowest allowed feature value.
        feature_max: Highest allowed feature value.
        min_rows: Fewest rows allowed.
        max_rows: Most rows allowed.
        unknown_key_surge: Share of unknown keys above which a warning is reported.
    """

    kind: StreamKind
    columns: tuple[str, ...]
    numeric_dtype: frozenset[str]
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    known_keys: frozenset[int] | None
    feature_min: float
    feature_max: float
    min_rows: int
    max_rows: int
    unknown_key_surge: float

    @property
    def required(self) -> tuple[str, ...]:
        """Columns the batch must have: the schema's required ones plus the named features."""
        return schema_for(self.kind).required + self.numeric_features + self.categorical_features


def _meta(check: str, reason: str) -> dict[str, Any]:
    return {"check": check, "reason": reason}


@lru_cache(maxsize=1)
def batch_definition() -> Any:
    """The process-wide ephemeral GX context's whole-dataframe batch definition, created on first use.

    Importing GX and creating a context costs seconds; caching them makes later validations in the same
    process (several files per scoring run, tests) cost only the validation itself.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    started = time.perf_counter()
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        # No usage reporting from pipeline workers (they often have no route out anyway), no progress bars
        # in task logs.
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_definition = (
        context.data_sources.add_pandas("lifelong_telemetry")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    logger.info("Great Expectations context ready in %.2f s", time.perf_counter() - started)
    return batch_definition


@lru_cache(maxsize=64)
def build_suite(spec: SuiteSpec) -> gx.ExpectationSuite:
    """The expectation suite for a batch of this shape (cached; do not mutate the result).

    Checks, in order: required columns present; row count within bounds; no duplicate rows; per column,
    non-null values of the right type; timestamps inside [``$interval_start``, ``$interval_end``);
    non-negative integer event keys; finite features inside the bounds; and, as a warning only, the share of
    event keys outside ``known_keys``. Column checks are added only for columns the batch has: a missing
    column is reported once, by the column-set expectation.

    Args:
        spec: The batch shape and thresholds.

    Returns:
        A GX ``ExpectationSuite`` named after the stream kind.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    batch_definition()  # GX needs an active context before a suite can be built
    present = set(spec.columns)
    suite = gx.ExpectationSuite(name=f"lifelong_{spec.kind}")
    add = suite.add_expectation

    add(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(spec.required),
            exact_match=False,
            meta=_meta("columns", "required column(s) missing"),
        )
    )
    add(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=spec.min_rows,
            max_value=spec.max_rows,
            meta=_meta("row_count", f"row count outside [{spec.min_rows}, {spec.max_rows}]"),
        )
    )
    if spec.columns:
        add(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=list(spec.columns),
                meta=_meta("duplicates", "duplicate rows (identical in every column)"),
            )
        )

    if ENTITY_ID in present:
        add(gxe.ExpectColumnValuesToNotBeNull(column=ENTITY_ID, meta=_meta("entity_null", "null entity_id")))
        add(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=ENTITY_ID,
                type_list=list(TEXT_TYPES),
                meta=_meta("entity_type", "entity_id is not text"),
            )
        )
    if TIMESTAMP in present:
        add(
            gxe.ExpectColumnValuesToNotBeNull(
                column=TIMESTAMP,
                meta=_meta(
                    "timestamp_null", "null or unreadable timestamp (expected ISO 8601 / UTC datetime)"
                ),
            )
        )
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column=TIMESTAMP,
                min_value={"$PARAMETER": PARAM_START},
                max_value={"$PARAMETER": PARAM_END},
                strict_max=True,
                meta=_meta("timestamp_interval", "timestamp outside the data interval [start, end)"),
            )
        )

    if spec.kind == "events":
        _add_integer_column(add, gxe, spec, EVENT_KEY, "event_key")
        if SEQ in present:
            _add_integer_column(add, gxe, spec, SEQ, "seq")
            if ENTITY_ID in present:
                add(
                    gxe.ExpectCompoundColumnsToBeUnique(
                        column_list=[ENTITY_ID, SEQ],
                        meta=_meta("seq_unique", "two events of one entity share a seq position"),
                    )
                )
        if EVENT_KEY in present and spec.known_keys is not None and EVENT_KEY in spec.numeric_dtype:
            add(
                gxe.ExpectColumnValuesToBeInSet(
                    column=EVENT_KEY,
                    value_set=sorted(spec.known_keys),
                    mostly=1.0 - spec.unknown_key_surge,
                    severity="warning",
                    meta=_meta("unknown_keys", "event keys outside the model's vocabulary"),
                )
            )
    else:
        low = max(spec.feature_min, -_FINITE)
        high = min(spec.feature_max, _FINITE)
        for column in spec.numeric_features:
            if column not in present:
                continue
            add(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=column, meta=_meta("feature_null", f"feature {column} is NaN or null")
                )
            )
            add(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=column,
                    type_list=list(NUMERIC_TYPES),
                    meta=_meta("feature_type", f"feature {column} is not numeric"),
                )
            )
            if column in spec.numeric_dtype:
                add(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=column,
                        min_value=low,
                        max_value=high,
                        meta=_meta(
                            "feature_bounds",
                            f"feature {column} infinite or outside "
                            f"[{spec.feature_min:g}, {spec.feature_max:g}]",
                        ),
                    )
                )
        for column in spec.categorical_features:
            if column not in present:
                continue
            add(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=column, meta=_meta("feature_null", f"categorical feature {column} is null")
                )
            )
            add(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=column,
                    type_list=list(TEXT_TYPES),
                    meta=_meta("feature_type", f"categorical feature {column} is not text"),
                )
            )
    return suite


def _add_integer_column(add: Any, gxe: Any, spec: SuiteSpec, column: str, label: str) -> None:
    """Non-null, integer-typed, non-negative: the rules ``event_key`` and ``seq`` share."""
    if column not in spec.columns:
        return
    add(gxe.ExpectColumnValuesToNotBeNull(column=column, meta=_meta(f"{label}_null", f"null {label}")))
    add(
        gxe.ExpectColumnValuesToBeInTypeList(
            column=column,
            type_list=list(INT_TYPES),
            meta=_meta(f"{label}_type", f"{label} is not an integer"),
        )
    )
    if column in spec.numeric_dtype:
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, meta=_meta(f"{label}_negative", f"negative {label}")
            )
        )
