"""Step 2: validate each telemetry file of the interval with Great Expectations; quarantine what fails.

A failing file is moved to the lake's quarantine with its GX result and a readable summary, and the step
raises :class:`DataValidationError` naming the failed expectations, so the run fails loudly and scoring does
not run on it. Nothing is lost: a rerun after the fixed file has landed again in ``raw/`` goes through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifelong.errors import DataValidationError
from lifelong.settings import Settings
from tasks.context import as_utc, lake, load_production, to_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidateSummary:
    stream: str
    shards: list[str]
    rows: int
    quarantined: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unknown_keys: int = 0


def _validate_file(settings: Settings, lk: Any, path: str, start: datetime, end: datetime, known: Any):
    """Validate a file chunk by chunk (bounded memory); row-count limits apply to the whole file."""
    from lifelong.validation import validate_batch

    chunks = list(lk.read_file_chunks(path))
    multi = len(chunks) > 1
    chunk_settings = settings.model_copy(update={"min_rows": 0, "max_rows": 10**15}) if multi else settings
    outcomes = (
        [
            validate_batch(
                df,
                kind=settings.stream_kind,
                interval_start=start,
                interval_end=end,
                settings=chunk_settings,
                known_keys=known,
            )
            for df in chunks
        ]
        if chunks
        else []
    )
    rows = sum(o.rows for o in outcomes)
    failed = [f for o in outcomes for f in o.failed]
    if multi and not settings.min_rows <= rows <= settings.max_rows:
        failed.append(f"row count {rows} outside [{settings.min_rows}, {settings.max_rows}]")
    if not chunks:
        failed.append("the file holds no rows")
    return outcomes, rows, failed


def validate(
    *, settings: Settings, interval_start: datetime | str, interval_end: datetime | str, files: list[str]
) -> dict:
    """Validate every file; return the shards fit to score, or raise after quarantining the bad ones."""
    start, end = as_utc(interval_start), as_utc(interval_end)
    lk = lake(settings)
    serving = load_production(settings)
    known = None
    if serving is not None and settings.stream_kind == "events":
        known = serving.detector.known_keys
    good, bad, warnings, problems = [], [], [], []
    total_rows = unknown = 0
    for path in files:
        outcomes, rows, failed = _validate_file(settings, lk, path, start, end, known)
        total_rows += rows
        unknown += sum(o.unknown_keys for o in outcomes)
        warnings += [f"{path}: {w}" for o in outcomes for w in o.warnings]
        if failed:
            report = {"file": path, "failed": failed, "results": [o.result_json for o in outcomes]}
            summary = "\n\n".join(o.summary for o in outcomes) or "\n".join(failed)
            qpath = lk.quarantine(settings.stream, start, path, report, summary)
            log.error("quarantined %s -> %s: %s", path, qpath, "; ".join(failed))
            bad.append(qpath)
            problems.append(f"{path}: " + "; ".join(failed))
        else:
            good.append(path)
    for w in warnings:
        log.warning("%s", w)
    if bad:
        raise DataValidationError(
            f"{len(bad)} telemetry file(s) of {settings.stream} {start:%Y-%m-%d %H:%M} failed validation and were "
            f"quarantined (with their GX report) under quarantine/; fix and re-land them, then rerun. "
            + " | ".join(problems)
        )
    return to_summary(ValidateSummary(settings.stream, good, total_rows, bad, warnings, unknown))
