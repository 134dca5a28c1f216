"""A telemetry simulator for the pipeline loop and an "analyst team" that files labels from its ground truth.

:func:`simulate` lands synthetic hourly telemetry (event sessions or feature rows, with anomalies and, from
a given hour on, drift) in the lake's ``raw/`` partitions, as producers would, so the scoring DAG has real
files to ingest. The ground truth of every entity is kept aside, outside ``raw/``, where no pipeline step
reads it::

    raw/<stream>/date=YYYY-MM-DD/hour=HH/part-000.parquet ... what the pipeline sees (split by entity)
    truth/<stream>/date=YYYY-MM-DD/hour=HH/truth.parquet      entity_id, abnormal, kind, interval_start, shard

:func:`file_labels_from_truth` plays the analysts: it compares what the scorer decided (alerts in the label
store, passed entities in the lake's score files) with the truth, and files an FP label for every false alarm
and an FN label for every missed anomaly, or a seeded share of them. Both functions are idempotent.

Entity ids are unique within a stream across simulations (``s2024050105-00042``: the UTC hour and the
entity's ordinal), because the label store keys labels by (stream, entity). An hour's content depends only on
``(seed, UTC hour, whether it drifts)``: simulating the same hour twice gives the same files, whether the hour
came in a long call or a short one, and different hours differ. Drift starts ``drift_from_hour`` hours after
a call's ``start`` (pass 0 when extending a simulation that already drifts).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd

from lifelong.constants import FN, FP
from lifelong.errors import ConfigError, DatasetFormatError
from lifelong.stores.lake import RAW, SCORES, TelemetryLake, hour_floor

if TYPE_CHECKING:
    from lifelong.settings import Settings
    from lifelong.stores.labels import LabelRequest

logger = logging.getLogger(__name__)

SimulationKind = Literal["events", "vectors"]
SimFormat = Literal["parquet", "csv", "jsonl"]

TRUTH = "truth"
"""Lake area of the ground truth; beside ``raw/`` and ``scores/``, never read by the pipeline."""
# The lake lays out any area the same way; its ``Area`` Literal only lists the pipeline's own areas.
_TRUTH_AREA: Any = TRUTH
TRUTH_FILE = "truth.parquet"
TRUTH_COLUMNS: tuple[str, ...] = ("entity_id", "abnormal", "kind", "interval_start", "shard")
DEFAULT_ANALYST = "simulated-analyst"

_FORMATS: dict[str, str] = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
# The simulator's own raw files: anything else in a partition belongs to another producer and is left alone.
_PART_FILE = re.compile(r"^part-\d{3,}\.(parquet|csv|jsonl)$")
_PARTITION = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=~+-]*$")
_ID_PREFIX = {"events": "s", "vectors": "r"}
_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCORE_READ_COLUMNS = ["entity_id", "abnormal", "model_version", "interval_start", "sample"]


# ---------------------------------------------------------------------------------------------------------
# Simulating telemetry
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatedHour:
    """What :func:`simulate` landed for one hour.

    Attributes:
        interval_start: Start of the hour (UTC).
        raw_path: The hour's raw partition folder (lake-relative), e.g. ``raw/events/date=.../hour=05``.
        n: Entities (sessions or rows) in the hour.
        n_abnormal: Abnormal entities (every anomaly kind).
        n_drift: Normal entities of the drifted behaviour (kind ``"drift"``).
        files: The raw files written, lake-relative (empty shards are not written).
        rows: Raw rows written (events for an events stream; equals ``n`` for vectors).
        truth_path: Where the hour's ground truth is kept (lake-relative, outside ``raw/``).
    """

    interval_start: datetime
    raw_path: str
    n: int
    n_abnormal: int
    n_drift: int
    files: tuple[str, ...] = ()
    rows: int = 0
    truth_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the datetime as ISO 8601)."""
        data = asdict(self)
        data["interval_start"] = self.interval_start.isoformat()
        data["files"] = list(self.files)
        return data


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ConfigError(f"{what} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _hour_seed(seed: int, hour: datetime) -> int:
    """A 32-bit seed for one UTC hour: the same (seed, hour) always draws the same telemetry."""
    hours_since_epoch = int((hour - _EPOCH) // _HOUR)
    return int(np.random.SeedSequence([seed, hours_since_epoch]).generate_state(1)[0])


def _check_stream(stream: str) -> None:
    if not isinstance(stream, str) or not _STREAM_NAME.match(stream) or ".." in stream:
        raise ConfigError(
            f"stream name {stream!r} must use letters, digits and . _ - = ~ + and not start with . or _ "
            "(it is a lake folder)"
        )


def _check_simulation_args(
    *,
    stream: str,
    kind: str,
    hours: int,
    seed: int,
    sessions_per_hour: int,
    anomaly_rate: float,
    drift_from_hour: int,
    drift_rate: float,
    shards: int,
    fmt: str,
    n_features: int,
) -> None:
    if kind not in _ID_PREFIX:
        raise ConfigError(f"simulation kind must be 'events' or 'vectors', got {kind!r}")
    if fmt not in _FORMATS:
        raise ConfigError(f"simulation format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    for name, value, low in (
        ("hours", hours, 1),
        ("sessions_per_hour", sessions_per_hour, 1),
        ("shards", shards, 1),
        ("seed", seed, 0),
        ("drift_from_hour", drift_from_hour, 0),
        ("n_features", n_features, 4),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if shards > 999:
        raise ConfigError(f"shards must be at most 999 (file names part-000..part-999), got {shards}")
    for name, rate in (("anomaly_rate", anomaly_rate), ("drift_rate", drift_rate)):
        if not 0.0 <= float(rate) <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {rate}")
    _check_stream(stream)


def _generate_hour(
    kind: SimulationKind,
    *,
    hour: datetime,
    drifting: bool,
    n: int,
    seed: int,
    anomaly_rate: float,
    drift_rate: float,
    n_features: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One hour's (raw frame, truth) with stream-unique entity ids; truth rows in entity ordinal order."""
    # Imported here: the grammar tables are only needed when simulating.
    from lifelong.data.synthetic import generate_event_telemetry, generate_vector_telemetry

    # The generators seed from (seed, hour_index) and drift when hour_index >= drift_from_hour. Passing index
    # 0 or 1 against a threshold of 1 makes an hour's content a function of (seed, UTC hour, drifting) only,
    # not of its position in one call: simulating a day at once or hour by hour lands the same files.
    common = {
        "hour_index": int(drifting),
        "interval_start": hour,
        "seed": _hour_seed(seed, hour),
        "anomaly_rate": anomaly_rate,
        "drift_from_hour": 1,
        "drift_rate": drift_rate,
    }
    if kind == "events":
        frame, truth = generate_event_telemetry(n_sessions=n, **common)
    else:
        frame, truth = generate_vector_telemetry(n_rows=n, n_features=n_features, **common)
    # The generator numbers entities by hour *index*, which repeats across simulations; the label store keys
    # labels by entity id, so ids carry the absolute UTC hour instead.
    new_ids = [f"{_ID_PREFIX[kind]}{hour:%Y%m%d%H}-{i:05d}" for i in range(len(truth))]
    mapping = dict(zip(truth["entity_id"].astype(str), new_ids, strict=True))
    frame = frame.assign(entity_id=frame["entity_id"].astype(str).map(mapping).astype(str))
    truth = truth.assign(entity_id=pd.Series(new_ids, dtype=str))
    return frame, truth


def _remove_stale_parts(lake: TelemetryLake, stream: str, hour: datetime, keep: set[str]) -> None:
    """Delete simulator files of an earlier call with more shards or another format from a raw partition.

    Without this, re-simulating an hour with ``shards=2`` after ``shards=4`` would leave ``part-002`` and
    ``part-003`` behind, and the pipeline would ingest those sessions twice. Other producers' files are kept.
    """
    for rel in lake.list_interval_files(stream, hour, hour + _HOUR, area=RAW):
        name = rel.rsplit("/", 1)[1]
        if _PART_FILE.match(name) and rel not in keep:
            lake.fs.rm(f"{lake.root}/{rel}")
            logger.warning(
                "removed %s: an earlier simulation's file this one does not write", lake.url_of(rel)
            )


def simulate(
    settings: Settings,
    *,
    stream: str,
    kind: SimulationKind,
    hours: int,
    start: datetime,
    seed: int = 0,
    sessions_per_hour: int = 300,
    anomaly_rate: float = 0.08,
    drift_from_hour: int = 4,
    drift_rate: float = 0.3,
    shards: int = 2,
    fmt: SimFormat = "parquet",
    n_features: int = 8,
    on_hour: Callable[[SimulatedHour], None] | None = None,
) -> list[SimulatedHour]:
    """Land ``hours`` hours of synthetic telemetry in the lake's raw partitions, with the truth kept aside.

    Each hour is split into ``shards`` files ``part-000``, ``part-001``, ... by entity ordinal (entity ``i``
    goes to shard ``i % shards``), so a session never spans two files and the scorer's mapped shards see whole
    sessions. The hour's truth is written before its raw files, so whenever telemetry is visible its truth
    exists. Calling again with the same arguments rewrites the same files (and removes simulator files an
    earlier call with other ``shards``/``fmt`` left in those partitions).

    Args:
        settings: Deployment settings (the lake URL).
        stream: Stream name (a lake folder).
        kind: ``"events"`` (log-key sessions) or ``"vectors"`` (feature rows).
        hours: Number of consecutive hours to simulate (>= 1).
        start: First hour (naive means UTC; floored to its UTC hour).
        seed: Seed (>= 0); each hour draws from ``(seed, UTC hour)``.
        sessions_per_hour: Entities per hour: sessions (events) or rows (vectors).
        anomaly_rate: Share of abnormal entities per hour (anomaly kinds cycled evenly).
        drift_from_hour: Hours after ``start`` before drift appears (0: from the first hour).
        drift_rate: Share of the normal entities that drift from then on.
        shards: Raw files per hour (1..999); an empty shard is not written.
        fmt: Raw file format: ``parquet``, ``csv`` or ``jsonl``.
        n_features: Vectors only: numeric features per row (must match the bootstrapped model's).
        on_hour: Called with each hour's result once it has landed (progress display).

    Returns:
        One :class:`SimulatedHour` per hour, oldest first.

    Raises:
        ConfigError: An argument is out of range (the message names it).
    """
    _check_simulation_args(
        stream=stream,
        kind=kind,
        hours=hours,
        seed=seed,
        sessions_per_hour=sessions_per_hour,
        anomaly_rate=anomaly_rate,
        drift_from_hour=drift_from_hour,
        drift_rate=drift_rate,
        shards=shards,
        fmt=fmt,
        n_features=n_features,
    )
    first = hour_floor(_utc(start, "start"))
    if first < _EPOCH:
        raise ConfigError(f"start {first.isoformat()} is before 1970-01-01; simulate hours of this era")
    lake = TelemetryLake.from_settings(settings)
    suffix = _FORMATS[fmt]
    out: list[SimulatedHour] = []
    for index in range(hours):
        hour = first + index * _HOUR
        frame, truth = _generate_hour(
            kind,
            hour=hour,
            drifting=index >= drift_from_hour,
            n=sessions_per_hour,
            seed=seed,
            anomaly_rate=anomaly_rate,
            drift_rate=drift_rate,
            n_features=n_features,
        )
        ordinal = pd.Series(np.arange(len(truth)), index=truth["entity_id"])
        shard_of_row = frame["entity_id"].map(ordinal).to_numpy() % shards
        truth = truth.assign(
            interval_start=pd.Timestamp(hour), shard=(np.arange(len(truth)) % shards).astype(np.int64)
        )
        buffer = io.BytesIO()
        truth[list(TRUTH_COLUMNS)].to_parquet(buffer, index=False)
        truth_path = lake.write_bytes(
            f"{lake.partition(stream, hour, _TRUTH_AREA)}/{TRUTH_FILE}", buffer.getvalue()
        )

        partition = lake.partition(stream, hour, RAW)
        files: list[str] = []
        for shard in range(shards):
            part = frame[shard_of_row == shard]
            if part.empty:
                continue  # an empty file would fail the min-rows expectation and be quarantined
            files.append(
                lake.write_raw(stream, hour, part.reset_index(drop=True), f"part-{shard:03d}{suffix}", fmt)
            )
        _remove_stale_parts(lake, stream, hour, set(files))

        kinds = truth["kind"]
        result = SimulatedHour(
            interval_start=hour,
            raw_path=partition,
            n=len(truth),
            n_abnormal=int(truth["abnormal"].sum()),
            n_drift=int((kinds == "drift").sum()),
            files=tuple(files),
            rows=len(frame),
            truth_path=truth_path,
        )
        logger.info(
            "simulated %s %s: %d entities (%d abnormal, %d drift) in %d files",
            stream,
            f"{hour:%Y-%m-%d %H:00}",
            result.n,
            result.n_abnormal,
            result.n_drift,
            len(files),
        )
        out.append(result)
        if on_hour is not None:
            on_hour(result)
    return out


# ---------------------------------------------------------------------------------------------------------
# Reading partitioned files back
# ---------------------------------------------------------------------------------------------------------
def _window(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    start_utc = None if start is None else _utc(start, "start")
    end_utc = None if end is None else _utc(end, "end")
    if start_utc is not None and end_utc is not None and end_utc < start_utc:
        raise ConfigError(f"window end {end_utc.isoformat()} is before its start {start_utc.isoformat()}")
    return start_utc, end_utc


def _partition_files(
    lake: TelemetryLake, stream: str, area: str, start: datetime | None, end: datetime | None
) -> list[str]:
    """Files of the hour partitions of ``area`` overlapping [start, end) (either bound may be open)."""
    lake_area = cast(Any, area)  # see _TRUTH_AREA
    if start is not None and end is not None:
        return lake.list_interval_files(stream, start, end, area=lake_area)
    files = []
    for rel in lake.list_files(stream, area=lake_area):
        match = _PARTITION.search(rel)
        if match is None:
            continue
        hour = datetime.fromisoformat(match.group(1)).replace(hour=int(match.group(2)), tzinfo=UTC)
        if (start is None or hour + _HOUR > start) and (end is None or hour < end):
            files.append(rel)
    return files


def _in_window(stamps: pd.Series, start: datetime | None, end: datetime | None) -> pd.Series:
    when = pd.to_datetime(stamps, utc=True)
    keep = pd.Series(True, index=stamps.index)
    if start is not None:
        keep &= when >= pd.Timestamp(start)
    if end is not None:
        keep &= when < pd.Timestamp(end)
    return keep


def _read_rows(
    lake: TelemetryLake,
    stream: str,
    area: str,
    start: datetime | None,
    end: datetime | None,
    columns: Sequence[str],
) -> Iterator[tuple[str, pd.DataFrame]]:
    """(path, chunk) of every parquet file in the window, rows filtered on ``interval_start``."""
    for path in _partition_files(lake, stream, area, start, end):
        if not path.endswith(".parquet"):
            continue
        for chunk in lake.read_file_chunks(path, columns=columns, normalize=False):
            chunk = chunk[_in_window(chunk["interval_start"], start, end)]
            if len(chunk):
                yield path, chunk


def _read_truth(
    lake: TelemetryLake, stream: str, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    columns = ["entity_id", "abnormal", "kind", "interval_start"]
    frames = [chunk for _path, chunk in _read_rows(lake, stream, _TRUTH_AREA, start, end, columns)]
    if not frames:
        return pd.DataFrame(
            {
                "entity_id": pd.Series(dtype=str),
                "abnormal": pd.Series(dtype=bool),
                "kind": pd.Series(dtype=str),
                "interval_start": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    truth = pd.concat(frames, ignore_index=True)
    truth["entity_id"] = truth["entity_id"].astype(str)
    truth["interval_start"] = pd.to_datetime(truth["interval_start"], utc=True)
    return truth


def read_truth(
    settings: Settings, stream: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """The simulator's ground truth of a stream, all of it or the hours starting in [start, end).

    Args:
        settings: Deployment settings (the lake URL).
        stream: Stream name.
        start: Only hours starting at or after this instant (naive means UTC); ``None``: no lower bound.
        end: Only hours starting before this instant; ``None``: no upper bound.

    Returns:
        Columns ``entity_id`` (str), ``abnormal`` (bool), ``kind`` (``"normal"``, ``"drift"`` or an anomaly
        kind) and ``interval_start`` (UTC), one row per simulated entity, oldest hour first; empty when
        nothing was simulated.

    Raises:
        ConfigError: ``end`` is before ``start``.
    """
    _check_stream(stream)
    start_utc, end_utc = _window(start, end)
    return _read_truth(TelemetryLake.from_settings(settings), stream, start_utc, end_utc)


# ---------------------------------------------------------------------------------------------------------
# The simulated analyst team
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TruthLabelSummary:
    """What :func:`file_labels_from_truth` found and filed.

    ``fp + fn + already + conflicts + left_out == false_alerts + missed`` always holds.

    Attributes:
        fp: FP labels added now (false alarms).
        fn: FN labels added now (missed anomalies).
        skipped: Alerted or passed entities that have no truth row (not simulated, or outside the window).
        already: Selected mistakes that already had that label (filed earlier, by anyone).
        false_alerts: Alerted entities in the window that the truth says are normal.
        missed: Passed entities in the window that the truth says are abnormal (and were never flagged).
        conflicts: Selected mistakes whose entity has a live label of the other kind (left as it is).
        left_out: Mistakes not selected, because of ``fraction`` or ``max_labels``.
    """

    fp: int
    fn: int
    skipped: int
    already: int
    false_alerts: int
    missed: int
    conflicts: int = 0
    left_out: int = 0

    def to_dict(self) -> dict[str, int]:
        """A JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class _Mistake:
    kind: str  # FP or FN
    entity_id: str
    truth_kind: str
    sample: Any = None
    model_version: str | None = None


def _rank(seed: int, stream: str, entity: str) -> float:
    """A seeded uniform draw per entity, so which mistakes are caught does not depend on listing order."""
    digest = hashlib.blake2b(f"{seed}\x1f{stream}\x1f{entity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _select(
    mistakes: list[_Mistake], *, fraction: float, max_labels: int | None, seed: int, stream: str
) -> list[_Mistake]:
    """A seeded share of each kind (``round(fraction * count)``), then at most ``max_labels`` in all."""
    chosen: list[tuple[float, _Mistake]] = []
    for kind in (FP, FN):
        ranked = sorted(
            ((_rank(seed, stream, m.entity_id), m) for m in mistakes if m.kind == kind),
            key=lambda pair: (pair[0], pair[1].entity_id),
        )
        chosen += ranked[: int(np.floor(len(ranked) * fraction + 0.5))]
    chosen.sort(key=lambda pair: (pair[0], pair[1].entity_id))
    if max_labels is not None:
        chosen = chosen[:max_labels]
    return sorted((m for _rank_value, m in chosen), key=lambda m: (m.kind, m.entity_id))


def _decode_sample(value: Any, entity: str, path: str, lake: TelemetryLake) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise DatasetFormatError(f"{lake.url_of(path)}: score row of {entity!r} has no sample to label")
    if not isinstance(value, str | bytes):
        return value  # a scorer that stored the structure itself
    try:
        return json.loads(value)
    except ValueError as exc:
        raise DatasetFormatError(
            f"{lake.url_of(path)}: sample of entity {entity!r} is not valid JSON ({exc})"
        ) from exc


def _passed_entities(
    lake: TelemetryLake,
    stream: str,
    start: datetime | None,
    end: datetime | None,
    truth_abnormal: dict[str, bool],
) -> tuple[dict[str, tuple[pd.Timestamp, str, Any, str | None]], set[str]]:
    """Passed entities the truth calls abnormal, and passed entities without truth.

    Returns:
        ``{entity: (interval start, score file, raw sample, model version)}`` of the latest passed row of
        each entity the truth says is abnormal (only those rows' samples are kept in memory), and the set
        of passed entities that have no truth row.
    """
    latest: dict[str, tuple[pd.Timestamp, str, Any, str | None]] = {}
    no_truth: set[str] = set()
    for path, chunk in _read_rows(lake, stream, SCORES, start, end, _SCORE_READ_COLUMNS):
        # eq(False): a null "abnormal" is no decision, so it is not a pass either.
        passed = chunk[chunk["abnormal"].eq(False)]
        entities = passed["entity_id"].astype(str)
        known = entities.isin(truth_abnormal.keys())
        no_truth.update(entities[~known])
        wanted = known & entities.map(truth_abnormal).eq(True)
        passed, entities = passed[wanted], entities[wanted]
        when = pd.to_datetime(passed["interval_start"], utc=True)
        for entity, stamp, sample, version in zip(
            entities, when, passed["sample"], passed["model_version"], strict=True
        ):
            if entity not in latest or stamp >= latest[entity][0]:
                version_text = None if version is None or pd.isna(version) else str(version)
                latest[entity] = (stamp, path, sample, version_text)
    return latest, no_truth


def file_labels_from_truth(
    settings: Settings,
    *,
    stream: str,
    start: datetime | None = None,
    end: datetime | None = None,
    analyst: str = DEFAULT_ANALYST,
    incident: str | None = None,
    max_labels: int | None = None,
    fraction: float = 1.0,
    seed: int = 0,
) -> TruthLabelSummary:
    """File the scorer's mistakes in [start, end) as analysts' labels, judged by the simulator's truth.

    FP: every alerted entity (label store alerts whose interval starts in the window) that the truth says is
    normal; the store copies the alert's sample and model version. FN: every entity the lake's score files
    show as passed (``abnormal == False``) in the window, that the truth says is abnormal and that was never
    flagged; the label carries the score row's decoded ``sample`` and ``model_version`` (the latest row when
    the entity was scored more than once). All labels are added in one transaction; running it again adds
    nothing (existing labels count as ``already``). An entity with a live label of the other kind, e.g. a
    human analyst's, is left alone and counted in ``conflicts``.

    Args:
        settings: Deployment settings (lake and label store).
        stream: Stream name.
        start: Window start (naive means UTC); ``None``: from the beginning.
        end: Window end, exclusive; ``None``: up to the latest.
        analyst: Recorded as the labels' analyst.
        incident: Incident tag for every label (lets one unlearning run take exactly these).
        max_labels: At most this many mistakes are selected (FP and FN together).
        fraction: Share of each kind's mistakes the analysts catch, chosen by a seeded draw per entity.
        seed: Seed of that draw; the same seed selects the same entities.

    Returns:
        The counts (see :class:`TruthLabelSummary`).

    Raises:
        ConfigError: ``fraction`` is outside [0, 1], ``max_labels`` is not positive, or ``end < start``.
        DatasetFormatError: A score file lacks a column or a missed entity's sample is unreadable.
        LabelError: The label store refused the batch (nothing was written).
    """
    from lifelong.stores.labels import LabelRequest, LabelStore

    if not 0.0 <= float(fraction) <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    if max_labels is not None and (isinstance(max_labels, bool) or max_labels < 1):
        raise ConfigError(f"max_labels must be a positive integer, got {max_labels!r}")
    _check_stream(stream)
    start_utc, end_utc = _window(start, end)
    lake = TelemetryLake.from_settings(settings)
    # The truth of every hour the window touches (the hour containing a mid-hour start included).
    truth = _read_truth(lake, stream, None if start_utc is None else hour_floor(start_utc), end_utc)
    truth = truth.drop_duplicates("entity_id", keep="last").set_index("entity_id")
    truth_abnormal = truth["abnormal"].astype(bool).to_dict()
    truth_kind = truth["kind"].astype(str).to_dict()

    mistakes: list[_Mistake] = []
    no_truth: set[str] = set()
    with LabelStore.from_settings(settings) as store:
        alerted = {
            alert.entity_id
            for alert in store.list_alerts(stream=stream, since=start_utc, limit=None)
            if end_utc is None or alert.interval_start < end_utc
        }
        for entity in sorted(alerted):
            if entity not in truth_abnormal:
                no_truth.add(entity)
            elif not truth_abnormal[entity]:
                mistakes.append(_Mistake(FP, entity, truth_kind[entity]))

        passed_abnormal, passed_without_truth = _passed_entities(
            lake, stream, start_utc, end_utc, truth_abnormal
        )
        no_truth |= passed_without_truth
        for entity, (_stamp, path, sample, version) in sorted(passed_abnormal.items()):
            if entity in alerted or store.get_alert(stream, entity) is not None:
                continue  # flagged in another interval: not a missed anomaly (and the store would refuse it)
            mistakes.append(
                _Mistake(FN, entity, truth_kind[entity], _decode_sample(sample, entity, path, lake), version)
            )

        selected = _select(
            mistakes, fraction=float(fraction), max_labels=max_labels, seed=seed, stream=stream
        )
        live = {
            label.entity_id: label.kind
            for label in store.list_labels(stream=stream)
            if label.status != "superseded"
        }
        requests: list[LabelRequest] = []
        conflicts = 0
        for mistake in selected:
            other = live.get(mistake.entity_id)
            if other is not None and other != mistake.kind:
                conflicts += 1
                logger.info("%s of %s left alone: it is labelled %s", mistake.kind, mistake.entity_id, other)
                continue
            requests.append(
                LabelRequest(
                    stream=stream,
                    entity_id=mistake.entity_id,
                    kind=mistake.kind,
                    sample=mistake.sample,
                    model_version=mistake.model_version,
                    analyst=analyst,
                    note=f"simulated ground truth: {mistake.truth_kind}",
                    incident=incident,
                    source=f"truth of {mistake.entity_id}",
                )
            )
        results = store.add_labels(requests)

    created = [label for label, new in results if new]
    summary = TruthLabelSummary(
        fp=sum(1 for label in created if label.kind == FP),
        fn=sum(1 for label in created if label.kind == FN),
        skipped=len(no_truth),
        already=len(results) - len(created),
        false_alerts=sum(1 for m in mistakes if m.kind == FP),
        missed=sum(1 for m in mistakes if m.kind == FN),
        conflicts=conflicts,
        left_out=len(mistakes) - len(selected),
    )
    logger.info("labels from truth on %s: %s", stream, summary)
    return summary


__all__: Sequence[str] = [
    "TRUTH",
    "SimulatedHour",
    "TruthLabelSummary",
    "file_labels_from_truth",
    "read_truth",
    "simulate",
]
