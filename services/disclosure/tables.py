"""Tables of the disclosure service. The Alembic revisions under ``migrations/`` create exactly these.

Two kinds of state live here:

- the projection (``events``, ``enterprises`` and the shared ``consents``): rebuilt by replay;
- the service's own records (``subscriptions``, ``deliveries``): what partners asked for and what
  was sent to them. Replay never touches them; re-applied events find their delivery already queued.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from carbon.db import UTCDateTime

metadata = MetaData()

JSONDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite auto-assigns only INTEGER PRIMARY KEY.
Sequence = BigInteger().with_variant(Integer(), "sqlite")

# Every event, in the order the projection applied it. ``seq`` is the pull-feed cursor: the projection
# is the only writer, one transaction at a time, so ``seq`` grows in commit order on both backends,
# whatever order the transport hands events over across enterprises.
events = Table(
    "disclosure_events",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("enterprise_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("year", Integer, nullable=True),  # the calendar year of data.period, when the event has one
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("envelope", JSONDocument, nullable=False),
    UniqueConstraint("enterprise_id", "stream_version", name="uq_disclosure_events_stream_version"),
    Index("ix_disclosure_events_enterprise_type", "enterprise_id", "type"),
    sqlite_autoincrement=True,
)

enterprises = Table(
    "disclosure_enterprises",
    metadata,
    Column("enterprise_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("industry", String(8), nullable=False),
    Column("region", String(6), nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscription_id", String(36), primary_key=True),
    Column("partner", String(128), nullable=False, index=True),
    Column("callback_url", String(2048), nullable=False),
    Column("event_types", JSONDocument, nullable=False),  # list of event type names
    Column("enterprise_ids", JSONDocument, nullable=True),  # null: every consenting enterprise
    Column("secret", String(128), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
)

# One row per (subscription, event): the queue, the attempt record and the dead letters at once.
# status: pending → delivered | dead | cancelled; a dead letter goes back to pending when replayed.
deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), nullable=False, unique=True),
    Column("subscription_id", String(36), nullable=False),
    Column("enterprise_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("cancelled_reason", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_event"),
    Index("ix_deliveries_queue", "subscription_id", "status", "enterprise_id", "stream_version"),
    Index("ix_deliveries_status", "status", "next_attempt_at"),
    sqlite_autoincrement=True,
)
