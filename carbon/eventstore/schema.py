"""Tables of the event store. The Alembic revisions under ``migrations/`` create exactly these."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, MetaData, String, Table, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB

from carbon.db import UTCDateTime

metadata = MetaData()

JSONDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-assigns INTEGER PRIMARY KEY; PostgreSQL positions are computed (see positions.py).
Position = BigInteger().with_variant(Integer(), "sqlite")

streams = Table(
    "streams",
    metadata,
    Column("stream_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("stream_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("data", JSONDocument, nullable=False),
    Column("metadata", JSONDocument, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The database, not the application, enforces one event per stream version.
    UniqueConstraint("stream_id", "stream_version", name="uq_events_stream_version"),
    sqlite_autoincrement=True,
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("stream_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("result", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Written in the same transaction as the events; the relay marks rows once Kafka acknowledged them.
outbox = Table(
    "outbox",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("stream_id", String(64), nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    Index("ix_outbox_pending", "position", postgresql_where=text("published_at IS NULL"),
          sqlite_where=text("published_at IS NULL")),
)
