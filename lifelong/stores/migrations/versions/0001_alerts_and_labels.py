"""Alerts and labels.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision: a migration must not change when the model code does.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("entity_id", sa.String(256), nullable=False),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("interval_end", TS, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("sample", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("stream", "entity_id", "interval_start", name="uq_alerts_stream_entity_start"),
    )
    op.create_index("ix_alerts_stream_start", "alerts", ["stream", "interval_start"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("entity_id", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(2), nullable=False),
        sa.Column("sample", JSON, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
        sa.Column("analyst", sa.String(128), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("incident", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(250), nullable=True),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("consumed_by", sa.String(128), nullable=True),
        sa.Column("consumed_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_attempt", JSON, nullable=True),
        sa.Column("superseded_by", sa.Integer, sa.ForeignKey("labels.id"), nullable=True),
        sa.CheckConstraint("kind IN ('FP', 'FN')", name="ck_labels_kind"),
        sa.CheckConstraint(
            "status IN ('pending', 'claimed', 'consumed', 'superseded')", name="ck_labels_status"
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_labels_attempts"),
    )
    op.create_index("ix_labels_stream_status", "labels", ["stream", "status"])
    op.create_index("ix_labels_stream_entity", "labels", ["stream", "entity_id"])
    op.create_index("ix_labels_claimed_by", "labels", ["claimed_by"])
    # One live (not superseded) label per entity: no duplicates, no FP/FN conflict, even under races.
    live = sa.text("status <> 'superseded'")
    op.create_index(
        "uq_labels_active_entity",
        "labels",
        ["stream", "entity_id"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )


def downgrade() -> None:
    op.drop_table("labels")
    op.drop_table("alerts")
