"""Engines for the platform's databases: SQLite (embedded default) and PostgreSQL.

Every service builds its engine here so that both backends get the same treatment:
SQLite in WAL mode with writers taking the write lock at BEGIN (no upgrade deadlocks),
PostgreSQL with a connection pool sized for a small service.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import orjson
from sqlalchemy import Connection, DateTime, Engine, Table, bindparam, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

# The largest values the integer columns hold on both backends: stream versions are INTEGER, positions
# and cursors BIGINT. Inputs are bounded by them so that a larger number is refused, not a driver error.
MAX_VERSION = 2**31 - 1
MAX_POSITION = 2**63 - 1

# Execution option that asks SQLite for BEGIN IMMEDIATE on the next transaction.
_SQLITE_WRITE = "carbon_sqlite_write"


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """Create an engine for a service database URL (``sqlite:///…`` or ``postgresql+psycopg://…``)."""
    parsed = make_url(url)
    # hide_parameters: SQL logging (any root logger at INFO) and error messages must not carry the
    # values bound into statements — webhook secrets, enterprises' data.
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True,
                               json_deserializer=orjson.loads)
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                             hide_parameters=True, json_deserializer=orjson.loads)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql+psycopg://")


def make_async_engine(url: str | URL, *, pool_size: int = 4) -> AsyncEngine:
    """The same PostgreSQL database through psycopg's asyncio connection, for work done on an event loop."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"an asyncio engine is made for PostgreSQL only, not {parsed.drivername!r}")
    return create_async_engine(parsed.set(drivername="postgresql+psycopg"), pool_size=pool_size,
                               max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True,
                               json_deserializer=orjson.loads)


def _stream_hash(stream_id: str | None) -> int | None:
    return None if stream_id is None else zlib.crc32(stream_id.encode()) & 0x7FFFFFFF


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - exercised by every test
        # Take transaction control away from pysqlite so that BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # SQLite has no hash function: the event store's partitions of the log use this one.
        dbapi_connection.create_function("carbon_stream_hash", 1, _stream_hash, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers lock at BEGIN so two writers never both read and then both try to upgrade.
        if conn.get_execution_options().get(_SQLITE_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-write transaction; on SQLite it holds the database write lock from its first statement."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{_SQLITE_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        with conn.begin():
            yield conn


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the platform stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is UTC:  # PostgreSQL's, in a UTC session: as it is (read per event on replay)
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def ping(engine: Engine) -> None:
    """Raise unless the database answers (a service's readiness)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def upsert(conn: Connection, table: Table, rows: list[dict], keys: Sequence[str]) -> None:
    """INSERT … ON CONFLICT (keys) DO UPDATE on both backends, for any number of rows."""
    insert_many(conn, table, rows, upsert_on=keys)


def insert_many(conn: Connection, table: Table, rows: list[dict], *, upsert_on: Sequence[str] = ()) -> None:
    """Insert many rows (all with the same keys) in one go; with ``upsert_on``, a row whose key exists
    replaces that row's other columns. The rows' keys must be distinct."""
    if not rows:
        return
    columns = tuple(rows[0])
    if is_sqlite(conn):
        # sqlite3's executemany runs the one prepared statement row after row, in C; the statement's
        # text is built once per table and columns, so nothing is compiled per call either.
        text, processors = _sqlite_insert(conn.dialect, table, columns, tuple(upsert_on))
        conn.exec_driver_sql(text, [tuple(convert(row[c]) if convert else row[c] for c, convert in zip(columns, processors))
                                    for row in rows])
        return
    # PostgreSQL: one statement whatever the number of rows, each column sent as one array and
    # unnested by the server — the statement's text never changes, so nothing is parsed or compiled
    # per batch (multi-row VALUES would be, and a pipelined statement per row costs a round of
    # work per row on both sides).
    text, processors = _unnest_insert(conn.dialect, table, columns, tuple(upsert_on))
    arrays = tuple([convert(row[c]) for row in rows] if convert else [row[c] for row in rows]
                   for c, convert in zip(columns, processors))
    conn.exec_driver_sql(text, arrays)


@lru_cache(maxsize=256)
def _sqlite_insert(dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]):
    from sqlalchemy.dialects.sqlite import insert

    statement = insert(table).values({c: bindparam(c) for c in columns})
    if keys:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_={c: statement.excluded[c] for c in columns if c not in keys})
    compiled = statement.compile(dialect=dialect)
    assert compiled.positiontup == list(columns), compiled.positiontup  # one ? per column, in order
    return str(compiled), tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns)


@lru_cache(maxsize=256)
def _unnest_insert(dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]):
    preparer = dialect.identifier_preparer
    types = [table.c[c].type for c in columns]
    # %b: psycopg sends the arrays in binary, so no element is quoted or escaped as text.
    arrays = ", ".join(f"%b::{t.compile(dialect=dialect)}[]" for t in types)
    names = ", ".join(preparer.quote(c) for c in columns)
    text = f"INSERT INTO {preparer.format_table(table)} ({names}) SELECT * FROM unnest({arrays})"
    if keys:
        updates = ", ".join(f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}" for c in columns if c not in keys)
        target = ", ".join(preparer.quote(k) for k in keys)
        text += f" ON CONFLICT ({target}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
    return text, tuple(t.bind_processor(dialect) for t in types)
