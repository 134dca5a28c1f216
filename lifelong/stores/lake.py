"""The telemetry lake: hourly partitions of raw telemetry, scores and quarantine, on a local folder or S3.

Layout below the lake root (``LIFELONG_LAKE_URL``; a folder, or ``s3://bucket/prefix``)::

    raw/<stream>/date=YYYY-MM-DD/hour=HH/<file>.parquet|.csv|.jsonl   landing zone (telemetry producers)
    scores/<stream>/date=YYYY-MM-DD/hour=HH/<shard>.parquet            one file per scored shard
    quarantine/<stream>/date=YYYY-MM-DD/hour=HH/<file>                 a batch that failed validation,
                                   <file>.validation.json              with its GX result
                                   <file>.summary.txt                  and a readable summary
    _markers/<stream>/date=YYYY-MM-DD/hour=HH/<name>.json              optional step markers ("done")

Partitions are hourly, in UTC: the partition of an instant is the hour it falls in. An interval [start, end)
covers every hour partition that overlaps it. Names starting with ``.`` or ``_`` are never listed (temporary
files, ``_SUCCESS`` markers). ``.csv.gz`` and ``.jsonl.gz`` are read too.

All paths this class takes and returns are ``/``-separated and relative to the lake root (for example
``raw/events/date=2024-01-01/hour=05/a.parquet``); they are what the pipeline passes between tasks. Storage is
reached through fsspec (``s3fs`` for S3, with the endpoint from ``LIFELONG_S3_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL`` and credentials from the standard AWS chain).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from lifelong.errors import DatasetFormatError, NotFoundError
from lifelong.telemetry import ENTITY_ID, SCORE_COLUMNS, normalize_columns

if TYPE_CHECKING:
    from lifelong.settings import Settings

logger = logging.getLogger(__name__)

Area = Literal["raw", "scores", "quarantine", "_markers"]
RawFormat = Literal["parquet", "csv", "jsonl"]

RAW, SCORES, QUARANTINE, MARKERS = "raw", "scores", "quarantine", "_markers"
REPORT_SUFFIX = ".validation.json"
SUMMARY_SUFFIX = ".summary.txt"

# Longest suffix first, so "a.csv.gz" is csv and not an unknown ".gz".
_SUFFIX_FORMATS: tuple[tuple[str, RawFormat], ...] = (
    (".csv.gz", "csv"),
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".parquet", "parquet"),
    (".csv", "csv"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=~+-]*$")
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined file and its validation report.

    Attributes:
        stream: Stream the file was landed in.
        interval_start: Start of the hour partition it came from (UTC).
        path: The quarantined data file (lake-relative).
        report_path: Its GX result JSON, or ``None`` if missing.
        summary_path: Its readable summary, or ``None`` if missing.
    """

    stream: str
    interval_start: datetime
    path: str
    report_path: str | None
    summary_path: str | None


def file_format(path: str) -> RawFormat:
    """The telemetry format of a file, from its name.

    Args:
        path: A file path or name.

    Returns:
        ``"parquet"``, ``"csv"`` or ``"jsonl"``.

    Raises:
        DatasetFormatError: The extension is not one the lake reads.
    """
    lower = path.lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if lower.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in _SUFFIX_FORMATS)
    raise DatasetFormatError(f"{path}: unsupported telemetry file type; expected one of {known}")


def hour_floor(instant: datetime) -> datetime:
    """The start of the UTC hour containing ``instant``; a naive datetime is taken as UTC."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    instant = instant.astimezone(UTC)
    return datetime(instant.year, instant.month, instant.day, instant.hour, tzinfo=UTC)


def interval_hours(start: datetime, end: datetime) -> list[datetime]:
    """Starts of every hour partition overlapping [start, end), oldest first.

    Args:
        start: Interval start (naive means UTC).
        end: Interval end, exclusive.

    Returns:
        Hour starts in UTC; empty when ``end == start``.

    Raises:
        ValueError: ``end`` is before ``start``.
    """
    first = hour_floor(start)
    end_utc = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    start_utc = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    if end_utc < start_utc:
        raise ValueError(f"interval end {end_utc.isoformat()} is before its start {start_utc.isoformat()}")
    hours: list[datetime] = []
    hour = first
    while hour < end_utc:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits and . _ - = ~ + "
            "(not starting with . or _, no '..')"
        )
    return name


def _partition_start(partition: str) -> datetime | None:
    match = _PARTITION.match(partition)
    if not match:
        return None
    return datetime.fromisoformat(match.group(1)).replace(hour=int(match.group(2)), tzinfo=UTC)


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


class TelemetryLake:
    """Hourly-partitioned telemetry, scores and quarantine below one root (see the module docstring).

    Reads stream in chunks of ``chunk_rows`` rows, so a large file never sits in memory whole. Writes are
    atomic: a local write goes to a hidden temporary file renamed into place; an S3 object appears only when
    its upload completes. Safe to share between threads; create one per process.
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None, chunk_rows: int = 200_000) -> None:
        """Open a lake (creates nothing; an S3 bucket must exist).

        Args:
            url: A local folder (``file://`` accepted) or ``s3://bucket/prefix``; other fsspec URLs work too.
            endpoint_url: S3 API endpoint (MinIO, moto); ``None`` for AWS or ``AWS_ENDPOINT_URL``.
            chunk_rows: Default rows per chunk of :meth:`read_file_chunks`.

        Raises:
            ValueError: ``chunk_rows`` is not positive.
        """
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        self.chunk_rows = chunk_rows
        self.endpoint_url = endpoint_url
        if url.startswith(("s3://", "s3a://")):
            import s3fs

            client_kwargs: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
            config_kwargs: dict[str, Any] = {
                # Send checksums only where the API needs them: several S3-compatible stores reject the
                # CRC32 headers newer botocore adds to every upload.
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
            if endpoint_url:
                # A MinIO/moto endpoint has no per-bucket DNS names, so use endpoint/bucket/key URLs.
                config_kwargs["s3"] = {"addressing_style": "path"}
            # No listing cache: producers land files from other processes at any time.
            self.fs = s3fs.S3FileSystem(
                client_kwargs=client_kwargs, config_kwargs=config_kwargs, use_listings_cache=False
            )
            self.root = url.split("://", 1)[1].strip("/")
            self.url = "s3://" + self.root
            self._local = False
        elif "://" in url and not url.startswith("file://"):
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(url)
            self.root = root.rstrip("/")
            self.url = url.rstrip("/")
            self._local = False
        else:
            from fsspec.implementations.local import LocalFileSystem

            self.fs = LocalFileSystem()
            folder = url[len("file://") :] if url.startswith("file://") else url
            self.root = Path(folder).expanduser().resolve().as_posix()
            self.url = self.root
            self._local = True
        if not self.root:
            raise ValueError(f"lake URL {url!r} has no bucket or folder")

    @classmethod
    def from_settings(cls, settings: Settings) -> TelemetryLake:
        """The lake the settings point at (``LIFELONG_LAKE_URL``, default ``HOME/lake``).

        Args:
            settings: Deployment settings; the S3 endpoint comes from ``s3_endpoint_url``, then
                ``AWS_ENDPOINT_URL``.

        Returns:
            A lake reading chunks of ``settings.chunk_rows`` rows.
        """
        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        return cls(settings.resolved_lake_url, endpoint_url=endpoint, chunk_rows=settings.chunk_rows)

    def __repr__(self) -> str:
        return f"TelemetryLake({self.url!r})"

    # Paths --------------------------------------------------------------------------------------------
    def partition(self, stream: str, interval_start: datetime, area: Area = RAW) -> str:
        """The lake-relative folder of the hour partition containing ``interval_start``.

        Args:
            stream: Stream name (a path segment: letters, digits, ``._-``).
            interval_start: Any instant in the hour (naive means UTC).
            area: ``raw``, ``scores``, ``quarantine`` or ``_markers``.

        Returns:
            For example ``raw/events/date=2024-01-01/hour=05``.
        """
        hour = hour_floor(interval_start)
        return f"{area}/{_check_name(stream, 'stream name')}/date={hour:%Y-%m-%d}/hour={hour:%H}"

    def url_of(self, path: str) -> str:
        """The full location of a lake path (``s3://bucket/prefix/...`` or a file path), for people."""
        return f"{self.url}/{self._rel(path)}"

    def _rel(self, path: str) -> str:
        """A lake-relative path from a relative path, a full URL or an absolute path inside the lake."""
        for prefix in (self.url + "/", self.root + "/", "s3://" + self.root + "/"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        parts = PurePosixPath(path).parts
        if not parts or path.startswith("/") or any(p in {"..", "."} for p in parts) or "\\" in path:
            raise ValueError(f"{path!r} is not a path inside the lake {self.url}")
        return "/".join(parts)

    def _full(self, path: str) -> str:
        return f"{self.root}/{self._rel(path)}"

    def exists(self, path: str) -> bool:
        """Whether a file exists at the lake path."""
        return bool(self.fs.exists(self._full(path)))

    # Listing ------------------------------------------------------------------------------------------
    def _find(self, folder: str) -> list[str]:
        """Every visible file below a lake folder, lake-relative (hidden and temporary files skipped)."""
        full = self._full(folder)
        try:
            found = self.fs.find(full)
        except FileNotFoundError:
            return []
        prefix = self.root + "/"
        out: list[str] = []
        for item in found:
            rel = item[len(prefix) :] if item.startswith(prefix) else item
            if all(_visible(seg) for seg in rel[len(folder) + 1 :].split("/")):
                out.append(rel)
        return out

    def list_interval_files(self, stream: str, start: datetime, end: datetime, area: Area = RAW) -> list[str]:
        """Files of every hour partition overlapping [start, end), sorted.

        Files the lake cannot read are listed too, so that reading them fails loudly instead of their data
        being skipped.

        Args:
            stream: Stream name.
            start: Interval start (naive means UTC).
            end: Interval end, exclusive.
            area: Which area to list (``raw`` by default).

        Returns:
            Lake-relative file paths, sorted (hence oldest partition first).
        """
        by_date: dict[str, set[str]] = defaultdict(set)
        for hour in interval_hours(start, end):
            by_date[f"{hour:%Y-%m-%d}"].add(f"{hour:%H}")
        base = f"{area}/{_check_name(stream, 'stream name')}"
        files: list[str] = []
        for date, hours in by_date.items():
            # One listing per day (a paged LIST on S3) rather than one per hour, unless one hour is wanted.
            folder = (
                f"{base}/date={date}/hour={next(iter(hours))}" if len(hours) == 1 else f"{base}/date={date}"
            )
            for rel in self._find(folder):
                rest = rel[len(f"{base}/date={date}/") :].split("/")
                if len(rest) == 2 and rest[0].startswith("hour=") and rest[0][5:] in hours:
                    files.append(rel)
        return sorted(files)

    def list_files(self, stream: str, area: Area = RAW) -> list[str]:
        """Every file of a stream in one area, across all partitions, sorted (lake-relative)."""
        base = f"{area}/{_check_name(stream, 'stream name')}"
        return sorted(rel for rel in self._find(base) if rel.count("/") == 4)

    # Reading ------------------------------------------------------------------------------------------
    def read_file_chunks(
        self,
        path: str,
        *,
        columns: Sequence[str] | None = None,
        chunk_rows: int | None = None,
        normalize: bool = True,
    ) -> Iterator[pd.DataFrame]:
        """Stream one telemetry file as data frames of at most ``chunk_rows`` rows.

        Parquet is read batch by batch (``ParquetFile.iter_batches``), CSV and JSON Lines with pandas'
        chunked readers, so memory stays bounded by the chunk size whatever the file size. An empty file
        with a header or schema yields one empty frame with its columns.

        Args:
            path: Lake-relative path (or full URL inside the lake).
            columns: Only these columns (all by default).
            chunk_rows: Rows per chunk; the lake's default (``settings.chunk_rows``) when ``None``.
            normalize: Give ``timestamp`` a UTC datetime type and, in CSV/JSON Lines, ``entity_id`` a text
                type (see :func:`lifelong.telemetry.normalize_columns`).

        Yields:
            Data frames, in file order, with a fresh ``RangeIndex`` each.

        Raises:
            DatasetFormatError: Unsupported extension, unreadable content, or a requested column is missing;
                the message names the file (and the lines, for text formats).
            NotFoundError: No file at ``path``.
        """
        rows = chunk_rows or self.chunk_rows
        if rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {rows}")
        rel = self._rel(path)
        fmt = file_format(rel)
        where = self.url_of(rel)
        if not self.fs.exists(self._full(rel)):
            raise NotFoundError(f"no telemetry file at {where}")
        reader = {"parquet": self._parquet_chunks, "csv": self._csv_chunks, "jsonl": self._jsonl_chunks}[fmt]
        for chunk in reader(rel, where, list(columns) if columns is not None else None, rows):
            yield normalize_columns(chunk, text_format=fmt != "parquet") if normalize else chunk

    def _parquet_chunks(
        self, rel: str, where: str, columns: list[str] | None, rows: int
    ) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self.fs.open(self._full(rel), "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
            except (pa.ArrowException, OSError) as exc:
                raise DatasetFormatError(f"{where}: not a readable Parquet file ({exc})") from exc
            names = pf.schema_arrow.names
            _check_columns(columns, names, where)
            batches = pf.iter_batches(batch_size=rows, columns=columns)
            yielded = False
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise DatasetFormatError(f"{where}: corrupt Parquet data ({exc})") from exc
                yielded = True
                yield batch.to_pandas()
            if not yielded:
                schema = pf.schema_arrow
                empty = schema.empty_table() if columns is None else schema.empty_table().select(columns)
                yield empty.to_pandas()

    def _csv_chunks(
        self, rel: str, where: str, columns: list[str] | None, rows: int
    ) -> Iterator[pd.DataFrame]:
        with self.fs.open(self._full(rel), "rb", compression="infer") as fh:
            try:
                # Ids are tokens: "0042" must not become 42.
                reader = pd.read_csv(fh, chunksize=rows, usecols=columns, dtype={ENTITY_ID: "str"})
            except pd.errors.EmptyDataError:
                raise DatasetFormatError(f"{where}: empty CSV file (no header line)") from None
            except ValueError as exc:  # usecols naming a missing column, bad header
                raise DatasetFormatError(f"{where}: {exc}") from exc
            with reader:
                yielded = False
                first_line = 2  # line 1 is the header
                while True:
                    try:
                        chunk = next(reader)
                    except StopIteration:
                        break
                    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
                        raise DatasetFormatError(
                            f"{where}: unreadable CSV from line {first_line} on ({exc})"
                        ) from exc
                    first_line += len(chunk)
                    yielded = True
                    # usecols keeps file order; callers get the order they asked for, as with Parquet.
                    yield (chunk[columns] if columns is not None else chunk).reset_index(drop=True)
                if not yielded:
                    yield pd.DataFrame(columns=columns or [])

    def _jsonl_chunks(
        self, rel: str, where: str, columns: list[str] | None, rows: int
    ) -> Iterator[pd.DataFrame]:
        with self.fs.open(self._full(rel), "rb", compression="infer") as fh:
            reader = pd.read_json(fh, lines=True, chunksize=rows, dtype={ENTITY_ID: "str"})
            with reader:
                first_line = 1
                while True:
                    try:
                        chunk = next(reader)
                    except StopIteration:
                        break
                    except (ValueError, UnicodeDecodeError) as exc:
                        last = first_line + rows - 1
                        raise DatasetFormatError(
                            f"{where}: unreadable JSON Lines in lines {first_line}-{last} ({exc})"
                        ) from exc
                    first_line += len(chunk)
                    if columns is not None:
                        _check_columns(columns, list(chunk.columns), where)
                        chunk = chunk[columns]
                    yield chunk.reset_index(drop=True)

    def read_file(self, path: str, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A whole file as one frame (concatenated chunks); for small files and tests."""
        return _concat(list(self.read_file_chunks(path, columns=columns)))

    def read_interval(
        self, stream: str, start: datetime, end: datetime, *, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Every raw file of [start, end) in one frame, in path order.

        Convenience for small intervals (simulator, tests, notebooks); scoring streams
        :meth:`read_file_chunks` file by file instead.

        Args:
            stream: Stream name.
            start: Interval start (naive means UTC).
            end: Interval end, exclusive.
            columns: Only these columns.

        Returns:
            The concatenated rows (an empty frame when the interval has no files).
        """
        frames = [
            chunk
            for path in self.list_interval_files(stream, start, end)
            for chunk in self.read_file_chunks(path, columns=columns)
        ]
        return _concat(frames)

    def read_text(self, path: str) -> str:
        """A small text file (a summary, a report) as a string.

        Raises:
            NotFoundError: No file at ``path``.
        """
        try:
            with self.fs.open(self._full(path), "rb") as fh:
                return fh.read().decode("utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"no file at {self.url_of(path)}") from None

    # Writing ------------------------------------------------------------------------------------------
    def _write(self, path: str, fill: Callable[[str], None]) -> str:
        """Atomically create or replace ``path``: ``fill`` writes a local temporary file moved into place.

        Locally the temporary file sits next to the target, hidden, and is renamed over it (atomic on POSIX).
        On S3 it is uploaded in one put; readers see the old object or the new one, never a part.
        """
        rel = self._rel(path)
        full = self._full(rel)
        if self._local:
            folder = os.path.dirname(full)
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".{os.path.basename(full)}.{secrets.token_hex(6)}.tmp")
            try:
                fill(tmp)
                os.replace(tmp, full)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return rel
        with tempfile.TemporaryDirectory(prefix="lake-") as tmpdir:
            tmp = os.path.join(tmpdir, os.path.basename(full))
            fill(tmp)
            self.fs.put_file(tmp, full)
        return rel

    def write_bytes(self, path: str, data: bytes) -> str:
        """Atomically write a small file at a lake path; returns the lake-relative path."""

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)

        return self._write(path, fill)

    def write_raw(
        self, stream: str, interval_start: datetime, df: pd.DataFrame, name: str, fmt: RawFormat = "parquet"
    ) -> str:
        """Land a telemetry frame in ``raw/`` (what producers, the simulator and tests do).

        Args:
            stream: Stream name.
            interval_start: Any instant of the hour partition to land in.
            df: Rows to write (index dropped).
            name: File name; the extension of ``fmt`` is added when missing.
            fmt: ``parquet``, ``csv`` or ``jsonl``. Text formats write timestamps as ISO 8601.

        Returns:
            The lake-relative path written (replaced if it existed).
        """
        suffix = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
        if not name.endswith(suffix):
            name += suffix
        rel = f"{self.partition(stream, interval_start, RAW)}/{_check_name(name, 'file name')}"

        def fill(tmp: str) -> None:
            if fmt == "parquet":
                df.to_parquet(tmp, index=False)
            elif fmt == "csv":
                df.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
            else:
                df.to_json(tmp, orient="records", lines=True, date_format="iso", date_unit="us")

        self._write(rel, fill)
        logger.info("landed %d rows at %s", len(df), self.url_of(rel))
        return rel

    # Scores -------------------------------------------------------------------------------------------
    def write_scores(self, stream: str, interval_start: datetime, shard: str, df: pd.DataFrame) -> str:
        """Write one shard's scores; writing the same shard again replaces it (idempotent reruns).

        Args:
            stream: Stream name.
            interval_start: Start of the scored interval (its hour partition holds the file).
            shard: Shard name, unique within the interval (e.g. ``"000"`` or the source file's stem).
            df: Score frame with at least :data:`lifelong.telemetry.SCORE_COLUMNS`.

        Returns:
            The lake-relative path of ``scores/<stream>/date=.../hour=.../<shard>.parquet``.

        Raises:
            ValueError: The frame lacks score columns.
        """
        missing = [c for c in SCORE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"score frame for shard {shard!r} lacks column(s) {missing}")
        rel = f"{self.partition(stream, interval_start, SCORES)}/{_check_name(shard, 'shard name')}.parquet"
        self._write(rel, lambda tmp: df.to_parquet(tmp, index=False))
        logger.info("wrote %d scores to %s", len(df), self.url_of(rel))
        return rel

    def read_scores(
        self,
        stream: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Scores of a stream, all of them or those of the hour partitions overlapping [start, end).

        Args:
            stream: Stream name.
            start: Interval start; ``None`` with ``end=None`` reads every score file.
            end: Interval end, exclusive.
            columns: Only these columns.

        Returns:
            The score rows in path order; an empty frame with the score columns when there are none.

        Raises:
            ValueError: Only one of ``start``/``end`` was given.
        """
        if (start is None) != (end is None):
            raise ValueError("read_scores needs both start and end, or neither")
        if start is not None and end is not None:
            paths = self.list_interval_files(stream, start, end, area=SCORES)
        else:
            paths = self.list_files(stream, area=SCORES)
        frames = [
            chunk
            for path in paths
            if path.endswith(".parquet")
            for chunk in self.read_file_chunks(path, columns=columns, normalize=False)
        ]
        if not frames:
            return pd.DataFrame(columns=list(columns) if columns is not None else list(SCORE_COLUMNS))
        return _concat(frames)

    def find_scored_sample(self, stream: str, entity: str) -> Any | None:
        """The decoded ``sample`` of the most recent score row of ``entity``, or ``None``.

        Scans score partitions newest first and stops at the first that holds the entity, reading three
        columns in chunks, so a long score history costs little when the entity was scored recently.

        Args:
            stream: Stream name.
            entity: The ``entity_id`` to look up.

        Returns:
            The JSON-decoded sample (an event-key list or a feature record), or ``None`` if the entity was
            never scored or its row has no sample.

        Raises:
            DatasetFormatError: The sample of the row found is not valid JSON.
        """
        by_partition: dict[str, list[str]] = defaultdict(list)
        for path in self.list_files(stream, area=SCORES):
            if path.endswith(".parquet"):
                by_partition[path.rsplit("/", 1)[0]].append(path)
        wanted = ["entity_id", "interval_start", "sample"]
        for partition in sorted(by_partition, reverse=True):
            best: tuple[Any, int, int] | None = None
            best_hit: tuple[str, Any] | None = None
            for file_no, path in enumerate(sorted(by_partition[partition])):
                offset = 0
                for chunk in self.read_file_chunks(path, columns=wanted, normalize=False):
                    hits = chunk.index[chunk["entity_id"].astype("str") == str(entity)]
                    for row in hits:
                        key = (pd.Timestamp(chunk.at[row, "interval_start"]), file_no, offset + int(row))
                        if best is None or key > best:
                            best, best_hit = key, (path, chunk.at[row, "sample"])
                    offset += len(chunk)
            if best_hit is not None:
                path, sample = best_hit
                if sample is None or (isinstance(sample, float) and pd.isna(sample)):
                    logger.warning("score row of %s in %s has no sample", entity, self.url_of(path))
                    return None
                try:
                    return json.loads(sample)
                except (TypeError, ValueError) as exc:
                    raise DatasetFormatError(
                        f"{self.url_of(path)}: sample of entity {entity!r} is not valid JSON ({exc})"
                    ) from exc
        return None

    # Quarantine ---------------------------------------------------------------------------------------
    def quarantine(
        self,
        stream: str,
        interval_start: datetime,
        source_path: str,
        report: dict[str, Any],
        summary: str,
        *,
        keep_source: bool = False,
    ) -> str:
        """Move a file that failed validation to ``quarantine/`` with its GX result and a readable summary.

        The copy, report and summary are written first and the source is deleted last, so a crash anywhere
        loses nothing: rerunning quarantines the same file again. Quarantining an identical file twice is
        idempotent; a different file with the same name (a second bad delivery) gets a ``~2``, ``~3``...
        name instead of replacing the first. Once the source is gone, a rerun of the interval no longer sees
        it; landing a fixed file in ``raw/`` again lets the rerun validate and score it.

        Args:
            stream: Stream name.
            interval_start: Start of the interval being validated (its hour partition is used).
            source_path: The bad file (lake-relative, usually below ``raw/``).
            report: GX validation result (JSON-serialisable).
            summary: Readable multi-line summary of what failed.
            keep_source: Copy instead of move.

        Returns:
            The lake-relative path of the quarantined data file.

        Raises:
            NotFoundError: The source file does not exist.
        """
        source = self._rel(source_path)
        if not self.exists(source):
            raise NotFoundError(f"cannot quarantine {self.url_of(source)}: no such file")
        folder = self.partition(stream, interval_start, QUARANTINE)
        name = PurePosixPath(source).name
        target = f"{folder}/{name}"
        attempt = 1
        while self.exists(target) and not self._same_content(source, target):
            attempt += 1
            stem, suffix = _split_suffix(name)
            target = f"{folder}/{stem}~{attempt}{suffix}"
        self._copy(source, target)
        self.write_bytes(target + REPORT_SUFFIX, json.dumps(report, indent=2, default=str).encode("utf-8"))
        self.write_bytes(target + SUMMARY_SUFFIX, (summary.rstrip("\n") + "\n").encode("utf-8"))
        if not keep_source:
            self.fs.rm(self._full(source))
        logger.warning("quarantined %s at %s", self.url_of(source), self.url_of(target))
        return target

    def list_quarantine(self, stream: str | None = None) -> list[QuarantineEntry]:
        """Quarantined files with their reports, oldest partition first.

        Args:
            stream: Only this stream (all streams by default).

        Returns:
            One entry per quarantined data file.
        """
        base = f"{QUARANTINE}/{_check_name(stream, 'stream name')}" if stream else QUARANTINE
        files = set(self._find(base))
        entries: list[QuarantineEntry] = []
        for rel in sorted(files):
            parts = rel.split("/")
            if len(parts) != 5 or rel.endswith((REPORT_SUFFIX, SUMMARY_SUFFIX)):
                continue
            start = _partition_start(f"{parts[2]}/{parts[3]}")
            if start is None:
                continue
            entries.append(
                QuarantineEntry(
                    stream=parts[1],
                    interval_start=start,
                    path=rel,
                    report_path=rel + REPORT_SUFFIX if rel + REPORT_SUFFIX in files else None,
                    summary_path=rel + SUMMARY_SUFFIX if rel + SUMMARY_SUFFIX in files else None,
                )
            )
        return sorted(entries, key=lambda e: (e.interval_start, e.path))

    def _copy(self, source: str, target: str) -> None:
        if self._local:
            full = self._full(source)
            self._write(target, lambda tmp: self.fs.copy(full, tmp))
        else:
            # A server-side copy: atomic, and the bytes never leave the store.
            self.fs.copy(self._full(source), self._full(target))

    def _same_content(self, a: str, b: str) -> bool:
        full_a, full_b = self._full(a), self._full(b)
        if self.fs.size(full_a) != self.fs.size(full_b):
            return False
        return self._sha256(full_a) == self._sha256(full_b)

    def _sha256(self, full: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(full, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    # Markers ------------------------------------------------------------------------------------------
    def write_marker(self, stream: str, interval_start: datetime, name: str, payload: dict[str, Any]) -> str:
        """Record that a step finished for an hour partition (written last, read to skip finished work).

        Args:
            stream: Stream name.
            interval_start: Any instant of the hour.
            name: Marker name (e.g. the step: ``"scored"``).
            payload: A small JSON-able summary of the step's result.

        Returns:
            The lake-relative path of ``_markers/<stream>/date=.../hour=.../<name>.json``.
        """
        rel = f"{self.partition(stream, interval_start, MARKERS)}/{_check_name(name, 'marker name')}.json"
        return self.write_bytes(
            rel, json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8")
        )

    def read_marker(self, stream: str, interval_start: datetime, name: str) -> dict[str, Any] | None:
        """A marker's payload, or ``None`` when the step has not finished for that hour."""
        rel = f"{self.partition(stream, interval_start, MARKERS)}/{_check_name(name, 'marker name')}.json"
        try:
            return json.loads(self.read_text(rel))
        except NotFoundError:
            return None


def find_scored_sample(settings: Settings, stream: str, entity: str) -> Any | None:
    """The decoded sample of the most recent score row of ``entity`` in the settings' lake, or ``None``.

    The label store's CLI uses this to snapshot a missed anomaly (FN) the analyst names by id.

    Args:
        settings: Deployment settings (lake URL and S3 endpoint).
        stream: Stream name.
        entity: The ``entity_id`` to look up.

    Returns:
        The JSON-decoded ``sample`` (an event-key list or a feature record), or ``None``.
    """
    return TelemetryLake.from_settings(settings).find_scored_sample(stream, entity)


def _check_columns(columns: Sequence[str] | None, available: Sequence[str], where: str) -> None:
    if columns is None:
        return
    missing = [c for c in columns if c not in available]
    if missing:
        raise DatasetFormatError(f"{where}: no column(s) {missing}; the file has {list(available)}")


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix, _ in _SUFFIX_FORMATS:
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    path = PurePosixPath(name)
    return path.stem, path.suffix


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    non_empty = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(non_empty, ignore_index=True)
