"""Contract of the label store, run on SQLite and PostgreSQL alike (alerts, labels, claims, races)."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from labels_race_worker import claim_until_empty, open_store

from lifelong.errors import ConfigError, LabelError, NotFoundError
from lifelong.stores.labels import (
    Alert,
    Label,
    LabelRequest,
    LabelStore,
    alembic_config,
    labels_table,
    metadata,
    validate_sample,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SQL_TEXT = "x'); DROP TABLE labels;--"


def make_alert(entity: str, *, stream: str = "events", start: datetime = T0, **overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "stream": stream,
        "entity_id": entity,
        "interval_start": start,
        "interval_end": start + HOUR,
        "score": 7.5,
        "threshold": 2.0,
        "model_version": "v-prod-1",
        "sample": [3, 1, 4, 1, 5],
    }
    fields.update(overrides)
    return Alert(**fields)


def add_fp_labels(
    store: LabelStore, count: int, *, stream: str = "events", incident: str | None = None
) -> None:
    store.record_alerts([make_alert(f"s{i}", stream=stream) for i in range(count)])
    store.add_labels(
        [LabelRequest(stream=stream, entity_id=f"s{i}", kind="FP", incident=incident) for i in range(count)]
    )


# -- alerts ---------------------------------------------------------------------------------------------
def test_record_alerts_is_an_idempotent_upsert(label_store: LabelStore) -> None:
    alerts = [make_alert("a"), make_alert("b"), make_alert("a", start=T0 + HOUR)]
    assert label_store.record_alerts(alerts) == 3
    assert label_store.record_alerts(alerts) == 0
    assert len(label_store.list_alerts()) == 3

    # Re-scored by a newer model: same key, updated in place, still no duplicate.
    rescored = make_alert("b", score=9.25, model_version="v-prod-2", sample={"cpu": 0.5, "host": "h1"})
    assert label_store.record_alerts([rescored, make_alert("c"), make_alert("c")]) == 1
    stored = label_store.get_alert("events", "b")
    assert stored is not None
    assert (stored.score, stored.model_version, stored.sample) == (
        9.25,
        "v-prod-2",
        {"cpu": 0.5, "host": "h1"},
    )
    assert len(label_store.list_alerts()) == 4


def test_alert_round_trip_keeps_sample_and_utc_times(label_store: LabelStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    naive = datetime(2024, 5, 1, 12, 0)
    label_store.record_alerts(
        [
            make_alert("seq", sample=[0, 17, 2**20]),
            make_alert("vec", start=datetime(2024, 5, 1, 14, 0, tzinfo=plus2), sample=[0.25, -1.5, 3.0]),
            {
                **make_alert("dict").to_dict(),
                "interval_start": naive,
                "interval_end": naive + HOUR,
                "sample": {"bytes": 1024.0, "proto": "tcp"},
            },
        ]
    )
    seq, vec, dct = (label_store.get_alert("events", name) for name in ("seq", "vec", "dict"))
    assert seq is not None and vec is not None and dct is not None
    assert seq.sample == [0, 17, 2**20]
    assert vec.sample == [0.25, -1.5, 3.0]
    assert dct.sample == {"bytes": 1024.0, "proto": "tcp"}
    assert vec.interval_start == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # 14:00+02:00
    assert dct.interval_start == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # naive is UTC
    assert all(a.interval_start.tzinfo is not None and a.created_at is not None for a in (seq, vec, dct))
    json.dumps(seq.to_dict())
    assert seq.to_dict()["interval_start"] == "2024-05-01T10:00:00+00:00"


def test_get_alert_returns_the_latest_interval(label_store: LabelStore) -> None:
    label_store.record_alerts(
        [make_alert("a", start=T0 + 2 * HOUR, score=3.0), make_alert("a", score=5.0), make_alert("b")]
    )
    latest = label_store.get_alert("events", "a")
    assert latest is not None and latest.score == 3.0 and latest.interval_start == T0 + 2 * HOUR
    assert label_store.get_alert("events", "zzz") is None
    assert label_store.get_alert("other", "a") is None


def test_list_alerts_filters_and_orders_newest_first(label_store: LabelStore) -> None:
    label_store.record_alerts(
        [
            make_alert("a", start=T0),
            make_alert("b", start=T0 + HOUR, model_version="v2"),
            make_alert("c", start=T0 + 2 * HOUR),
            make_alert("d", stream="vectors", start=T0 + 3 * HOUR),
        ]
    )
    assert [a.entity_id for a in label_store.list_alerts()] == ["d", "c", "b", "a"]
    assert [a.entity_id for a in label_store.list_alerts(stream="events", since=T0 + HOUR)] == ["c", "b"]
    assert [a.entity_id for a in label_store.list_alerts(model_version="v2")] == ["b"]
    assert [a.entity_id for a in label_store.list_alerts(limit=2)] == ["d", "c"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"entity_id": ""}, "entity_id must not be empty"),
        ({"stream": "s" * 129}, "at most 128"),
        ({"score": float("nan")}, "score must be finite"),
        ({"threshold": "2"}, "threshold must be a number"),
        ({"interval_end": T0 - HOUR}, "before interval_start"),
        ({"sample": [1, -2]}, "non-negative"),
        ({"sample": []}, "empty"),
        ({"model_version": None}, "model_version is required"),
    ],
)
def test_invalid_alerts_are_refused_and_nothing_is_written(
    label_store: LabelStore, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(LabelError, match=message) as info:
        label_store.record_alerts([make_alert("ok"), make_alert("bad", **overrides)])
    assert str(info.value).startswith("alert 1: ")
    assert label_store.list_alerts() == []


# -- adding labels --------------------------------------------------------------------------------------
def test_fp_copies_sample_and_model_version_from_the_latest_alert(label_store: LabelStore) -> None:
    label_store.record_alerts(
        [make_alert("a", sample=[9, 9]), make_alert("a", start=T0 + HOUR, sample=[1, 2], model_version="v7")]
    )
    label = label_store.add_label(
        stream="events", entity_id="a", kind="FP", analyst="ana", note="backup job", incident="INC-1"
    )
    latest = label_store.get_alert("events", "a")
    assert latest is not None
    assert isinstance(label, Label)
    assert (label.kind, label.status, label.attempts) == ("FP", "pending", 0)
    assert (label.sample, label.model_version, label.alert_id) == ([1, 2], "v7", latest.id)
    assert (label.analyst, label.note, label.incident) == ("ana", "backup job", "INC-1")
    assert label.created_at.tzinfo is not None
    assert label_store.get_label(label.id) == label
    assert json.loads(json.dumps(label.to_dict()))["sample"] == [1, 2]


def test_fp_without_an_alert_is_refused(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a", stream="vectors")])
    with pytest.raises(LabelError, match="FP for 'a' on stream 'events' refused: no alert"):
        label_store.add_label(stream="events", entity_id="a", kind="FP")
    assert label_store.list_labels() == []


def test_fp_with_its_own_sample_is_refused(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a")])
    with pytest.raises(LabelError, match="takes its sample from the alert"):
        label_store.add_label(stream="events", entity_id="a", kind="FP", sample=[1])


def test_fn_with_its_own_sample(label_store: LabelStore) -> None:
    label = label_store.add_label(
        stream="vectors", entity_id="row-7", kind="FN", sample={"cpu": 0.97, "mem": 12.0}, model_version="v1"
    )
    assert (label.kind, label.sample, label.model_version, label.alert_id) == (
        "FN",
        {"cpu": 0.97, "mem": 12.0},
        "v1",
        None,
    )


def test_fn_sample_from_the_resolver(label_store: LabelStore) -> None:
    calls: list[tuple[str, str]] = []

    def resolver(stream: str, entity: str) -> object | None:
        calls.append((stream, entity))
        return np.array([4, 0, 2]) if entity == "known" else None

    label = label_store.add_label(stream="events", entity_id="known", kind="FN", sample_resolver=resolver)
    assert label.sample == [4, 0, 2] and calls == [("events", "known")]
    with pytest.raises(LabelError, match="FN for 'unknown' on stream 'events' needs a sample"):
        label_store.add_label(stream="events", entity_id="unknown", kind="FN", sample_resolver=resolver)
    with pytest.raises(LabelError, match="needs a sample"):
        label_store.add_label(stream="events", entity_id="nothing", kind="FN")
    assert [label.entity_id for label in label_store.list_labels()] == ["known"]


def test_fn_for_a_flagged_entity_is_refused(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a")])
    with pytest.raises(LabelError, match="FN for 'a' on stream 'events' refused: it was flagged"):
        label_store.add_label(stream="events", entity_id="a", kind="FN", sample=[1, 2])
    with pytest.raises(LabelError, match="it was flagged"):
        label_store.add_label(stream="events", entity_id="a", kind="FN", sample_resolver=lambda s, e: [1])
    assert label_store.list_labels() == []


def test_adding_the_same_label_twice_is_a_no_op(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a")])
    first = label_store.add_label(stream="events", entity_id="a", kind="FP", note="first")
    again = label_store.add_labels([LabelRequest(stream="events", entity_id=" a ", kind="FP", note="second")])
    assert again == [(first, False)]
    assert label_store.list_labels() == [first]


def test_conflicting_labels_are_refused_unless_superseded(label_store: LabelStore) -> None:
    fn = label_store.add_label(stream="events", entity_id="a", kind="FN", sample=[5, 5])
    # A newer model flags it after all; the analyst says it was normal.
    label_store.record_alerts([make_alert("a", start=T0 + HOUR)])
    with pytest.raises(
        LabelError, match=r"FP for 'a' on stream 'events' conflicts with label #\d+ \(FN, pending\)"
    ):
        label_store.add_label(stream="events", entity_id="a", kind="FP")
    assert label_store.list_labels() == [fn]

    fp = label_store.add_label(stream="events", entity_id="a", kind="FP", supersede=True)
    old = label_store.get_label(fn.id)
    assert (old.status, old.superseded_by) == ("superseded", fp.id)
    assert (fp.status, fp.kind) == ("pending", "FP")
    assert label_store.list_labels(status="pending") == [fp]
    assert label_store.pending_count("events") == 1


def test_a_claimed_label_cannot_be_superseded(label_store: LabelStore) -> None:
    label_store.add_label(stream="events", entity_id="a", kind="FN", sample=[5])
    label_store.claim_pending("events", "run-1")
    label_store.record_alerts([make_alert("a")])
    with pytest.raises(LabelError, match="claimed by run 'run-1'"):
        label_store.add_label(stream="events", entity_id="a", kind="FP", supersede=True)


def test_sql_looking_text_is_stored_verbatim(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert(SQL_TEXT, stream="s'; --")])
    note = "it said: \"'; DELETE FROM alerts WHERE '1'='1\"\nsecond line\t%s %(x)s"
    label = label_store.add_label(
        stream="s'; --",
        entity_id=SQL_TEXT,
        kind="FP",
        analyst="Robert'); DROP TABLE labels;--",
        note=note,
        incident="' OR 1=1 --",
    )
    (stored,) = label_store.list_labels(stream="s'; --", incident="' OR 1=1 --")
    assert stored == label
    assert (stored.entity_id, stored.analyst, stored.note) == (
        SQL_TEXT,
        "Robert'); DROP TABLE labels;--",
        note,
    )
    assert len(label_store.list_alerts()) == 1 and label_store.get_alert("s'; --", SQL_TEXT) is not None


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"kind": "XX"}, "kind must be FP or FN, got 'XX'"),
        ({"kind": "fp"}, "kind must be FP or FN"),
        ({"entity_id": "   "}, "entity must not be empty"),
        ({"entity_id": "e" * 257}, "entity is 257 characters long; at most 256"),
        ({"stream": ""}, "stream must not be empty"),
        ({"entity_id": "a\x00b"}, "control character"),
        ({"analyst": "x" * 129}, "analyst is 129 characters"),
        ({"note": "n" * 4001}, "note is 4001 characters"),
        ({"sample": [1, -1]}, r"sample\[1\] = -1: event keys must be non-negative"),
        ({"sample": [0.5, float("inf")]}, r"sample\[1\] must be finite"),
        ({"sample": {"cpu": float("nan")}}, "must be finite"),
        ({"sample": [True, 2]}, r"sample\[0\] is bool"),
        ({"sample": "1,2,3"}, "must be a list of event keys"),
        ({"sample": {"": 1.0}}, "feature names"),
        ({"sample": [object()]}, r"sample\[0\] is object"),
    ],
)
def test_invalid_labels_are_refused(
    label_store: LabelStore, request_fields: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"stream": "events", "entity_id": "e1", "kind": "FN", "sample": [1, 2]}
    fields.update(request_fields)
    with pytest.raises(LabelError, match=message):
        label_store.add_label(**fields)
    assert label_store.list_labels() == []


def test_a_batch_is_written_all_or_nothing(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a"), make_alert("b")])
    requests = [
        LabelRequest(stream="events", entity_id="a", kind="FP", source="sheet.csv line 2"),
        LabelRequest(stream="events", entity_id="b", kind="FP", source="sheet.csv line 3"),
        LabelRequest(stream="events", entity_id="c", kind="FP", source="sheet.csv line 4"),
    ]
    with pytest.raises(LabelError, match="^sheet.csv line 4: FP for 'c'"):
        label_store.add_labels(requests)
    assert label_store.list_labels() == []
    results = label_store.add_labels(requests[:2] + requests[:1])
    assert [created for _label, created in results] == [True, True, False]
    assert results[2][0] == results[0][0]


def test_the_database_allows_one_live_label_per_entity(label_store: LabelStore) -> None:
    label_store.add_label(stream="events", entity_id="a", kind="FN", sample=[1])
    row = {
        "stream": "events",
        "entity_id": "a",
        "kind": "FN",
        "sample": [1],
        "status": "pending",
        "attempts": 0,
        "created_at": T0,
    }
    with pytest.raises(sa.exc.IntegrityError), label_store._engine.begin() as conn:
        conn.execute(sa.insert(labels_table).values(**row))
    with label_store._engine.begin() as conn:  # a superseded one may exist beside it
        conn.execute(sa.insert(labels_table).values(**{**row, "status": "superseded"}))
    with pytest.raises(sa.exc.IntegrityError), label_store._engine.begin() as conn:
        conn.execute(sa.insert(labels_table).values(**{**row, "entity_id": "b", "kind": "XX"}))


# -- the unlearning life cycle --------------------------------------------------------------------------
def test_claim_is_limited_idempotent_and_exclusive(label_store: LabelStore) -> None:
    add_fp_labels(label_store, 5)
    assert label_store.pending_count("events") == 5

    first = label_store.claim_pending("events", "run-1", limit=2)
    assert [label.entity_id for label in first] == ["s0", "s1"]
    assert all(label.status == "claimed" and label.claimed_by == "run-1" for label in first)
    assert label_store.claim_pending("events", "run-1", limit=4) == first  # a retried task: same batch
    assert label_store.pending_count("events") == 3

    second = label_store.claim_pending("events", "run-2")
    assert [label.entity_id for label in second] == ["s2", "s3", "s4"]
    assert label_store.claim_pending("events", "run-3") == []
    assert label_store.pending_count("events") == 0
    assert label_store.claim_pending("other-stream", "run-4") == []


def test_claim_by_incident(label_store: LabelStore) -> None:
    add_fp_labels(label_store, 2, incident="INC-9")
    label_store.record_alerts([make_alert("x")])
    label_store.add_label(stream="events", entity_id="x", kind="FP")
    assert label_store.pending_count("events", incident="INC-9") == 2
    claimed = label_store.claim_pending("events", "run-1", incident="INC-9")
    assert {label.entity_id for label in claimed} == {"s0", "s1"}
    assert [label.entity_id for label in label_store.list_labels(status="pending")] == ["x"]


def test_rejection_returns_labels_to_pending_with_the_attempt(label_store: LabelStore) -> None:
    add_fp_labels(label_store, 3)
    label_store.claim_pending("events", "run-1")
    assert label_store.release("run-1", "forgetting gate: FP rate 0.04 > 0.02") == 3
    labels = label_store.list_labels()
    assert all(label.status == "pending" and label.claimed_by is None for label in labels)
    assert [label.attempts for label in labels] == [1, 1, 1]
    attempt = labels[0].last_attempt
    assert attempt is not None
    assert (attempt["run_id"], attempt["reason"]) == ("run-1", "forgetting gate: FP rate 0.04 > 0.02")
    assert datetime.fromisoformat(attempt["at"]).tzinfo is not None
    assert label_store.release("run-1", "again") == 0  # idempotent

    label_store.claim_pending("events", "run-2")
    label_store.release("run-2", "still failing")
    assert {label.attempts for label in label_store.list_labels()} == {2}


def test_promotion_marks_labels_consumed(label_store: LabelStore) -> None:
    add_fp_labels(label_store, 3)
    claimed = label_store.claim_pending("events", "run-1", limit=2)
    assert label_store.past_labels("events") == []
    assert label_store.mark_consumed("run-1", "sha-abc") == 2
    assert label_store.mark_consumed("run-1", "sha-abc") == 0
    past = label_store.past_labels("events")
    assert [label.id for label in past] == [label.id for label in claimed]
    assert all(label.status == "consumed" and label.consumed_by == "sha-abc" for label in past)
    assert all(label.consumed_at is not None for label in past)
    assert label_store.pending_count("events") == 1
    # The run's batch stays fixed after promotion; another version cannot take it over.
    assert [label.id for label in label_store.claim_pending("events", "run-1")] == [
        label.id for label in past
    ]
    with pytest.raises(LabelError, match="already consumed by version 'sha-abc'"):
        label_store.mark_consumed("run-1", "sha-other")
    assert label_store.release("run-1", "too late") == 0


def test_list_labels_filters(label_store: LabelStore) -> None:
    label_store.record_alerts([make_alert("a"), make_alert("b", stream="vectors")])
    a = label_store.add_label(stream="events", entity_id="a", kind="FP", incident="I1")
    b = label_store.add_label(stream="vectors", entity_id="b", kind="FP")
    c = label_store.add_label(stream="events", entity_id="c", kind="FN", sample=[1])
    label_store.claim_pending("vectors", "run-v")
    b = label_store.get_label(b.id)
    assert label_store.list_labels() == [a, b, c]
    assert label_store.list_labels(stream="events") == [a, c]
    assert label_store.list_labels(kind="FN") == [c]
    assert label_store.list_labels(incident="I1") == [a]
    assert [label.id for label in label_store.list_labels(status="claimed")] == [b.id]
    assert label_store.list_labels(since=a.created_at - timedelta(seconds=1), limit=1) == [a]
    assert label_store.list_labels(since=datetime.now(UTC) + HOUR) == []
    with pytest.raises(LabelError, match="status must be one of"):
        label_store.list_labels(status="done")
    with pytest.raises(NotFoundError):
        label_store.get_label(10_000)


# -- opening, migrations and races ----------------------------------------------------------------------
def test_reopening_keeps_data_and_the_schema_matches_the_models(
    label_store: LabelStore, label_db: Any
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    add_fp_labels(label_store, 2)
    with LabelStore(label_db.url, schema=label_db.schema) as again:
        assert len(again.list_labels()) == 2
    with label_store._engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "lifelong_labels_alembic_version"})
        assert (
            context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


@pytest.mark.postgres
def test_postgres_schema_from_the_url(pg_label_db: Any) -> None:
    with LabelStore(f"{pg_label_db.url}?schema={pg_label_db.schema}") as store:
        add_fp_labels(store, 1)
    engine = sa.create_engine(pg_label_db.url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names(schema=pg_label_db.schema))
    finally:
        engine.dispose()
    assert tables == {"alerts", "labels", "lifelong_labels_alembic_version"}


@pytest.mark.postgres
def test_postgres_claim_skips_rows_another_run_is_claiming(pg_label_store: LabelStore) -> None:
    add_fp_labels(pg_label_store, 4)
    first_two = [label.id for label in pg_label_store.list_labels()][:2]
    with pg_label_store._engine.connect() as other, other.begin():
        # Another run's claim transaction, caught between its SELECT ... FOR UPDATE and its commit.
        other.execute(
            sa.select(labels_table.c.id).where(labels_table.c.id.in_(first_two)).with_for_update()
        ).all()
        claimed = pg_label_store.claim_pending("events", "run-2")
        assert [label.entity_id for label in claimed] == ["s2", "s3"]  # skipped, not waited for


def test_unreachable_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot open the label store"):
        LabelStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")


def _run_two(target: Any, args: tuple[Any, ...]) -> list[tuple[str, int, Any]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, worker, barrier, queue)) for worker in (1, 2)]
    for proc in procs:
        proc.start()
    try:
        results = [queue.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    errors = [detail for status, _worker, detail in results if status != "ok"]
    assert not errors, "\n".join(errors)
    return results


@pytest.mark.timeout(180)
def test_two_processes_never_claim_the_same_label(label_store: LabelStore, label_db: Any) -> None:
    add_fp_labels(label_store, 40)
    results = _run_two(claim_until_empty, (label_db.url, label_db.schema, "events"))
    taken = {worker: [label_id for label_id, _run in pairs] for _status, worker, pairs in results}
    everything = {label.id for label in label_store.list_labels()}
    assert len(everything) == 40
    assert set(taken[1]) | set(taken[2]) == everything
    assert set(taken[1]) & set(taken[2]) == set()
    assert len(taken[1]) + len(taken[2]) == 40  # and no process saw a label twice
    claimed = {label.id: label.claimed_by for label in label_store.list_labels(status="claimed")}
    for _status, _worker, pairs in results:
        assert all(claimed[label_id] == run_id for label_id, run_id in pairs)


@pytest.mark.timeout(180)
def test_two_processes_open_a_fresh_database_at_once(label_db: Any) -> None:
    _run_two(open_store, (label_db.url, label_db.schema))
    with LabelStore(label_db.url, schema=label_db.schema) as store:
        assert store.list_labels() == []


def test_sqlite_store_waits_for_a_writer_before_switching_to_wal(tmp_path: Any) -> None:
    # SQLite answers a journal-mode change with "database is locked" at once (no busy handler) while another
    # connection holds the write (RESERVED) lock: the store must wait for it, not fail (CI saw this race
    # when two processes opened a fresh store together).
    import sqlite3
    import threading

    path = tmp_path / "labels.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE busy (x)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with LabelStore(f"sqlite:///{path}") as store:
            assert store.list_labels() == []
    finally:
        release.join()
        holder.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- no database needed ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "schema", "message"),
    [
        ("mysql://u@h/db", None, "must be sqlite:// or postgresql://"),
        ("sqlite:///x.db", "s1", "only supported on PostgreSQL"),
        ("postgresql+psycopg://u@h/db", "Bad-Name", "lower-case identifier"),
        ("postgresql+psycopg://u@h/db?schema=a", "b", "disagree"),
        ("not a url", None, "is not a SQLAlchemy URL"),
    ],
)
def test_bad_store_configuration_is_refused(url: str, schema: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LabelStore(url, schema=schema)


def test_validate_sample_normal_forms() -> None:
    assert validate_sample(np.array([1, 2, 3], dtype=np.int64)) == [1, 2, 3]
    assert validate_sample((1, 2.5)) == [1.0, 2.5]
    assert validate_sample({"a": np.float32(0.5), "b": "x", "c": 3}) == {"a": 0.5, "b": "x", "c": 3.0}
    with pytest.raises(LabelError, match="feature vector.s values must be given as floats"):
        validate_sample([-1, 2])


def test_from_settings_creates_the_sqlite_folder(tmp_path: Any) -> None:
    from lifelong.settings import Settings

    settings = Settings(home=tmp_path / "deep" / "home")
    with LabelStore.from_settings(settings) as store:
        assert store.list_labels() == []
    assert (tmp_path / "deep" / "home" / "labels.db").is_file()
