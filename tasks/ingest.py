"""Step 1: list the telemetry files of one data interval (the shards that scoring maps over)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from lifelong.settings import Settings
from tasks.context import as_utc, lake, to_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    stream: str
    interval_start: str
    interval_end: str
    files: list[str]


def ingest(*, settings: Settings, interval_start: datetime | str, interval_end: datetime | str) -> dict:
    """The raw files of ``[interval_start, interval_end)`` of the configured stream, sorted.

    An interval with no files is not an error (a quiet hour); scoring then has nothing to map over.
    """
    start, end = as_utc(interval_start), as_utc(interval_end)
    files = lake(settings).list_interval_files(settings.stream, start, end)
    log.info("interval %s..%s of %s: %d file(s)", start, end, settings.stream, len(files))
    return to_summary(IngestSummary(settings.stream, start.isoformat(), end.isoformat(), files))
