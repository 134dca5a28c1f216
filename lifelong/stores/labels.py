"""The label store: alerts the scorer raised and analysts' FP/FN labels, on SQLite (default) or PostgreSQL.

Two tables, created and upgraded by the Alembic migrations beside this module when a store is opened:

* ``alerts``: what the scorer flagged, one row per (stream, entity, interval start), with the sample itself as
  JSON, so a label can be learned from after the raw telemetry has expired. Recording is an upsert.
* ``labels``: an analyst's verdict on one entity. ``FP``: an alert that was normal (its sample and model
  version are copied from the latest alert). ``FN``: a scored entity that passed but was an anomaly (it brings
  its own sample or one is resolved from the lake's score files). A label moves ``pending -> claimed ->
  consumed`` (a promoted candidate learned it), or back to ``pending`` when the candidate is rejected, and is
  ``superseded`` when an analyst replaces it.

At most one label per (stream, entity) is not superseded; a partial unique index enforces it, so concurrent
writers cannot create duplicates or FP/FN conflicts. Claiming is atomic: ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL, a ``BEGIN IMMEDIATE`` transaction (the write lock is taken before reading) on SQLite.

Timestamps are timezone-aware UTC; a naive datetime passed in is taken as UTC.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from lifelong.constants import FN, FP, LABEL_STATUSES
from lifelong.errors import ConfigError, LabelError, NotFoundError

if TYPE_CHECKING:
    from lifelong.settings import Settings

logger = logging.getLogger(__name__)

LabelKind = Literal["FP", "FN"]
LabelStatus = Literal["pending", "claimed", "consumed", "superseded"]
SampleResolver = Callable[[str, str], object | None]
"""(stream, entity_id) -> the entity's scored sample, or None when there is none."""

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Not Alembic's default name: the label store may share a database with Airflow's metadata, which has its own.
VERSION_TABLE = "lifelong_labels_alembic_version"

# Input limits. Generous for real data, small enough that a pasted log file is refused, not stored.
MAX_STREAM_LEN = 128
MAX_ENTITY_LEN = 256
MAX_NAME_LEN = 128  # analyst, incident, model version, candidate version
MAX_RUN_ID_LEN = 250  # Airflow run ids are at most 250 characters
MAX_NOTE_LEN = 4000
MAX_REASON_LEN = 4000
MAX_SAMPLE_ITEMS = 100_000
MAX_SAMPLE_JSON_CHARS = 4_000_000
MAX_FEATURE_NAME_LEN = 128
MAX_FEATURE_TEXT_LEN = 1024

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SINGLE_LINE_BAD = re.compile(r"[\x00-\x1f\x7f]")
_MULTI_LINE_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, newline, carriage return allowed
_SQLITE_IMMEDIATE = "lifelong_sqlite_immediate"
_WRITE_ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------------------
# Schema (Core). The migrations in ./migrations create exactly this; a test compares the two.
# ---------------------------------------------------------------------------------------------------------
class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive, as UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value, "datetime")
        # SQLite has no time zones; storing UTC wall time keeps string comparisons in WHERE clauses correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(MAX_STREAM_LEN), nullable=False),
    sa.Column("entity_id", sa.String(MAX_ENTITY_LEN), nullable=False),
    sa.Column("interval_start", UTCDateTime(), nullable=False),
    sa.Column("interval_end", UTCDateTime(), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("sample", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("stream", "entity_id", "interval_start", name="uq_alerts_stream_entity_start"),
    sa.Index("ix_alerts_stream_start", "stream", "interval_start"),
)

labels_table = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(MAX_STREAM_LEN), nullable=False),
    sa.Column("entity_id", sa.String(MAX_ENTITY_LEN), nullable=False),
    sa.Column("kind", sa.String(2), nullable=False),
    sa.Column("sample", JSONType, nullable=False),
    sa.Column("model_version", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
    sa.Column("analyst", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("incident", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("claimed_by", sa.String(MAX_RUN_ID_LEN), nullable=True),
    sa.Column("claimed_at", UTCDateTime(), nullable=True),
    sa.Column("consumed_by", sa.String(MAX_NAME_LEN), nullable=True),
    sa.Column("consumed_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_attempt", JSONType, nullable=True),
    sa.Column("superseded_by", sa.Integer, sa.ForeignKey("labels.id"), nullable=True),
    sa.CheckConstraint("kind IN ('FP', 'FN')", name="ck_labels_kind"),
    sa.CheckConstraint("status IN ('pending', 'claimed', 'consumed', 'superseded')", name="ck_labels_status"),
    sa.CheckConstraint("attempts >= 0", name="ck_labels_attempts"),
    sa.Index("ix_labels_stream_status", "stream", "status"),
    sa.Index("ix_labels_stream_entity", "stream", "entity_id"),
    sa.Index("ix_labels_claimed_by", "claimed_by"),
)
# One live label per entity: makes duplicates and FP/FN conflicts impossible even between concurrent writers.
sa.Index(
    "uq_labels_active_entity",
    labels_table.c.stream,
    labels_table.c.entity_id,
    unique=True,
    sqlite_where=labels_table.c.status != "superseded",
    postgresql_where=labels_table.c.status != "superseded",
)


# ---------------------------------------------------------------------------------------------------------
# What the store returns (and takes)
# ---------------------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class Alert:
    """One entity the scorer flagged in one data interval.

    Attributes:
        stream: Telemetry stream (lake partition) the entity belongs to.
        entity_id: Session id or row id, unique within the stream.
        interval_start: Start of the data interval that was scored (UTC).
        interval_end: End of that interval (UTC).
        score: The anomaly score; the entity was flagged because it exceeded ``threshold``.
        threshold: The model's decision threshold at scoring time.
        model_version: Registry version (sha256) of the model that scored it.
        sample: The sample itself: a key sequence (list of non-negative ints) or a feature vector
            (list of floats, or dict of column -> number or text).
        id: Database id; None until recorded.
        created_at: When it was first recorded; None until recorded.
    """

    stream: str
    entity_id: str
    interval_start: datetime
    interval_end: datetime
    score: float
    threshold: float
    model_version: str
    sample: Any
    id: int | None = None
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (datetimes as ISO 8601 strings)."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Label:
    """An analyst's verdict on one entity, and where it is in the unlearning life cycle.

    Attributes:
        id: Database id.
        stream: Telemetry stream of the entity.
        entity_id: Session or row id.
        kind: ``"FP"`` (flagged but normal) or ``"FN"`` (passed but anomalous).
        sample: Snapshot of the sample, learnable after the raw telemetry is gone.
        model_version: The model version that erred (None for an FN whose scorer is unknown).
        alert_id: The alert an FP refers to (None for FN, or once the alert was pruned).
        analyst: Who labelled it.
        note: Free text.
        incident: Incident or ticket tag, used to unlearn one incident's labels together.
        created_at: When the label was added (UTC).
        status: ``pending``, ``claimed``, ``consumed`` or ``superseded``.
        claimed_by: Run id of the unlearning run that claimed or consumed it.
        claimed_at: When it was claimed.
        consumed_by: Candidate model version that learned it and was promoted.
        consumed_at: When it was consumed.
        attempts: How many unlearning runs were rejected with this label.
        last_attempt: The last rejected attempt: ``{"run_id", "reason", "at"}``.
        superseded_by: Id of the label that replaced this one.
    """

    id: int
    stream: str
    entity_id: str
    kind: LabelKind
    sample: Any
    model_version: str | None
    alert_id: int | None
    analyst: str | None
    note: str | None
    incident: str | None
    created_at: datetime
    status: LabelStatus
    claimed_by: str | None
    claimed_at: datetime | None
    consumed_by: str | None
    consumed_at: datetime | None
    attempts: int
    last_attempt: dict[str, Any] | None
    superseded_by: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (datetimes as ISO 8601 strings)."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class LabelRequest:
    """A label to add (the input of :meth:`LabelStore.add_labels`).

    Attributes:
        stream: Telemetry stream of the entity.
        entity_id: Session or row id.
        kind: ``"FP"`` or ``"FN"``.
        sample: FN only: the missed sample. FP labels copy the alert's sample and must not pass one.
        model_version: FN only: the model version that passed the entity, when known.
        analyst: Who labels it.
        note: Free text.
        incident: Incident or ticket tag.
        source: Where the request came from (e.g. ``"labels.csv line 3"``); prefixes error messages.
    """

    stream: str
    entity_id: str
    kind: str
    sample: Any = None
    model_version: str | None = None
    analyst: str | None = None
    note: str | None = None
    incident: str | None = None
    source: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------
def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _as_utc(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise LabelError(f"{field} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(
    value: Any, field: str, *, max_len: int, required: bool = True, multiline: bool = False
) -> str | None:
    """Validate a text field: type, emptiness, length and control characters (NUL breaks PostgreSQL text)."""
    if value is None:
        if required:
            raise LabelError(f"{field} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LabelError(f"{field} must be text, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        if required:
            raise LabelError(f"{field} must not be empty")
        return None
    if len(text) > max_len:
        raise LabelError(f"{field} is {len(text)} characters long; at most {max_len} are allowed")
    bad = (_MULTI_LINE_BAD if multiline else _SINGLE_LINE_BAD).search(text)
    if bad:
        raise LabelError(f"{field} contains the control character {bad.group()!r}; remove it")
    return text


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LabelError(f"{field} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise LabelError(f"{field} must be finite, got {number}")
    return number


def validate_sample(sample: Any, field: str = "sample") -> list[int] | list[float] | dict[str, float | str]:
    """Check a sample and return its JSON-ready normal form.

    A list of non-negative ints is a key sequence (an event stream's sample). A list with at least one
    non-integral number is a feature vector and every entry must be finite. A mapping is a feature vector of
    column -> finite number or short text. numpy arrays and scalars are accepted and converted.

    Args:
        sample: The sample to check.
        field: Name used in error messages.

    Returns:
        A list of int, a list of float, or a dict of str -> float | str.

    Raises:
        LabelError: The sample is empty, too large, not one of the shapes above, or holds a negative key,
            NaN or infinity.
    """
    if hasattr(sample, "tolist") and not isinstance(sample, str | bytes):
        sample = sample.tolist()  # numpy arrays from the scorer
    if isinstance(sample, Mapping):
        if not sample:
            raise LabelError(f"{field} is an empty feature vector")
        if len(sample) > MAX_SAMPLE_ITEMS:
            raise LabelError(f"{field} has {len(sample)} features; at most {MAX_SAMPLE_ITEMS} are allowed")
        vector: dict[str, float | str] = {}
        for name, value in sample.items():
            if not isinstance(name, str) or not name or len(name) > MAX_FEATURE_NAME_LEN:
                raise LabelError(
                    f"{field} feature names must be non-empty text up to {MAX_FEATURE_NAME_LEN} chars"
                )
            if hasattr(value, "item") and not isinstance(value, str):
                value = value.item()  # numpy scalar
            if isinstance(value, str):
                if len(value) > MAX_FEATURE_TEXT_LEN or "\x00" in value:
                    raise LabelError(f"{field}[{name!r}] text is too long or holds NUL")
                vector[name] = value
            else:
                vector[name] = _finite(value, f"{field}[{name!r}]")
        normal: Any = vector
    elif isinstance(sample, list | tuple):
        if not sample:
            raise LabelError(f"{field} is an empty sequence")
        if len(sample) > MAX_SAMPLE_ITEMS:
            raise LabelError(f"{field} has {len(sample)} items; at most {MAX_SAMPLE_ITEMS} are allowed")
        for index, item in enumerate(sample):
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                raise LabelError(
                    f"{field}[{index}] is {type(item).__name__}; a sample is a list of int keys or numbers"
                )
        if all(isinstance(item, numbers.Integral) for item in sample):
            keys = [int(item) for item in sample]
            negative = next((i for i, key in enumerate(keys) if key < 0), None)
            if negative is not None:
                raise LabelError(
                    f"{field}[{negative}] = {keys[negative]}: event keys must be non-negative "
                    "(a feature vector's values must be given as floats)"
                )
            normal = keys
        else:
            normal = [_finite(item, f"{field}[{index}]") for index, item in enumerate(sample)]
    else:
        raise LabelError(
            f"{field} must be a list of event keys, a list of numbers or a dict of features, "
            f"got {type(sample).__name__}"
        )
    encoded = json.dumps(normal, allow_nan=False)
    if len(encoded) > MAX_SAMPLE_JSON_CHARS:
        raise LabelError(f"{field} is {len(encoded)} characters as JSON; at most {MAX_SAMPLE_JSON_CHARS}")
    return normal


def _validate_alert(alert: Alert | Mapping[str, Any], where: str) -> dict[str, Any]:
    try:
        data = asdict(alert) if isinstance(alert, Alert) else dict(alert)
    except TypeError as exc:
        raise LabelError(
            f"{where}an alert must be an Alert or a mapping, got {type(alert).__name__}"
        ) from exc
    try:
        row = {
            "stream": _text(data.get("stream"), "stream", max_len=MAX_STREAM_LEN),
            "entity_id": _text(data.get("entity_id"), "entity_id", max_len=MAX_ENTITY_LEN),
            "interval_start": _as_utc(data.get("interval_start"), "interval_start"),
            "interval_end": _as_utc(data.get("interval_end"), "interval_end"),
            "score": _finite(data.get("score"), "score"),
            "threshold": _finite(data.get("threshold"), "threshold"),
            "model_version": _text(data.get("model_version"), "model_version", max_len=MAX_NAME_LEN),
            "sample": validate_sample(data.get("sample")),
        }
    except LabelError as exc:
        raise LabelError(f"{where}{exc}") from None
    if row["interval_end"] < row["interval_start"]:
        raise LabelError(f"{where}interval_end {row['interval_end']} is before interval_start")
    return row


def validate_request(request: LabelRequest) -> LabelRequest:
    """Check a label request without touching the database (types, lengths, kind, sample).

    Args:
        request: The label to add.

    Returns:
        The request with its text stripped and its sample in normal form.

    Raises:
        LabelError: Something is invalid; the message starts with the request's ``source``.
    """
    where = _where(request.source)
    try:
        kind = request.kind
        if kind not in (FP, FN):
            raise LabelError(f"kind must be FP or FN, got {kind!r}")
        stream = _text(request.stream, "stream", max_len=MAX_STREAM_LEN)
        entity = _text(request.entity_id, "entity", max_len=MAX_ENTITY_LEN)
        if kind == FP and request.sample is not None:
            raise LabelError(
                f"FP for {entity!r}: an FP takes its sample from the alert; do not pass a sample"
            )
        if kind == FP and request.model_version is not None:
            raise LabelError(
                f"FP for {entity!r}: an FP takes its model version from the alert; do not pass one"
            )
        sample = None if request.sample is None else validate_sample(request.sample)
        return replace(
            request,
            stream=stream,
            entity_id=entity,
            sample=sample,
            model_version=_text(request.model_version, "model_version", max_len=MAX_NAME_LEN, required=False),
            analyst=_text(request.analyst, "analyst", max_len=MAX_NAME_LEN, required=False),
            note=_text(request.note, "note", max_len=MAX_NOTE_LEN, required=False, multiline=True),
            incident=_text(request.incident, "incident", max_len=MAX_NAME_LEN, required=False),
        )
    except LabelError as exc:
        raise LabelError(f"{where}{exc}") from None


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------------------
# Engine and migrations
# ---------------------------------------------------------------------------------------------------------
def _prepare_url(url: str | URL, schema: str | None) -> tuple[URL, str | None]:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"label store URL {url!r} is not a SQLAlchemy URL: {exc}") from None
    backend = parsed.get_backend_name()
    query_schema = parsed.query.get("schema")
    if query_schema is not None:
        if isinstance(query_schema, tuple):
            raise ConfigError("label store URL gives ?schema= more than once")
        if schema is not None and schema != query_schema:
            raise ConfigError(f"schema {schema!r} and the URL's ?schema={query_schema} disagree")
        schema = query_schema
        parsed = parsed.difference_update_query(["schema"])
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # psycopg 3 is the driver this project installs; SQLAlchemy's bare default would be psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise ConfigError(
                f"schema {schema!r} must be a lower-case identifier (letters, digits, _; at most 63 chars)"
            )
        if schema is not None and "options" in parsed.query:
            raise ConfigError("give the schema either as schema= or in the URL's options=, not both")
    elif backend == "sqlite":
        if schema is not None:
            raise ConfigError("a schema is only supported on PostgreSQL; SQLite keeps one database per file")
    else:
        raise ConfigError(f"label store URL must be sqlite:// or postgresql://, got {backend}://")
    return parsed, schema


def _sqlite_path(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _enable_wal(cursor: Any, timeout_s: float) -> None:
    """Put a SQLite file in WAL mode, waiting out another process that is doing the same.

    Switching the journal mode needs an exclusive lock and SQLite answers "database is locked" at once, without
    its busy handler, when another connection holds one (two pipeline steps opening a fresh store together).
    The mode is stored in the file, so once any process has set it the first check returns and nothing waits.
    """
    import sqlite3

    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _create_engine(url: URL, schema: str | None) -> Engine:
    if url.get_backend_name() == "sqlite":
        memory = _sqlite_path(url) is None
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 30},
            # An in-memory database exists per connection: share one, or every call sees an empty database.
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN, so writes can use BEGIN IMMEDIATE (see below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                # WAL lets readers (the CLI) run while a pipeline step writes.
                _enable_wal(cursor, timeout_s=30.0)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            # IMMEDIATE takes the write lock before the first read, so a read-then-write (claiming, the
            # duplicate check) cannot interleave with another writer: that is SQLite's atomic claim.
            immediate = connection.get_execution_options().get(_SQLITE_IMMEDIATE, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """An Alembic ``Config`` for the label store's migrations, built in code (no alembic.ini needed).

    Args:
        connection: Run the migrations on this connection (what :class:`LabelStore` does).
        url: Or a database URL, for offline SQL generation (``alembic upgrade head --sql``) or new revisions.

    Returns:
        An ``alembic.config.Config`` whose script location is this package's ``migrations`` folder.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine, schema: str | None) -> None:
    """Upgrade to head; two processes opening a fresh database at once both end up at head, once."""
    from alembic import command

    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(**{_SQLITE_IMMEDIATE: True})  # serialises concurrent migrators
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Transaction-scoped advisory lock: the second opener waits, then finds the schema at head.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"lifelong.labels.migrate:{schema or ''}"},
                )
                if schema is not None:
                    exists = conn.execute(
                        sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": schema}
                    ).first()
                    if exists is None:
                        # Validated identifier (see _prepare_url), so quoting it is safe.
                        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            command.upgrade(alembic_config(connection=conn), "head")


# ---------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------
def _alert_from_row(row: sa.Row[Any]) -> Alert:
    m = row._mapping
    return Alert(
        id=m["id"],
        stream=m["stream"],
        entity_id=m["entity_id"],
        interval_start=m["interval_start"],
        interval_end=m["interval_end"],
        score=m["score"],
        threshold=m["threshold"],
        model_version=m["model_version"],
        sample=m["sample"],
        created_at=m["created_at"],
    )


def _label_from_row(row: sa.Row[Any]) -> Label:
    m = row._mapping
    return Label(**{column.name: m[column.name] for column in labels_table.columns})


class LabelStore:
    """Alerts and analysts' labels in one SQL database (SQLite file or PostgreSQL).

    Opening a store upgrades its schema to the latest migration. Every method runs in its own transaction
    and returns frozen dataclasses, never ORM rows.

    Args:
        url: SQLAlchemy URL: ``sqlite:///path/labels.db`` or ``postgresql+psycopg://user@host/db``. A
            PostgreSQL URL may carry ``?schema=name``.
        schema: PostgreSQL schema to keep the tables in (created if missing); default: the search path.

    Raises:
        ConfigError: The URL or schema is not usable, the database cannot be reached, or its schema is at a
            revision this release does not know.
    """

    def __init__(self, url: str | URL, *, schema: str | None = None) -> None:
        parsed, self.schema = _prepare_url(url, schema)
        self.url = parsed
        path = _sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = _create_engine(parsed, self.schema)
        self.dialect = self._engine.dialect.name
        from alembic.util import CommandError

        try:
            _migrate(self._engine, self.schema)
        except (sa.exc.OperationalError, CommandError) as exc:
            # Unreachable server, bad credentials, or a database migrated by a newer release than this one.
            self._engine.dispose()
            detail = exc.orig if isinstance(exc, sa.exc.OperationalError) else exc
            raise ConfigError(f"cannot open the label store {self}: {str(detail).strip()}") from exc
        except BaseException:
            self._engine.dispose()
            raise
        logger.debug("label store open at %s", self)

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStore:
        """Open the store the settings name (``LIFELONG_LABELS_URL``, default ``HOME/labels.db``)."""
        return cls(settings.resolved_labels_url)

    def __repr__(self) -> str:
        where = self.url.render_as_string(hide_password=True)
        return f"LabelStore({where!r}{f', schema={self.schema!r}' if self.schema else ''})"

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if write and self.dialect == "sqlite":
                conn.execution_options(**{_SQLITE_IMMEDIATE: True})
            with conn.begin():
                yield conn

    # -- alerts ----------------------------------------------------------------------------------------
    def record_alerts(self, alerts: Iterable[Alert | Mapping[str, Any]]) -> int:
        """Record what the scorer flagged; an upsert on (stream, entity_id, interval_start).

        Recording the same alert again changes nothing; a re-scored one (same key, new score or model) is
        updated in place, so the latest scoring wins and no alert is ever duplicated.

        Args:
            alerts: :class:`Alert` objects or mappings with the same fields (``id``/``created_at`` ignored).

        Returns:
            How many alerts were new.

        Raises:
            LabelError: An alert is invalid; nothing is written. The message names its position.
        """
        rows: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        for index, alert in enumerate(alerts):
            row = _validate_alert(alert, f"alert {index}: ")
            rows[(row["stream"], row["entity_id"], row["interval_start"])] = row  # last one in a batch wins
        if not rows:
            return 0
        now = _now()
        params = [{**row, "created_at": now} for row in rows.values()]
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(alerts_table)
        insert = insert.on_conflict_do_nothing(index_elements=["stream", "entity_id", "interval_start"])
        insert = insert.returning(
            alerts_table.c.stream, alerts_table.c.entity_id, alerts_table.c.interval_start
        )
        t = alerts_table.c
        update = (
            sa.update(alerts_table)
            .where(
                t.stream == sa.bindparam("k_stream"),
                t.entity_id == sa.bindparam("k_entity"),
                t.interval_start == sa.bindparam("k_start", type_=UTCDateTime()),
            )
            .values(
                interval_end=sa.bindparam("interval_end", type_=UTCDateTime()),
                score=sa.bindparam("score"),
                threshold=sa.bindparam("threshold"),
                model_version=sa.bindparam("model_version"),
                sample=sa.bindparam("sample", type_=JSONType),
            )
        )
        inserted: set[tuple[str, str, datetime]] = set()
        with self._tx(write=True) as conn:
            for start in range(0, len(params), 500):
                result = conn.execute(insert, params[start : start + 500])
                inserted.update((r.stream, r.entity_id, r.interval_start) for r in result)
            existing = [
                {
                    "k_stream": key[0],
                    "k_entity": key[1],
                    "k_start": key[2],
                    "interval_end": row["interval_end"],
                    "score": row["score"],
                    "threshold": row["threshold"],
                    "model_version": row["model_version"],
                    "sample": row["sample"],
                }
                for key, row in rows.items()
                if key not in inserted
            ]
            if existing:
                conn.execute(update, existing)
        logger.info("recorded %d alerts (%d new)", len(rows), len(inserted))
        return len(inserted)

    def get_alert(self, stream: str, entity_id: str) -> Alert | None:
        """The latest alert for an entity (by interval start), or None if it was never flagged."""
        stream = _text(stream, "stream", max_len=MAX_STREAM_LEN)
        entity_id = _text(entity_id, "entity", max_len=MAX_ENTITY_LEN)
        with self._tx(write=False) as conn:
            return self._latest_alert(conn, stream, entity_id)

    @staticmethod
    def _latest_alert(conn: Connection, stream: str | None, entity_id: str | None) -> Alert | None:
        t = alerts_table.c
        row = conn.execute(
            sa.select(alerts_table)
            .where(t.stream == stream, t.entity_id == entity_id)
            .order_by(t.interval_start.desc(), t.id.desc())
            .limit(1)
        ).first()
        return None if row is None else _alert_from_row(row)

    def list_alerts(
        self,
        stream: str | None = None,
        since: datetime | None = None,
        model_version: str | None = None,
        limit: int | None = 1000,
    ) -> list[Alert]:
        """Alerts, newest data interval first.

        Args:
            stream: Only this stream.
            since: Only alerts whose data interval starts at or after this time.
            model_version: Only alerts raised by this model version.
            limit: At most this many (None: all).

        Returns:
            The alerts, ordered by interval start, newest first.
        """
        t = alerts_table.c
        query = sa.select(alerts_table).order_by(t.interval_start.desc(), t.id.desc())
        if stream is not None:
            query = query.where(t.stream == stream)
        if since is not None:
            query = query.where(t.interval_start >= _as_utc(since, "since"))
        if model_version is not None:
            query = query.where(t.model_version == model_version)
        if limit is not None:
            query = query.limit(_positive(limit, "limit"))
        with self._tx(write=False) as conn:
            return [_alert_from_row(row) for row in conn.execute(query)]

    # -- adding labels ---------------------------------------------------------------------------------
    def add_label(
        self,
        *,
        stream: str,
        entity_id: str,
        kind: str,
        sample: Any = None,
        model_version: str | None = None,
        analyst: str | None = None,
        note: str | None = None,
        incident: str | None = None,
        supersede: bool = False,
        sample_resolver: SampleResolver | None = None,
    ) -> Label:
        """Add one label; adding the same label again returns the existing one.

        Args:
            stream: Telemetry stream of the entity.
            entity_id: Session or row id.
            kind: ``"FP"`` (an alert that was normal) or ``"FN"`` (a passed entity that was an anomaly).
            sample: FN only: the missed sample; otherwise ``sample_resolver`` must find it.
            model_version: FN only: the model version that passed it, when known.
            analyst: Who labels it.
            note: Free text, stored verbatim.
            incident: Incident or ticket tag.
            supersede: Replace a conflicting label (FP vs FN) of the entity instead of refusing.
            sample_resolver: ``(stream, entity_id) -> sample | None`` for an FN given without a sample.

        Returns:
            The new label, or the existing one when the same label was already there.

        Raises:
            LabelError: The label is invalid, an FP has no alert, an FN was in fact flagged, no FN sample was
                found, or it conflicts with another label and ``supersede`` is False.
        """
        request = LabelRequest(
            stream=stream,
            entity_id=entity_id,
            kind=kind,
            sample=sample,
            model_version=model_version,
            analyst=analyst,
            note=note,
            incident=incident,
        )
        ((label, _created),) = self.add_labels(
            [request], supersede=supersede, sample_resolver=sample_resolver
        )
        return label

    def add_labels(
        self,
        requests: Iterable[LabelRequest],
        *,
        supersede: bool = False,
        sample_resolver: SampleResolver | None = None,
    ) -> list[tuple[Label, bool]]:
        """Add labels all together or not at all (one transaction), e.g. an analyst's spreadsheet.

        Every request is validated before anything is written; then each is checked against the database
        (see :meth:`add_label`). The first refusal rolls back the whole batch.

        Args:
            requests: The labels; ``source`` on a request prefixes its error messages.
            supersede: Replace conflicting labels instead of refusing.
            sample_resolver: Finds the sample of an FN given without one.

        Returns:
            ``(label, created)`` per request, in order; ``created`` is False when it already existed.

        Raises:
            LabelError: A request was refused; nothing was written.
        """
        checked = [validate_request(request) for request in requests]
        if not checked:
            return []
        resolved = [self._resolve_fn_sample(request, sample_resolver) for request in checked]
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._tx(write=True) as conn:
                    results = [self._add_one(conn, request, supersede) for request in resolved]
                break
            except sa.exc.IntegrityError as exc:
                # A concurrent writer added a label for the same entity between our check and insert (the
                # partial unique index caught it); re-run: the check now sees it (no-op or a clear conflict).
                if attempt == _WRITE_ATTEMPTS:
                    raise LabelError(
                        f"labels could not be written after {attempt} tries: {exc.orig}"
                    ) from None
                logger.info("label write raced with another writer (%s); retrying", exc.orig)
        created = sum(1 for _label, new in results if new)
        logger.info("added %d labels (%d already present)", created, len(results) - created)
        return results

    def _resolve_fn_sample(self, request: LabelRequest, resolver: SampleResolver | None) -> LabelRequest:
        """Find an FN's sample before the write transaction: the resolver may read the lake for a while."""
        if request.kind != FN or request.sample is not None:
            return request
        where = _where(request.source)
        alert = self.get_alert(request.stream, request.entity_id)
        if alert is not None:
            raise LabelError(f"{where}{self._flagged_message(request, alert)}")
        sample = None
        if resolver is not None:
            try:
                sample = resolver(request.stream, request.entity_id)
            except LabelError as exc:
                raise LabelError(f"{where}{exc}") from None
        if sample is None:
            raise LabelError(
                f"{where}FN for {request.entity_id!r} on stream {request.stream!r} needs a sample: "
                "none was given and no scored sample was found"
            )
        try:
            return replace(request, sample=validate_sample(sample, "resolved sample"))
        except LabelError as exc:
            raise LabelError(f"{where}FN for {request.entity_id!r}: {exc}") from None

    @staticmethod
    def _flagged_message(request: LabelRequest, alert: Alert) -> str:
        return (
            f"FN for {request.entity_id!r} on stream {request.stream!r} refused: it was flagged "
            f"(alert #{alert.id}, interval {alert.interval_start.isoformat()}, score {alert.score:.4g} > "
            f"threshold {alert.threshold:.4g}), so it is not a missed anomaly; label it FP if it was normal"
        )

    def _add_one(self, conn: Connection, request: LabelRequest, supersede: bool) -> tuple[Label, bool]:
        where = _where(request.source)
        t = labels_table.c
        query = sa.select(labels_table).where(
            t.stream == request.stream, t.entity_id == request.entity_id, t.status != "superseded"
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        live = [_label_from_row(row) for row in conn.execute(query.order_by(t.id))]
        same = [label for label in live if label.kind == request.kind]
        if same:
            return same[0], False

        alert = self._latest_alert(conn, request.stream, request.entity_id)
        if request.kind == FP:
            if alert is None:
                raise LabelError(
                    f"{where}FP for {request.entity_id!r} on stream {request.stream!r} refused: no alert was "
                    "recorded for it (an FP must be something the scorer flagged; check stream and entity)"
                )
            sample, model_version, alert_id = alert.sample, alert.model_version, alert.id
        else:
            if alert is not None:
                raise LabelError(f"{where}{self._flagged_message(request, alert)}")
            sample, model_version, alert_id = request.sample, request.model_version, None

        for other in live:
            if not supersede:
                raise LabelError(
                    f"{where}{request.kind} for {request.entity_id!r} on stream {request.stream!r} conflicts "
                    f"with label #{other.id} ({other.kind}, {other.status}); an entity is either FP or FN. "
                    "Pass --supersede (supersede=True) to replace it"
                )
            if other.status == "claimed":
                raise LabelError(
                    f"{where}label #{other.id} for {request.entity_id!r} is claimed by run "
                    f"{other.claimed_by!r}; supersede it after that run is promoted or rejected"
                )
        old_ids = [other.id for other in live]
        if old_ids:
            # Retire the old label first: the partial unique index allows one live label per entity.
            conn.execute(sa.update(labels_table).where(t.id.in_(old_ids)).values(status="superseded"))
        new_id = conn.execute(
            sa.insert(labels_table)
            .values(
                stream=request.stream,
                entity_id=request.entity_id,
                kind=request.kind,
                sample=sample,
                model_version=model_version,
                alert_id=alert_id,
                analyst=request.analyst,
                note=request.note,
                incident=request.incident,
                created_at=_now(),
                status="pending",
                attempts=0,
            )
            .returning(t.id)
        ).scalar_one()
        if old_ids:
            conn.execute(sa.update(labels_table).where(t.id.in_(old_ids)).values(superseded_by=new_id))
            logger.info("label #%d supersedes %s", new_id, ", ".join(f"#{i}" for i in old_ids))
        row = conn.execute(sa.select(labels_table).where(t.id == new_id)).one()
        return _label_from_row(row), True

    # -- the unlearning life cycle ---------------------------------------------------------------------
    def claim_pending(
        self, stream: str, run_id: str, *, limit: int | None = None, incident: str | None = None
    ) -> list[Label]:
        """Atomically claim pending labels of a stream for one unlearning run.

        Two concurrent runs never claim the same label. Claiming again with the same ``run_id`` is
        idempotent: it returns the labels that run already holds (claimed, or consumed once promoted) and
        claims nothing new, so a retried task trains on the same batch.

        Args:
            stream: Telemetry stream.
            run_id: The unlearning run (Airflow run id).
            limit: Claim at most this many (oldest first); None: all pending.
            incident: Only labels with this incident tag.

        Returns:
            The run's labels, ordered by id.

        Raises:
            LabelError: An argument is invalid.
        """
        stream = _text(stream, "stream", max_len=MAX_STREAM_LEN)
        run_id = _text(run_id, "run_id", max_len=MAX_RUN_ID_LEN)
        if limit is not None:
            limit = _positive(limit, "limit")
        t = labels_table.c
        held = sa.select(labels_table).where(
            t.stream == stream, t.claimed_by == run_id, t.status.in_(("claimed", "consumed"))
        )
        with self._tx(write=True) as conn:
            already = [_label_from_row(row) for row in conn.execute(held.order_by(t.id))]
            if already:
                logger.info("run %s already holds %d labels of %s", run_id, len(already), stream)
                return already
            pick = sa.select(t.id).where(t.stream == stream, t.status == "pending").order_by(t.id)
            if incident is not None:
                pick = pick.where(t.incident == incident)
            if limit is not None:
                pick = pick.limit(limit)
            if self.dialect == "postgresql":
                # Rows another run is claiming right now are skipped, not waited for or taken twice.
                pick = pick.with_for_update(skip_locked=True)
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return []
            conn.execute(
                sa.update(labels_table)
                .where(t.id.in_(ids), t.status == "pending")
                .values(status="claimed", claimed_by=run_id, claimed_at=_now())
            )
            claimed = [_label_from_row(row) for row in conn.execute(held.order_by(t.id))]
        logger.info("run %s claimed %d labels of %s", run_id, len(claimed), stream)
        return claimed

    def mark_consumed(self, run_id: str, version: str) -> int:
        """Mark a run's claimed labels consumed by the promoted candidate ``version``.

        Call it only after the promotion succeeded. Calling it again with the same version does nothing.

        Args:
            run_id: The unlearning run that claimed the labels.
            version: The promoted candidate's model version.

        Returns:
            How many labels became consumed now.

        Raises:
            LabelError: The run's labels were already consumed by a different version.
        """
        run_id = _text(run_id, "run_id", max_len=MAX_RUN_ID_LEN)
        version = _text(version, "version", max_len=MAX_NAME_LEN)
        t = labels_table.c
        with self._tx(write=True) as conn:
            other = conn.execute(
                sa.select(t.consumed_by)
                .where(t.claimed_by == run_id, t.status == "consumed", t.consumed_by != version)
                .limit(1)
            ).scalar()
            if other is not None:
                raise LabelError(
                    f"run {run_id!r}'s labels were already consumed by version {other!r}, not {version!r}"
                )
            count = conn.execute(
                sa.update(labels_table)
                .where(t.claimed_by == run_id, t.status == "claimed")
                .values(status="consumed", consumed_by=version, consumed_at=_now())
            ).rowcount
        logger.info("run %s: %d labels consumed by %s", run_id, count, version)
        return count

    def release(self, run_id: str, reason: str) -> int:
        """Return a rejected run's claimed labels to pending and record the failed attempt.

        Args:
            run_id: The unlearning run whose candidate was rejected.
            reason: Why (the gate's verdict), kept in ``last_attempt``.

        Returns:
            How many labels were released (0 when called again).
        """
        run_id = _text(run_id, "run_id", max_len=MAX_RUN_ID_LEN)
        reason = _text(reason, "reason", max_len=MAX_REASON_LEN, multiline=True)
        t = labels_table.c
        attempt = {"run_id": run_id, "reason": reason, "at": _now().isoformat()}
        with self._tx(write=True) as conn:
            count = conn.execute(
                sa.update(labels_table)
                .where(t.claimed_by == run_id, t.status == "claimed")
                .values(
                    status="pending",
                    claimed_by=None,
                    claimed_at=None,
                    attempts=t.attempts + 1,
                    last_attempt=attempt,
                )
            ).rowcount
        logger.info("run %s released %d labels: %s", run_id, count, reason)
        return count

    # -- queries ---------------------------------------------------------------------------------------
    def get_label(self, label_id: int) -> Label:
        """One label by id.

        Raises:
            NotFoundError: There is no label with that id.
        """
        with self._tx(write=False) as conn:
            row = conn.execute(sa.select(labels_table).where(labels_table.c.id == label_id)).first()
        if row is None:
            raise NotFoundError(f"no label #{label_id} in {self}")
        return _label_from_row(row)

    def pending_count(self, stream: str, incident: str | None = None) -> int:
        """How many labels of a stream wait for an unlearning run (optionally of one incident)."""
        t = labels_table.c
        query = (
            sa.select(sa.func.count())
            .select_from(labels_table)
            .where(t.stream == stream, t.status == "pending")
        )
        if incident is not None:
            query = query.where(t.incident == incident)
        with self._tx(write=False) as conn:
            return int(conn.execute(query).scalar_one())

    def list_labels(
        self,
        stream: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        incident: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[Label]:
        """Labels matching every filter given, oldest first.

        Args:
            stream: Only this stream.
            status: Only this status (pending, claimed, consumed, superseded).
            since: Only labels created at or after this time.
            incident: Only this incident tag.
            kind: Only FP or only FN.
            limit: At most this many.

        Returns:
            The labels, ordered by id.

        Raises:
            LabelError: An unknown status or kind.
        """
        t = labels_table.c
        query = sa.select(labels_table).order_by(t.id)
        if stream is not None:
            query = query.where(t.stream == stream)
        if status is not None:
            if status not in LABEL_STATUSES:
                raise LabelError(f"status must be one of {', '.join(LABEL_STATUSES)}, got {status!r}")
            query = query.where(t.status == status)
        if since is not None:
            query = query.where(t.created_at >= _as_utc(since, "since"))
        if incident is not None:
            query = query.where(t.incident == incident)
        if kind is not None:
            if kind not in (FP, FN):
                raise LabelError(f"kind must be FP or FN, got {kind!r}")
            query = query.where(t.kind == kind)
        if limit is not None:
            query = query.limit(_positive(limit, "limit"))
        with self._tx(write=False) as conn:
            return [_label_from_row(row) for row in conn.execute(query)]

    def past_labels(self, stream: str) -> list[Label]:
        """Consumed labels of a stream: the memory set and the no-regression gate's cases."""
        return self.list_labels(stream=stream, status="consumed")


def _positive(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabelError(f"{field} must be a positive integer, got {value!r}")
    return value


__all__: Sequence[str] = [
    "Alert",
    "Label",
    "LabelRequest",
    "LabelStore",
    "SampleResolver",
    "alembic_config",
    "metadata",
    "validate_request",
    "validate_sample",
]
