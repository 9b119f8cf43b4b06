"""The platform's event store (shared by the account service and the tests of every backend)."""

from pathlib import Path

from sqlalchemy import Engine

from carbon.eventstore.hashing import GENESIS_HASH, event_hash
from carbon.eventstore.store import (
    MAX_EVENTS_PER_APPEND,
    AppendResult,
    ChainReport,
    EventStore,
    EventStoreError,
    IdempotencyKeyReused,
    LogPage,
    MAX_LOG_PAGE,
    MAX_PARTITIONS,
    NewEvent,
    Partition,
    RecordedEvent,
    StreamHead,
    WrongExpectedVersion,
)

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(engine: Engine) -> None:
    from carbon.migrate import upgrade

    upgrade(engine, MIGRATIONS)


__all__ = [
    "GENESIS_HASH",
    "MAX_EVENTS_PER_APPEND",
    "AppendResult",
    "ChainReport",
    "EventStore",
    "EventStoreError",
    "IdempotencyKeyReused",
    "LogPage",
    "MAX_LOG_PAGE",
    "MAX_PARTITIONS",
    "NewEvent",
    "Partition",
    "RecordedEvent",
    "StreamHead",
    "WrongExpectedVersion",
    "event_hash",
    "migrate",
]
