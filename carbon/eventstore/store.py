"""The append-only event store: one stream per enterprise, a hash chain per stream, a global log.

Writers lock only their own stream's row, so appends to different streams run concurrently on
PostgreSQL. The global log is still safe to follow: see ``positions.py`` for how positions are
chosen so that a reader never skips an event that commits later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from sqlalchemy import Connection, Engine, Integer, Text, cast, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from carbon import telemetry
from carbon.db import is_sqlite, read_transaction, write_transaction
from carbon.eventstore import positions
from carbon.eventstore.hashing import GENESIS_HASH, event_hash, format_time
from carbon.eventstore.schema import events, idempotency_keys, outbox, streams

MAX_EVENTS_PER_APPEND = positions.MAX_EVENTS_PER_TRANSACTION
# Two-key advisory locks (class, hash of the stream id): apart from the single-key ones of migrations and the relay.
STREAM_LOCK_KEY = 7203
_STREAM_LOCK = text("SELECT pg_advisory_xact_lock(:k, hashtext(:s))")
# SQLite already holds the database write lock (BEGIN IMMEDIATE); PostgreSQL locks the stream's row.
_HEAD_SQLITE = text("SELECT version, head_hash FROM streams WHERE stream_id = :s")
_HEAD_PG = text(
    f"SELECT version, head_hash, {positions.TRANSACTION_ID} AS transaction_id FROM streams WHERE stream_id = :s FOR UPDATE"
)
_WRITE_PG = text("""
WITH batch AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS b(
        position bigint, event_id text, stream_version int, type text, schema_version int,
        data jsonb, metadata jsonb, prev_hash text, hash text)
), written AS (
    INSERT INTO events (position, event_id, stream_id, stream_version, type, schema_version, recorded_at,
                        data, metadata, prev_hash, hash)
    SELECT position, event_id, :s, stream_version, type, schema_version, :at, data, metadata, prev_hash, hash
    FROM batch
), queued AS (
    INSERT INTO outbox (position, stream_id) SELECT position, :s FROM batch
)
UPDATE streams SET version = :version, head_hash = :head WHERE stream_id = :s
""")


MAX_PARTITIONS = 64
# The most events one page of the global log holds: a rebuild reads the whole log, and each page costs
# a request, a transaction and a statement whatever its length.
MAX_LOG_PAGE = 5000


@dataclass(frozen=True, slots=True)
class Partition:
    """Share ``index`` of the global log cut into ``count`` disjoint shares by stream (by a hash of
    the stream id), so each share holds whole streams and can be projected on its own."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition must be between 0 and {self.count - 1}, got {self.index}")

    def holds(self) -> Any:
        """The SQL condition: the event's stream falls in this share."""
        return _StreamHash(events.c.stream_id) % self.count == self.index


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of the global log and the position to read after next.

    ``next`` is the last event's position, except for a share of the log whose page is not full:
    then everything visible was scanned, and ``next`` moves on to the end of what is visible, so a
    reader of a share knows how far the whole log has been read for it.
    """

    envelopes: list[dict[str, Any]]
    next: int | None


class EventStoreError(Exception):
    """Base of the store's own errors."""


class WrongExpectedVersion(EventStoreError):
    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, not the expected {expected}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class IdempotencyKeyReused(EventStoreError):
    """The key was first used with a different request: replaying it would not be a retry."""

    def __init__(self, stream_id: str, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request on {stream_id!r}")
        self.stream_id, self.key = stream_id, key


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    event_id: uuid.UUID
    type: str
    schema_version: int
    stream_id: str
    stream_version: int
    position: int
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    prev_hash: str
    hash: str

    def envelope(self) -> dict[str, Any]:
        """The event as SPEC §7 publishes it (JSON-ready)."""
        return {
            "event_id": str(self.event_id),
            "type": self.type,
            "schema_version": self.schema_version,
            "enterprise_id": self.stream_id,
            "stream_version": self.stream_version,
            "position": self.position,
            "recorded_at": format_time(self.recorded_at),
            "data": self.data,
            "metadata": self.metadata,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class AppendResult:
    first_version: int
    last_version: int
    positions: list[int]
    replayed: bool = False  # True when an idempotent retry returned the first result

    def as_dict(self) -> dict[str, Any]:
        return {"first_version": self.first_version, "last_version": self.last_version, "positions": self.positions}


@dataclass(frozen=True, slots=True)
class StreamHead:
    stream_id: str
    version: int  # 0 when the stream does not exist yet
    head_hash: str
    transaction_id: int | None = None  # PostgreSQL: the writer's own transaction, read with the lock


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    events_checked: int
    head_hash: str | None
    first_bad_version: int | None


# Called under the stream's lock before anything is written: raise to refuse the append.
# It receives the stream's head and a loader for the stream's history from a version (read only if asked).
AppendCheck = Callable[[StreamHead, Callable[..., list[RecordedEvent]]], None]


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- writing -------------------------------------------------------------------------

    def append_events(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        check: AppendCheck | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> AppendResult:
        """Append events to one stream atomically.

        ``expected_version`` is the stream's current version (0: the stream must not exist);
        ``None`` appends at the end without a check. A repeated ``idempotency_key`` with the same
        ``request_hash`` returns the first result and writes nothing.
        """
        if not new_events:
            raise ValueError("append_events needs at least one event")
        if len(new_events) > MAX_EVENTS_PER_APPEND:
            raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events per append")
        result = self._append(stream_id, new_events, expected_version, idempotency_key, request_hash, check, now)
        if not result.replayed:
            telemetry.events_appended.add(len(result.positions))
        return result

    def _append(self, stream_id, new_events, expected_version, idempotency_key, request_hash, check, now) -> AppendResult:
        with write_transaction(self.engine) as conn:
            head = self._lock_stream(conn, stream_id)
            if idempotency_key is not None:
                first = self._idempotent_result(conn, stream_id, idempotency_key, request_hash or "")
                if first is not None:
                    return first
            if expected_version is not None and expected_version != head.version:
                raise WrongExpectedVersion(stream_id, expected_version, head.version)
            if check is not None:
                check(head, lambda from_version=1: self._read_stream(conn, stream_id, from_version, None))
            result = self._write(conn, head, new_events, now())
            if idempotency_key is not None:
                conn.execute(
                    idempotency_keys.insert().values(
                        stream_id=stream_id,
                        key=idempotency_key,
                        request_hash=request_hash or "",
                        result=result.as_dict(),
                        created_at=now(),
                    )
                )
            return result

    def _lock_stream(self, conn: Connection, stream_id: str) -> StreamHead:
        sqlite = is_sqlite(conn)
        if not sqlite:
            # Wait for the stream's previous writer before this transaction gets an id: an id older
            # than the previous writer's would put this append's positions before its, out of order.
            conn.execute(_STREAM_LOCK, {"k": STREAM_LOCK_KEY, "s": stream_id})
        row = conn.execute(_HEAD_SQLITE if sqlite else _HEAD_PG, {"s": stream_id}).first()
        if row is None:
            # A new stream: create its row (a no-op if a writer of a colliding lock key just did).
            insert = sqlite_insert if sqlite else pg_insert
            conn.execute(
                insert(streams)
                .values(stream_id=stream_id, version=0, head_hash=GENESIS_HASH, created_at=datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=["stream_id"])
            )
            row = conn.execute(_HEAD_SQLITE if sqlite else _HEAD_PG, {"s": stream_id}).one()
        return StreamHead(stream_id, row.version, row.head_hash, None if sqlite else row.transaction_id)

    def _idempotent_result(self, conn: Connection, stream_id: str, key: str, request_hash: str) -> AppendResult | None:
        row = conn.execute(
            select(idempotency_keys.c.request_hash, idempotency_keys.c.result).where(
                idempotency_keys.c.stream_id == stream_id, idempotency_keys.c.key == key
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(stream_id, key)
        return AppendResult(**row.result, replayed=True)

    def _write(self, conn: Connection, head: StreamHead, new_events: Sequence[NewEvent], at: datetime) -> AppendResult:
        planned = positions.plan(conn, len(new_events), head.transaction_id)
        prev_hash, version, rows = head.head_hash, head.version, []
        for index, new in enumerate(new_events):
            version += 1
            envelope = {
                "event_id": str(new.event_id),
                "type": new.type,
                "schema_version": new.schema_version,
                "enterprise_id": head.stream_id,
                "stream_version": version,
                "recorded_at": format_time(at),
                "data": new.data,
                "metadata": new.metadata,
                "prev_hash": prev_hash,
            }
            event_hash_ = event_hash(envelope)
            rows.append({
                "position": planned[index],
                "event_id": str(new.event_id),
                "stream_id": head.stream_id,
                "stream_version": version,
                "type": new.type,
                "schema_version": new.schema_version,
                "recorded_at": at,
                "data": new.data,
                "metadata": new.metadata,
                "prev_hash": prev_hash,
                "hash": event_hash_,
            })
            prev_hash = event_hash_
        if is_sqlite(conn):
            conn.execute(events.insert(), rows)
            conn.execute(outbox.insert(), [{"position": p, "stream_id": head.stream_id} for p in planned])
            conn.execute(
                update(streams).where(streams.c.stream_id == head.stream_id).values(version=version, head_hash=prev_hash)
            )
        else:
            # One round trip for events, outbox rows and the stream head: the write is CPU-bound in
            # Python, and each statement through the driver costs more than the database's work.
            batch = [{k: r[k] for k in ("position", "event_id", "stream_version", "type", "schema_version", "data",
                                        "metadata", "prev_hash", "hash")} for r in rows]
            conn.execute(_WRITE_PG, {"rows": orjson.dumps(batch).decode(), "s": head.stream_id, "at": at,
                                     "version": version, "head": prev_hash})
        return AppendResult(head.version + 1, version, planned)

    # ---- reading -------------------------------------------------------------------------

    def stream_head(self, stream_id: str) -> StreamHead | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(streams.c.version, streams.c.head_hash).where(streams.c.stream_id == stream_id)
            ).first()
        return None if row is None else StreamHead(stream_id, row.version, row.head_hash)

    def read_stream(self, stream_id: str, from_version: int = 1, limit: int | None = None) -> list[RecordedEvent]:
        with read_transaction(self.engine) as conn:
            return self._read_stream(conn, stream_id, from_version, limit)

    def _read_stream(self, conn: Connection, stream_id: str, from_version: int, limit: int | None) -> list[RecordedEvent]:
        query = (
            select(events)
            .where(events.c.stream_id == stream_id, events.c.stream_version >= from_version)
            .order_by(events.c.stream_version)
        )
        if limit is not None:
            query = query.limit(limit)
        return [recorded_from_row(row) for row in conn.execute(query)]

    def read_all(self, after: int | None = None, limit: int = 1000) -> list[RecordedEvent]:
        """The global log in position order, from just after ``after``, never skipping a later commit."""
        with read_transaction(self.engine) as conn:
            return [recorded_from_row(row) for row in self._log_page(conn, (events,), after, limit)]

    def read_all_envelopes(self, after: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """``read_all`` as the envelopes SPEC §7 publishes."""
        return self.read_log_page(after, limit).envelopes

    def read_log_page(self, after: int | None = None, limit: int = 1000, partition: Partition | None = None) -> LogPage:
        """A page of envelopes of the global log, or of one ``partition`` of it, and where to go on from."""
        page, next_ = self._read_page(after, limit, partition)
        return LogPage(orjson.loads(page) if isinstance(page, str) else page, next_)

    def read_log_json(self, after: int | None = None, limit: int = 1000,
                      partition: Partition | None = None) -> tuple[bytes | str, int | None]:
        """``read_log_page`` as the JSON array of its envelopes (to serve as it is) and where to go on from."""
        page, next_ = self._read_page(after, limit, partition)
        return (page if isinstance(page, str) else orjson.dumps(page)), next_

    def _read_page(self, after: int | None, limit: int,
                   partition: Partition | None) -> tuple[list[dict[str, Any]] | str, int | None]:
        """The page (envelopes, or on PostgreSQL their JSON array as the database wrote it) and the position
        to go on from."""
        with read_transaction(self.engine) as conn:
            # Read before the page: once the page is known short, all of the log up to here was scanned.
            end = positions.visible_end(conn) if partition is not None else None
            page: list[dict[str, Any]] | str
            if is_sqlite(conn):
                page = [envelope_from_row(row) for row in self._log_page(conn, _ENVELOPE_COLUMNS, after, limit, partition)]
                count, last = len(page), page[-1]["position"] if page else None
            else:
                # A page is a short range of the position index. The planner cannot tell how many rows a
                # partition's filter keeps and starts parallel workers, which cost more than they save.
                conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
                query = positions.visible_only(conn, self._log_query(_ENVELOPE_JSON_COLUMNS, after, limit, partition),
                                               events.c.position)
                page, count, last = conn.execute(_envelopes_json(query.subquery())).one()
        if count == 0:
            last = after
        if end is None or count == limit:
            return page, last
        return page, max(end, last or 0, after or 0)

    @staticmethod
    def _log_query(columns: Sequence[Any], after: int | None, limit: int, partition: Partition | None = None) -> Any:
        query = select(*columns).order_by(events.c.position).limit(limit)
        if after is not None:
            query = query.where(events.c.position > after)
        if partition is not None:
            query = query.where(partition.holds())
        return query

    @classmethod
    def _log_page(cls, conn: Connection, columns: Sequence[Any], after: int | None, limit: int,
                  partition: Partition | None = None) -> Sequence[Any]:
        query = cls._log_query(columns, after, limit, partition)
        return conn.execute(positions.visible_only(conn, query, events.c.position)).all()

    def stream_ids(self, after: str | None = None, limit: int = 1000) -> list[str]:
        with read_transaction(self.engine) as conn:
            query = select(streams.c.stream_id).where(streams.c.version > 0).order_by(streams.c.stream_id).limit(limit)
            if after is not None:
                query = query.where(streams.c.stream_id > after)
            return list(conn.scalars(query))

    # ---- tamper evidence -----------------------------------------------------------------

    def verify_chain(self, stream_id: str) -> ChainReport:
        """Recompute every hash of a stream; report the first version whose record does not hold."""
        checked, expected_prev, head = 0, GENESIS_HASH, self.stream_head(stream_id)
        for event in self.iter_stream(stream_id):
            checked += 1
            envelope = event.envelope()
            if (
                event.stream_version != checked
                or event.prev_hash != expected_prev
                or event_hash(envelope) != event.hash
            ):
                return ChainReport(False, checked, expected_prev if checked > 1 else None, checked)
            expected_prev = event.hash
        if head is not None and (head.version != checked or head.head_hash != expected_prev):
            # The stream row disagrees with its events: a row was deleted or appended around the store.
            return ChainReport(False, checked, expected_prev, min(head.version, checked) + 1)
        return ChainReport(True, checked, expected_prev if checked else None, None)

    def iter_stream(self, stream_id: str, page: int = 500):
        version = 1
        while True:
            batch = self.read_stream(stream_id, version, page)
            yield from batch
            if len(batch) < page:
                return
            version = batch[-1].stream_version + 1


class _StreamHash(FunctionElement):
    """A non-negative hash of a stream id: PostgreSQL's ``hashtext``; on SQLite, a function registered on
    every connection (``carbon.db``). Within one database it is the same for every reader."""

    type = Integer()
    inherit_cache = True


@compiles(_StreamHash)
def _stream_hash_sqlite(element: _StreamHash, compiler: Any, **kw: Any) -> str:
    return f"carbon_stream_hash({compiler.process(element.clauses, **kw)})"


@compiles(_StreamHash, "postgresql")
def _stream_hash_pg(element: _StreamHash, compiler: Any, **kw: Any) -> str:
    return f"(hashtext({compiler.process(element.clauses, **kw)}) & 2147483647)"


def _envelopes_json(page: Any) -> Any:
    """PostgreSQL: a page of ``_ENVELOPE_JSON_COLUMNS`` as the JSON array of its envelopes, with its length and
    last position. Building the documents in the database costs it less than taking rows apart, converting
    and reassembling them costs Python."""
    array = func.json_agg(aggregate_order_by(page.table_valued(), page.c.position))
    return select(cast(func.coalesce(array, literal_column("'[]'::json")), Text), func.count(), func.max(page.c.position))


_RFC3339_MICROSECONDS = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


# The envelope's keys in their order; the time as ``format_time`` writes it.
_ENVELOPE_JSON_COLUMNS = (
    events.c.event_id, events.c.type, events.c.schema_version, events.c.stream_id.label("enterprise_id"),
    events.c.stream_version, events.c.position,
    func.to_char(func.timezone("UTC", events.c.recorded_at), _RFC3339_MICROSECONDS).label("recorded_at"),
    events.c.data, events.c.metadata, events.c.prev_hash, events.c.hash)

_ENVELOPE_COLUMNS = (events.c.event_id, events.c.type, events.c.schema_version, events.c.stream_id,
                     events.c.stream_version, events.c.position, events.c.recorded_at, events.c.data,
                     events.c.metadata, events.c.prev_hash, events.c.hash)


def envelope_from_row(row: Any) -> dict[str, Any]:
    """A row of ``_ENVELOPE_COLUMNS`` as its envelope: the same dict as ``RecordedEvent.envelope()``."""
    (event_id, type_, schema_version, stream_id, stream_version, position, recorded_at, data, metadata, prev_hash,
     hash_) = row
    # event_id is stored in its canonical form (str of a UUID): no round trip through uuid.UUID.
    return {"event_id": event_id, "type": type_, "schema_version": schema_version,
            "enterprise_id": stream_id, "stream_version": stream_version, "position": position,
            "recorded_at": format_time(recorded_at), "data": data, "metadata": metadata, "prev_hash": prev_hash,
            "hash": hash_}


def recorded_from_row(result_row: Any) -> RecordedEvent:
    row = result_row._mapping
    return RecordedEvent(
        event_id=uuid.UUID(row["event_id"]),
        type=row["type"],
        schema_version=row["schema_version"],
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        position=row["position"],
        recorded_at=row["recorded_at"],
        data=row["data"],
        metadata=row["metadata"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
