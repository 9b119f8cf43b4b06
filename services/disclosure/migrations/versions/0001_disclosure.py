"""Disclosure: projection checkpoints, consents, events per enterprise, subscriptions and deliveries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from carbon.db import UTCDateTime
from carbon.consent_projection import create_consent_table
from carbon.projection import create_checkpoint_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")
Sequence = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    create_checkpoint_tables(op)
    create_consent_table(op)
    op.create_table(
        "disclosure_events",
        sa.Column("seq", Sequence, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("year", sa.Integer, nullable=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("envelope", JSONDocument, nullable=False),
        sa.UniqueConstraint("enterprise_id", "stream_version", name="uq_disclosure_events_stream_version"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_disclosure_events_enterprise_type", "disclosure_events", ["enterprise_id", "type"])
    op.create_table(
        "disclosure_enterprises",
        sa.Column("enterprise_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("industry", sa.String(8), nullable=False),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("registered_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(36), primary_key=True),
        sa.Column("partner", sa.String(128), nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=False),
        sa.Column("event_types", JSONDocument, nullable=False),
        sa.Column("enterprise_ids", JSONDocument, nullable=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("deleted_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_subscriptions_partner", "subscriptions", ["partner"])
    op.create_table(
        "deliveries",
        sa.Column("seq", Sequence, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(36), nullable=False, unique=True),
        sa.Column("subscription_id", sa.String(36), nullable=False),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("last_attempt_at", UTCDateTime, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
        sa.Column("cancelled_reason", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_event"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_deliveries_queue", "deliveries", ["subscription_id", "status", "enterprise_id", "stream_version"])
    op.create_index("ix_deliveries_status", "deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    for table in ("deliveries", "subscriptions", "disclosure_enterprises", "disclosure_events", "consents",
                  "projection_heads", "projection_stream_checkpoints"):
        op.drop_table(table)
