"""Global log positions that readers can follow without ever skipping a committed event.

SQLite admits one writer at a time (the store's writers BEGIN IMMEDIATE), so the next integers after
the current maximum are already in commit order.

PostgreSQL lets writers to different streams commit concurrently, and a plain sequence would
then let a reader see position 11 before a slower transaction commits position 10 — and skip it
forever. Instead a position is ``transaction id × 1,000,000 + index within the transaction``
(transaction ids are ``xid8``: 64-bit, never wrapping). A reader returns only events whose
transaction id is below the ``xmin`` of its own statement's snapshot: every such transaction has
finished, and any transaction still to commit has an id ≥ that ``xmin``, hence larger positions.
No table-wide lock is taken; the price is that positions are sparse, and a long-running
transaction elsewhere in the cluster delays (never breaks) what readers see.
"""

from __future__ import annotations

from sqlalchemy import Connection, Select, literal_column, text
from sqlalchemy.sql.elements import ColumnElement

from carbon.db import is_sqlite

MAX_EVENTS_PER_TRANSACTION = 999_999
_SCALE = MAX_EVENTS_PER_TRANSACTION + 1


# Read with the stream's row lock, so the writer learns its transaction id in the same round trip.
TRANSACTION_ID = "pg_current_xact_id()::text::bigint"


# SQLite: the last position written. PostgreSQL: the first position a commit still to come could take.
_LAST_SQLITE = text("SELECT coalesce(max(position), 0) FROM events")
_HORIZON_PG = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {_SCALE})"


def plan(conn: Connection, count: int, transaction_id: int | None = None) -> list[int]:
    """Positions for ``count`` events about to be written in this transaction."""
    if is_sqlite(conn):
        last = conn.execute(_LAST_SQLITE).scalar_one()
        return list(range(last + 1, last + count + 1))
    if transaction_id is None:
        transaction_id = conn.execute(text(f"SELECT {TRANSACTION_ID}")).scalar_one()
    return [transaction_id * _SCALE + i for i in range(1, count + 1)]


def visible_end(conn: Connection) -> int:
    """A position up to which every event that will ever be committed is already visible.

    Taken before a read in the same transaction, it holds for that read too: on SQLite the
    transaction reads one snapshot; on PostgreSQL the horizon only moves forward.
    """
    if is_sqlite(conn):
        return conn.execute(_LAST_SQLITE).scalar_one()
    return conn.execute(text(f"SELECT {_HORIZON_PG} - 1")).scalar_one()


def visible_only(conn: Connection, query: Select, position: ColumnElement) -> Select:
    """Restrict a global-log query to positions no future commit can precede."""
    if is_sqlite(conn):
        return query
    return query.where(position < literal_column(_HORIZON_PG))
