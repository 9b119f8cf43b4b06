"""Group commit: the durable records of many concurrent requests written by one transaction and one commit.

Some reads must leave a record before they answer (a rating is a decision kept byte for byte, and a
third party's read is logged for the enterprise). Done one request at a time, each answer pays a
transaction of its own and a commit, which on PostgreSQL waits for the WAL to reach the disk and on
SQLite serialises every request on the write lock, and each holds a thread-pool thread meanwhile.

Here the requests of an event loop queue their units of work; a batch of them is worked in a
single write transaction, all their rows inserted with one statement per table and committed once,
and only then are the waiting requests released, each with its own result. While a batch is being
committed the next one gathers, so under load batches grow by themselves and a lone request goes at
once. The commit is still made before any answer leaves; it is only shared. A batch is worked on a
writer thread, on the event loop's own thread (SQLite: its commit is quick), or on the loop through
an asyncio driver that awaits each statement and the commit (PostgreSQL).

A unit of work reads what it needs through the connection it is given and returns ``Staged``: its
result and the rows to insert. It must not write itself, so that a unit refused on its own (a 403,
a 404, a bug) leaves nothing behind and does not disturb the others. A database error, or a
failed insert or commit, fails the whole batch with ``Unavailable`` (a 503): nothing of it is
stored, and no request is answered with a record that does not exist. An optional ``read_ahead``
reads, for a whole batch at once, what its units would each read (one statement instead of one per
request), and leaves it on them; it must not write either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon.db import insert_many, write_transaction
from carbon.errors import Unavailable

log = logging.getLogger("carbon.group_commit")

T = TypeVar("T")

UNRECORDED = "the answer could not be recorded, so none was given; try again"


@dataclass(frozen=True, slots=True)
class Staged(Generic[T]):
    """What a unit of work decided: its result, and the rows that must be stored before it is given."""

    result: T
    rows: Sequence[tuple[Table, dict[str, Any]]] = ()


Work = Callable[[Connection], Staged[T]]
_Waiter = tuple[Work[Any], asyncio.Future]


def insert_staged(conn: Connection, staged: Sequence[Staged[Any]]) -> None:
    """Every staged row, one statement per table (tables in the order first staged)."""
    by_table: dict[Table, list[dict[str, Any]]] = {}
    for unit in staged:
        for table, row in unit.rows:
            by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        insert_many(conn, table, rows)


class GroupCommit:
    """Commits the units of work of concurrent requests in batches (see the module's docstring)."""

    def __init__(self, engine: Engine, name: str, *, max_batch: int = 256, gather_s: float = 0.0,
                 read_ahead: Callable[[Connection, list[Work[Any]]], None] | None = None,
                 on_loop: bool = False, async_engine: AsyncEngine | None = None) -> None:
        self.engine, self.name, self.max_batch, self.read_ahead = engine, name, max_batch, read_ahead
        # ``async_engine`` (the same database through an asyncio driver): batches are worked and
        # committed on the event loop's thread too, but each statement and the commit (PostgreSQL's
        # waits for its WAL flush) are awaited, so the loop goes on taking requests meanwhile. No
        # thread hand-off, and no second thread contending with the loop for the interpreter.
        self.async_engine = async_engine
        # ``on_loop``: batches are committed on the event loop's own thread, which waits meanwhile. For
        # a database whose commit does not wait for a disk flush (SQLite in WAL mode with
        # synchronous=NORMAL: a fraction of a millisecond) the hand-off to a writer thread and back
        # costs more than the batch. Requests arriving meanwhile wait in the sockets, then gather.
        self.on_loop = on_loop
        # How long the first request after a quiet spell waits for others to share its commit (as
        # PostgreSQL's commit_delay): under moderate load, batches of several instead of one each.
        self.gather_s = gather_s
        # One writer thread: batches are committed one after the other, never side by side.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"group-commit-{name}")
        # Per event loop, the requests waiting for the next batch; a loop is a key while it has a
        # batch gathering or in flight. Only the loop's own thread touches its entry.
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        self._closed = False

    # ---- callers ----------------------------------------------------------------------------------

    async def submit(self, work: Work[T]) -> T:
        """Run ``work`` in the next batch; its result once that batch is committed."""
        if self._closed:
            raise Unavailable(f"the {self.name} service is stopping")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is not None:  # goes with the next batch, sent when the one in flight is committed
            waiting.append((work, future))
        elif self.gather_s > 0 or self.on_loop or self.async_engine is not None:
            # Nothing in flight: a batch starts gathering, sent shortly (on the loop, at least the
            # requests already ready to run join it: one turn of the loop).
            self._waiting[loop] = [(work, future)]
            loop.call_later(self.gather_s, self._send_waiting, loop)
        else:  # nothing in flight: a batch of its own, sent at once
            self._waiting[loop] = []
            self._send(loop, [(work, future)])
        return await future

    def run(self, work: Work[T]) -> T:
        """For callers without an event loop: ``work`` alone, in a transaction of its own, on this thread."""
        try:
            with write_transaction(self.engine) as conn:
                staged = work(conn)
                insert_staged(conn, [staged])
        except DBAPIError as exc:
            raise Unavailable(UNRECORDED) from exc
        return staged.result

    async def aclose(self, timeout: float = 30.0) -> None:
        """Refuse new work, let the batches in flight and waiting be committed, then stop the writer."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._writer.shutdown(wait=True)

    # ---- on the event loop ------------------------------------------------------------------------

    def _send_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting[loop]
        batch, self._waiting[loop] = waiting[: self.max_batch], waiting[self.max_batch :]
        self._send(loop, batch)

    def _send(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiter]) -> None:
        works, cancelled = [work for work, _ in batch], [future.cancelled for _, future in batch]
        if self.async_engine is not None:
            committed = asyncio.ensure_future(self._commit_async(self.async_engine, works, cancelled))
        elif self.on_loop:
            committed = loop.create_future()
            committed.set_result(self._commit(works, cancelled))
            self._release(loop, batch, committed)
            return
        else:
            try:
                committed = loop.run_in_executor(self._writer, self._commit, works, cancelled)
            except RuntimeError as exc:  # the writer has been shut down: nobody waits forever
                committed = loop.create_future()
                committed.set_exception(exc)
        committed.add_done_callback(lambda done: self._release(loop, batch, done))

    def _release(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiter], done: asyncio.Future) -> None:
        try:
            outcomes = done.result()
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            # The writer itself failed, or was stopped: nothing of the batch is known stored.
            outcomes = [_unrecorded(exc) for _ in batch]
        for (_, future), outcome in zip(batch, outcomes):
            if future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(outcome, _Failed):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)
        if self._waiting[loop]:
            self._send_waiting(loop)
        else:
            del self._waiting[loop]

    # ---- working a batch (on the writer thread, or on the loop) ---------------------------------------

    def _commit(self, works: list[Work[Any]], cancelled: list[Callable[[], bool]]) -> list[Any]:
        """Each unit's result (or ``_Failed``), once all the batch's rows are committed."""
        try:
            with write_transaction(self.engine) as conn:
                return self._work(conn, works, cancelled)
        except Exception as exc:  # noqa: BLE001 - rolled back: no request of the batch was recorded
            return self._failed_batch(works, exc)

    async def _commit_async(self, engine: AsyncEngine, works: list[Work[Any]],
                            cancelled: list[Callable[[], bool]]) -> list[Any]:
        """As ``_commit``, the units run as they are (synchronous code) with every database wait awaited."""

        def in_transaction(conn: Connection) -> list[Any]:
            with conn.begin():
                return self._work(conn, works, cancelled)

        try:
            async with engine.connect() as conn:
                return await conn.run_sync(in_transaction)
        except Exception as exc:  # noqa: BLE001 - rolled back: no request of the batch was recorded
            return self._failed_batch(works, exc)

    def _work(self, conn: Connection, works: list[Work[Any]], cancelled: list[Callable[[], bool]]) -> list[Any]:
        """Work the batch's units in ``conn``'s transaction and insert their rows (the caller commits)."""
        outcomes: list[Any] = []
        staged: list[Staged[Any]] = []
        # A unit whose caller left before its turn is not worked at all.
        live = [not gone() for gone in cancelled]
        if self.read_ahead is not None:
            self.read_ahead(conn, [work for work, alive in zip(works, live) if alive])
        for work, alive in zip(works, live):
            if not alive:
                outcomes.append(_Failed(asyncio.CancelledError()))
                continue
            try:
                unit = work(conn)
            except DBAPIError:
                raise  # the transaction may be spoiled: the whole batch fails
            except Exception as exc:  # noqa: BLE001 - this request's own refusal, or a bug
                outcomes.append(_Failed(exc))
                continue
            outcomes.append(unit.result)
            staged.append(unit)
        insert_staged(conn, staged)
        return outcomes

    def _failed_batch(self, works: list[Work[Any]], exc: Exception) -> list[Any]:
        log.warning("%s: a batch of %d could not be committed: %s", self.name, len(works), exc)
        return [_unrecorded(exc) for _ in works]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


def _unrecorded(cause: BaseException) -> _Failed:
    error = Unavailable(UNRECORDED)
    error.__cause__ = cause
    return _Failed(error)
