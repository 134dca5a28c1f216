"""Great Expectations validation of telemetry batches: one suite per schema, one entry point.

Great Expectations itself is imported lazily, on the first validation, so importing this package is cheap.
"""

from lifelong.validation.validate import ValidationOutcome, json_safe, validate_batch

__all__ = ["ValidationOutcome", "json_safe", "validate_batch"]
