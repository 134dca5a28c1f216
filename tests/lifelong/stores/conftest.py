"""Label store fixtures: one contract, run on a SQLite file and on PostgreSQL in a throwaway schema."""

from __future__ import annotations

import functools
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

# tests/ is not a package: the race test's worker module (spawned processes import it) is found via sys.path.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

PG_URL = os.environ.get("LIFELONG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@functools.cache
def postgres_unreachable(url: str = PG_URL) -> str | None:
    """Why PostgreSQL cannot be used at ``url``, or None when it answers."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable here", reported in the skip message
        return f"PostgreSQL not reachable at {url} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    finally:
        engine.dispose()
    return None


@dataclass(frozen=True)
class LabelDB:
    """Where a test's label store lives."""

    backend: str
    url: str
    schema: str | None


def _drop_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


def _postgres_db() -> Iterator[LabelDB]:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(f"{reason}; the postgres label store tests need it (set LIFELONG_TEST_PG_URL)")
    schema = f"lifelong_test_{uuid.uuid4().hex[:12]}"
    try:
        yield LabelDB("postgres", PG_URL, schema)
    finally:
        _drop_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def label_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabelDB]:
    """A fresh, empty label database: a SQLite file, or a unique PostgreSQL schema dropped after."""
    if request.param == "sqlite":
        yield LabelDB("sqlite", f"sqlite:///{tmp_path / 'labels.db'}", None)
    else:
        yield from _postgres_db()


@pytest.fixture
def pg_label_db() -> Iterator[LabelDB]:
    """A unique PostgreSQL schema (dropped after), for behaviour only PostgreSQL has; mark tests postgres."""
    yield from _postgres_db()


def _open(db: LabelDB) -> Iterator[object]:
    from lifelong.stores.labels import LabelStore

    store = LabelStore(db.url, schema=db.schema)
    try:
        yield store
    finally:
        store.close()  # before the schema is dropped: no pooled connection may hold it


@pytest.fixture
def label_store(label_db: LabelDB) -> Iterator[object]:
    """An open :class:`LabelStore` on ``label_db``, closed after the test."""
    yield from _open(label_db)


@pytest.fixture
def pg_label_store(pg_label_db: LabelDB) -> Iterator[object]:
    """An open :class:`LabelStore` on ``pg_label_db``, closed after the test."""
    yield from _open(pg_label_db)
