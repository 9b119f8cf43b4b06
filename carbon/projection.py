"""Exactly-once projections: each event's effect and its checkpoint commit in one transaction.

A projection keeps, per enterprise stream, the last version it applied. An event at or below that
version is a redelivery and has no effect; the next version is applied; anything beyond it means
an event went missing upstream and the batch is refused (loudly) rather than applied with a hole.
The highest position applied is the cursor the store catch-up transport resumes from.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, MetaData, select
from sqlalchemy.dialects import postgresql

from opentelemetry.trace import SpanKind

from carbon import telemetry
from carbon.db import UTCDateTime, read_transaction, upsert, write_transaction
from carbon.eventstore import Partition
from carbon.subscriptions import EventSource

log = logging.getLogger("carbon.projection")

checkpoint_metadata = MetaData()


def _stream_checkpoint_columns() -> list[sa.Column]:
    return [
        sa.Column("projection", sa.String(64), primary_key=True),
        sa.Column("stream_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    ]


def _head_columns() -> list[sa.Column]:
    return [
        sa.Column("projection", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("applied", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    ]


stream_checkpoints = sa.Table("projection_stream_checkpoints", checkpoint_metadata, *_stream_checkpoint_columns())
projection_heads = sa.Table("projection_heads", checkpoint_metadata, *_head_columns())


def create_checkpoint_tables(op) -> None:
    """For a projection service's first Alembic revision: the checkpoint tables, defined once here."""
    op.create_table("projection_stream_checkpoints", *_stream_checkpoint_columns())
    op.create_table("projection_heads", *_head_columns())


_APPLIED = select(stream_checkpoints.c.stream_id, stream_checkpoints.c.version).where(
    stream_checkpoints.c.projection == sa.bindparam("projection"))
# PostgreSQL takes the batch's streams as one array parameter, however many (an IN list is a
# parameter per stream, and a statement to compile per length).
_APPLIED_ANY = _APPLIED.where(stream_checkpoints.c.stream_id == sa.any_(
    sa.bindparam("stream_ids", type_=postgresql.ARRAY(sa.String))))
_APPLIED_IN = _APPLIED.where(stream_checkpoints.c.stream_id.in_(sa.bindparam("stream_ids", expanding=True)))


# A rebuild allocates millions of short-lived containers (envelopes, typed events, rows) beside a
# large lasting state (the facts of every enterprise seen). At the interpreter's default thresholds
# the collector then runs every few hundred allocations; rarer collections still collect every cycle.
REPLAY_GC_THRESHOLDS = (100_000, 20, 100)


@contextmanager
def fewer_collections(thresholds: tuple[int, int, int] = REPLAY_GC_THRESHOLDS) -> Iterator[None]:
    """Run the cyclic garbage collector less often for the duration (the thresholds are restored after)."""
    before = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class GapDetected(Exception):
    def __init__(self, stream_id: str, have: int, got: int) -> None:
        super().__init__(f"stream {stream_id}: applied up to version {have} but received version {got}")
        self.stream_id, self.have, self.got = stream_id, have, got


class RebuildInterfered(Exception):
    """Something else applied events to the read model while it was being rebuilt with writes behind."""


class RebuildUnfinished(Exception):
    """The read model is being rebuilt, or its last rebuild did not finish: nothing may follow the log into it."""


# The head of a read model while a rebuild with writes behind runs: a rebuild keeps part of its state
# in memory until it ends, so until then neither a follower nor a reader may take the tables as a whole.
REBUILDING = -1


class RebuildFailed(Exception):
    """A partition of a rebuild in parallel failed (its error is in the message); the rebuild is run again."""


# Makes the event source of one partition of the log (``None``: the whole log) from a position (``None``: the start).
SourceFactory = Callable[[Partition | None, int | None], EventSource]


class Projection:
    """A read model. Subclasses name themselves, list their tables and apply one envelope.

    A batch is applied in one transaction: ``begin_batch``, ``apply`` per new event, then
    ``end_batch`` (still inside the transaction, before the checkpoints), so a projection may gather
    the batch's changes in memory and write them once. Should the transaction fail, ``discard`` is
    called: anything kept in memory from it must be forgotten.
    """

    name: str = "projection"
    tables: Sequence[sa.Table] = ()
    # A projection that can hand a batch's writes over (``detach_writes``) is rebuilt with its writes
    # behind: each batch commits on a writer thread while the next batch is applied in memory.
    writes_behind: bool = False
    # A projection whose read model is kept per stream, with nothing shared between streams, and that
    # writes behind, can be rebuilt in parallel: each process applies the streams of one partition of the log.
    partitionable: bool = False

    @property
    def rebuilt_in_partitions(self) -> bool:
        """Whether a rebuild may cut the log into partitions, one process each."""
        return self.partitionable and self.writes_behind

    def begin_batch(self, conn: Connection, envelopes: Sequence[dict[str, Any]], applied: dict[str, int]) -> None:
        """``applied``: each stream's last version already applied (the batch may redeliver some)."""

    def apply(self, conn: Connection, envelope: dict[str, Any]) -> None:
        raise NotImplementedError

    def end_batch(self, conn: Connection) -> None:
        pass

    def detach_writes(self) -> Callable[[Connection], None]:
        """End the batch in memory and return its writes, to run in its transaction later (``writes_behind``).

        The writes must not depend on the projection's state any more: the next batch is applied meanwhile.
        Between ``begin_rebuild`` and ``end_rebuild`` they may leave out state the projection keeps in memory
        (and can read back, should it forget it: what it forgets, it writes first).
        """
        raise NotImplementedError

    def begin_rebuild(self) -> None:
        """A rebuild with writes behind starts: state kept in memory may be written at its end only."""

    def end_rebuild(self) -> Callable[[Connection], None]:
        """The rebuild's last writes: whatever state ``detach_writes`` left out."""
        return lambda conn: None

    def discard(self) -> None:
        pass

    def reset(self, conn: Connection) -> None:
        for table in reversed(list(self.tables)):
            conn.execute(table.delete())


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: int
    skipped: int
    position: int | None


class Projector:
    def __init__(self, projection: Projection, engine: Engine) -> None:
        self.projection, self.engine = projection, engine
        self._stop = threading.Event()
        self.last_error: BaseException | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when stopped."""
        self._stop.wait(seconds)

    def position(self) -> int | None:
        """The position the read model has applied the log up to (``None``: nothing yet)."""
        with read_transaction(self.engine) as conn:
            position = conn.execute(
                select(projection_heads.c.position).where(projection_heads.c.projection == self.name)
            ).scalar_one_or_none()
        if position == REBUILDING:
            raise RebuildUnfinished(f"{self.name}: the read model is being rebuilt, or its last rebuild did not "
                                    f"finish; run `carbon replay {self.name}` (again) before following the log")
        return position

    def handle(self, envelopes: Sequence[dict[str, Any]]) -> BatchResult:
        """Apply a batch in one transaction; redelivered events are skipped."""
        if not envelopes:
            return BatchResult(0, 0, None)
        try:
            with write_transaction(self.engine) as conn:
                head = self._head(conn)  # refuses while a rebuild has the read model
                versions = self._applied_versions(conn, {e["enterprise_id"] for e in envelopes})
                self.projection.begin_batch(conn, envelopes, versions)
                if len(envelopes) <= telemetry.SPAN_PER_EVENT_UP_TO:
                    new, skipped = self._apply_each(conn, envelopes, versions, traced=True)
                else:
                    with telemetry.span_for_events(f"{self.name} apply", envelopes, SpanKind.CONSUMER):
                        new, skipped = self._apply_each(conn, envelopes, versions, traced=False)
                self.projection.end_batch(conn)
                position = self._advance_head(conn, head, self._checkpoint(conn, envelopes, new), len(new))
        except BaseException:
            self.projection.discard()
            raise
        telemetry.record_lags(new, self.name)
        return BatchResult(len(new), skipped, position)

    def _applied_versions(self, conn: Connection, stream_ids: set[str]) -> dict[str, int]:
        statement = _APPLIED_ANY if conn.dialect.name == "postgresql" else _APPLIED_IN
        return dict(conn.execute(statement, {"projection": self.name, "stream_ids": sorted(stream_ids)}).all())

    @staticmethod
    def _next(envelope: dict[str, Any], versions: dict[str, int]) -> bool:
        """Whether the event is new (and due); raises on a gap. Advances ``versions`` when new."""
        stream_id, version = envelope["enterprise_id"], envelope["stream_version"]
        have = versions.get(stream_id, 0)
        if version <= have:
            return False
        if version != have + 1:
            raise GapDetected(stream_id, have, version)
        versions[stream_id] = version
        return True

    def _apply_each(self, conn: Connection, envelopes: Sequence[dict[str, Any]], versions: dict[str, int],
                    *, traced: bool) -> tuple[list[dict[str, Any]], int]:
        """Apply the events due; ``traced``: each in a span continuing its own trace."""
        new: list[dict[str, Any]] = []
        for envelope in envelopes:
            if self._next(envelope, versions):
                with (telemetry.span_for_event(f"{self.name} apply {envelope.get('type', '')}", envelope,
                                               SpanKind.CONSUMER) if traced else nullcontext()):
                    self.projection.apply(conn, envelope)
                new.append(envelope)
        return new, len(envelopes) - len(new)

    def _checkpoint(self, conn: Connection, envelopes: Sequence[dict[str, Any]], new: list[dict[str, Any]]) -> int:
        """Each stream's last applied version; returns the highest position seen (applied or not)."""
        changed = {e["enterprise_id"]: e for e in new}
        upsert(conn, stream_checkpoints, [
            {"projection": self.name, "stream_id": stream_id, "version": e["stream_version"], "position": e["position"]}
            for stream_id, e in changed.items()], ["projection", "stream_id"])
        return max(e["position"] for e in envelopes)

    def _head(self, conn: Connection) -> Any:
        """The head row (``None``: nothing applied yet); raises while a rebuild has the read model."""
        head = conn.execute(
            select(projection_heads.c.position, projection_heads.c.applied).where(projection_heads.c.projection == self.name)
        ).first()
        if head is not None and head.position == REBUILDING:
            raise RebuildUnfinished(f"{self.name}: the read model is being rebuilt, or its last rebuild did not "
                                    f"finish; events are applied to it once `carbon replay {self.name}` has ended")
        return head

    def _advance_head(self, conn: Connection, head: Any, position: int, applied: int) -> int:
        """Move the head (the row ``_head`` read in this transaction) on to ``position``, ``applied`` more."""
        position = max(position, head.position) if head else position
        self._set_head(conn, position, (head.applied if head else 0) + applied)
        return position

    def _set_head(self, conn: Connection, position: int | None, applied: int) -> None:
        """Put the head at ``position`` (``None``: no head, nothing applied)."""
        if position is None:
            conn.execute(projection_heads.delete().where(projection_heads.c.projection == self.name))
            return
        upsert(conn, projection_heads, [{"projection": self.name, "position": position, "applied": applied,
                                         "updated_at": datetime.now(UTC)}], ["projection"])

    def _begin_rebuild(self) -> None:
        """Forget everything; with writes behind, mark the head as rebuilding until the rebuild ends."""
        self.reset()
        if self.projection.writes_behind:
            with write_transaction(self.engine) as conn:
                self._set_head(conn, REBUILDING, 0)

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the read model and the checkpoints.

        After a rebuild the tables hold a whole log where the planner last saw them empty; until the
        database's own maintenance comes round, reads would be planned for empty tables.
        """
        tables = [*self.projection.tables, stream_checkpoints, projection_heads]
        with write_transaction(self.engine) as conn:
            for table in tables:
                conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")

    def reset(self) -> None:
        """Forget everything: the read model and the checkpoints (then replay rebuilds it)."""
        with write_transaction(self.engine) as conn:
            self.projection.reset(conn)
            conn.execute(stream_checkpoints.delete().where(stream_checkpoints.c.projection == self.name))
            conn.execute(projection_heads.delete().where(projection_heads.c.projection == self.name))

    def rebuild(self, source: EventSource, *, batch_size: int = 1000,
                progress: Callable[[BatchResult], None] | None = None) -> int:
        """Forget everything, then apply all the source has; return how many events were applied."""
        self._begin_rebuild()
        with fewer_collections():
            if not self.projection.writes_behind:
                return self.catch_up(source, batch_size=batch_size, progress=progress)
            return _WritesBehind(self, source, progress).run(batch_size)

    def rebuild_in_partitions(self, make_projector: Callable[[], Projector], make_source: SourceFactory,
                              partitions: int, *, batch_size: int = 1000,
                              progress: Callable[[BatchResult], None] | None = None) -> int:
        """Forget everything, then rebuild in ``partitions`` processes at once, each applying one partition
        of the log (whole streams) into this read model; return how many events were applied.

        ``make_projector`` and ``make_source`` are called in each process (so they must pickle). The
        processes write no head: each reports how far it read the log, and once all have ended this
        projector sets the head where all of them had read (every event up to it is applied) and
        applies, itself, what was appended since. The first failing process ends the rebuild.
        """
        if partitions < 1:
            raise ValueError(f"a rebuild needs at least one partition, got {partitions}")
        if partitions == 1 or not self.projection.rebuilt_in_partitions:
            source = make_source(None, None)
            try:
                return self.rebuild(source, batch_size=batch_size, progress=progress)
            finally:
                source.close()
        self._begin_rebuild()
        applied, read_through = _Partitions(self, make_projector, make_source, partitions, batch_size).run(progress)
        with write_transaction(self.engine) as conn:
            self._set_head(conn, read_through, applied)
        tail = make_source(None, read_through)
        try:
            return applied + self.catch_up(tail, batch_size=batch_size, progress=progress)
        finally:
            tail.close()

    def catch_up(self, source: EventSource, *, batch_size: int = 1000,
                 progress: Callable[[BatchResult], None] | None = None) -> int:
        """Apply until the source has nothing more; return how many events were applied."""
        total = 0
        while batch := source.fetch(batch_size, timeout_s=0.5):
            result = self.handle(batch)
            source.acknowledge()
            total += result.applied
            if progress:
                progress(result)
        return total

    def run(self, source: EventSource, *, batch_size: int = 500, idle_wait_s: float = 0.05) -> None:
        """Follow the source until ``stop()``; a failing batch is retried (never skipped)."""
        failures = 0
        rewind = False
        while not self._stop.is_set():
            try:
                if rewind:
                    # Fetch nothing more until the source is back at what is durably applied: the
                    # failed batch is behind it, and no later event need come along to reveal the gap.
                    source.redeliver(self.position())
                    rewind = False
                batch = source.fetch(batch_size, timeout_s=0.2)
                if batch:
                    self.handle(batch)
                    source.acknowledge()
                else:
                    self._stop.wait(idle_wait_s)
                failures = 0
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep following once the cause goes away
                failures += 1
                self.last_error = exc
                rewind = True
                log.warning("projection %s: %s", self.name, exc)
                self._stop.wait(min(5.0, 0.1 * 2 ** min(failures, 6)))

    def start(self, source: EventSource, **kwargs: Any) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(source,), kwargs=kwargs, name=f"projection-{self.name}",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


class _SettledReads:
    """What a batch applied during a rebuild with writes behind reads through: each read first waits
    until the batch in flight has committed, so it sees everything applied before it."""

    def __init__(self, rebuild: _WritesBehind) -> None:
        self.rebuild = rebuild
        self.conn: Connection | None = None

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.rebuild.settle()
        if self.conn is None:
            self.conn = self.rebuild.projector.engine.connect()
        return self.conn.execute(*args, **kwargs)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _WritesBehind:
    """A rebuild into an emptied read model, by its only writer: batch k's transaction (the projection's
    writes and the checkpoints) commits on a writer thread while batch k+1 is applied in memory.

    At most one batch is in flight. The streams' versions are kept in memory (the read model started
    empty, and nothing else writes to it), and any read the projection makes waits for the batch in
    flight first. State the projection keeps in memory for the rest of the rebuild is written at its
    end (``end_rebuild``), with the head (``head``; until then it reads ``REBUILDING``, so nothing
    follows the log into a half-written read model). The first failure, in either thread, ends the
    rebuild: it is run again from the start.
    """

    def __init__(self, projector: Projector, source: EventSource,
                 progress: Callable[[BatchResult], None] | None, *, head: bool = True) -> None:
        self.projector, self.source, self.progress, self.head = projector, source, progress, head
        self.versions: dict[str, int] = {}
        self.applied = 0
        self.position: int | None = None  # the highest position handed over
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"rebuild-{projector.name}")
        self._in_flight: Future[BatchResult] | None = None

    def run(self, batch_size: int) -> int:
        projection = self.projector.projection
        projection.begin_rebuild()
        try:
            while batch := self.source.fetch(batch_size, timeout_s=0.5):
                before = {e["enterprise_id"]: self.versions.get(e["enterprise_id"], 0) for e in batch}
                reads = _SettledReads(self)
                try:
                    projection.begin_batch(reads, batch, self.versions)  # type: ignore[arg-type]
                    with telemetry.span_for_events(f"{self.projector.name} apply", batch, SpanKind.CONSUMER):
                        new, skipped = self.projector._apply_each(reads, batch, self.versions,  # type: ignore[arg-type]
                                                                 traced=False)
                    writes = projection.detach_writes()
                finally:
                    reads.close()
                self.settle()
                self._in_flight = self._writer.submit(self._commit, writes, batch, new, skipped, before)
            self.settle()
            last_writes = projection.end_rebuild()
            with write_transaction(self.projector.engine) as conn:
                last_writes(conn)
                if self.head:
                    self.projector._set_head(conn, self.position, self.applied)
        except BaseException:
            projection.discard()
            raise
        finally:
            self._writer.shutdown(wait=True)
        return self.applied

    def settle(self) -> None:
        """Wait for the batch in flight to commit; its error is raised here."""
        if self._in_flight is None:
            return
        future, self._in_flight = self._in_flight, None
        result = future.result()
        self.source.acknowledge()
        self.applied += result.applied
        self.position = result.position if self.position is None else max(self.position, result.position)
        if self.progress:
            self.progress(result)

    def _commit(self, writes: Callable[[Connection], None], envelopes: Sequence[dict[str, Any]],
                new: list[dict[str, Any]], skipped: int, before: dict[str, int]) -> BatchResult:
        with write_transaction(self.projector.engine) as conn:
            # The versions were kept in memory on the word that nothing else writes here (the owning
            # service is stopped for a rebuild): check it, so a second writer fails the rebuild loudly
            # rather than have an event applied twice.
            found = self.projector._applied_versions(conn, set(before))
            if moved := sorted(s for s, version in before.items() if found.get(s, 0) != version):
                raise RebuildInterfered(f"{self.projector.name}: streams {', '.join(moved[:5])} were applied by "
                                        "another writer during the rebuild; stop it and rebuild again")
            writes(conn)
            position = self.projector._checkpoint(conn, envelopes, new)
        # No lags recorded: a rebuild applies history, whose age says nothing of how far behind following is.
        return BatchResult(len(new), skipped, position)


class _Partitions:
    """The processes of a rebuild in parallel, one per partition of the log, and their reports."""

    def __init__(self, projector: Projector, make_projector: Callable[[], Projector], make_source: SourceFactory,
                 count: int, batch_size: int) -> None:
        self.name, self.count = projector.name, count
        # Spawned, not forked: the parent may run threads (a server, a progress bar) a fork would copy mid-step.
        context = multiprocessing.get_context("spawn")
        self.reports: multiprocessing.Queue[tuple[Any, ...]] = context.Queue()
        self.processes = [
            context.Process(target=_rebuild_partition, name=f"rebuild-{self.name}-{index}", daemon=True,
                            args=(make_projector, make_source, Partition(index, count), batch_size, self.reports))
            for index in range(count)]

    def run(self, progress: Callable[[BatchResult], None] | None) -> tuple[int, int | None]:
        """Every process's events applied, and the position up to which all of them read the log."""
        ended: dict[int, tuple[int, int | None]] = {}
        waited_for_last_report = False
        try:
            for process in self.processes:
                process.start()
            while len(ended) < self.count:
                try:
                    kind, index, *report = self.reports.get(timeout=1.0)
                except queue.Empty:
                    gone = [i for i, p in enumerate(self.processes) if i not in ended and p.exitcode is not None]
                    if gone and waited_for_last_report:
                        raise RebuildFailed(f"{self.name}: partition {gone[0]} of {self.count} ended without a "
                                            f"report (exit code {self.processes[gone[0]].exitcode})") from None
                    waited_for_last_report = bool(gone)  # its last report may still be on its way: wait once more
                    continue
                waited_for_last_report = False
                if kind == "batch":
                    if progress:
                        progress(BatchResult(*report))
                elif kind == "ended":
                    ended[index] = (report[0], report[1])
                else:
                    raise RebuildFailed(f"{self.name}: partition {index} of {self.count} failed: {report[0]}")
        finally:
            for process in self.processes:
                if process.is_alive() and len(ended) < self.count:
                    process.terminate()
            for process in self.processes:
                if process.pid is not None:
                    process.join(timeout=30)
        ends = [end for _, end in ended.values()]
        applied = sum(count for count, _ in ended.values())
        return applied, None if any(end is None for end in ends) else min(ends)  # type: ignore[type-var]


def _rebuild_partition(make_projector: Callable[[], Projector], make_source: SourceFactory, partition: Partition,
                       batch_size: int, reports: multiprocessing.Queue) -> None:
    """One process of a rebuild in parallel: the streams of one partition, with writes behind and no head."""
    try:
        projector = make_projector()
        source = make_source(partition, None)
        try:
            def report(result: BatchResult) -> None:
                reports.put(("batch", partition.index, result.applied, result.skipped, result.position))

            with fewer_collections():
                applied = _WritesBehind(projector, source, report, head=False).run(batch_size)
            read_through = source.read_through  # type: ignore[attr-defined]
        finally:
            source.close()
            projector.engine.dispose()
        reports.put(("ended", partition.index, applied, read_through))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which ends the rebuild
        reports.put(("failed", partition.index, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
