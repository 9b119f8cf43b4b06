"""The rating projection: folds every account event into per-enterprise facts and keeps each rating change.

A rating speaks for a knowledge instant: the ``recorded_at`` of an append, which every event of
that append shares. So the history holds, per instant at which the rating changed, the rating after
*all* of that instant's events, stamped with the position of the last of them; an ``as_of`` query
can only ever fall between two instants. The methodology sees only the events and that time, never
the clock, so a replay reproduces every row, however the log is cut into batches.

Each batch is folded in memory and written once at its end (facts and new rating rows per
enterprise, in the batch's transaction). Between batches the projection keeps what it knows of
recently seen enterprises, checked against the stream version it reflects, so following the log
does not read back and rewrite an enterprise's facts for every event. A rebuild hands each batch's
writes over (``detach_writes``) to commit on a writer thread while the next batch is folded
(``Projector.rebuild``), and writes an enterprise's facts only when it leaves memory or the rebuild
ends; being kept per enterprise, the read model can also be rebuilt by several processes at once,
each one partition of the log (``Projector.rebuild_in_partitions``). Consents are projected
alongside, for the service's consent checks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, func, select

from carbon.consent_projection import ConsentWrites
from carbon.db import insert_many, make_engine, upsert
from carbon.migrate import upgrade
from carbon.projection import Projection, Projector
from contracts import EVENT_TYPES
from services.rating import domain
from services.rating.config import BenchmarkTable
from services.rating.schema import PROJECTION_TABLES, rating_facts, ratings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Enterprises whose facts stay in memory between batches (least recently seen go first).
CACHED_ENTERPRISES = 20_000


def migrate(engine: Engine) -> None:
    upgrade(engine, MIGRATIONS)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def canonical_bytes(document: Any) -> bytes:
    """The one form of a stored or served JSON document (so equal ratings compare equal as text).

    Compact, UTF-8 as is, keys in the order given; anything not JSON (a decimal, a date) as ``str()``.
    """
    return orjson.dumps(document, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)


def canonical(document: Any) -> str:
    return canonical_bytes(document).decode()


@dataclass(slots=True)
class _Row:
    """One row of an enterprise's rating history, as the projection last knew or changed it."""

    seq: int
    recorded_at: datetime
    position: int
    stream_version: int
    status: str
    grade: str | None
    score: int | None
    body: str
    stored: bool  # the row exists in the database (as of the batch's start or its last write)
    changed: bool = False  # stored, and updated in this batch
    dropped: bool = False

    def values(self, enterprise_id: str) -> dict[str, Any]:
        return {"enterprise_id": enterprise_id, "seq": self.seq, "recorded_at": self.recorded_at,
                "position": self.position, "stream_version": self.stream_version, "status": self.status,
                "grade": self.grade, "score": self.score, "body": self.body}


@dataclass(slots=True)
class _Instant:
    """The latest rating event of an enterprise whose instant has not been rated yet."""

    recorded_at: str
    position: int
    stream_version: int


@dataclass(slots=True)
class _Account:
    """What the projection knows of one enterprise, as of stream ``version``."""

    version: int
    facts: domain.Facts
    tail: list[_Row]  # the last two rows of its rating history, oldest first
    dirty: bool = False  # facts changed since they were last written
    pending: _Instant | None = None
    rated: tuple[domain.Rating, str] | None = None  # the last rating and its stored form


@dataclass(slots=True)
class _Batch:
    consents: ConsentWrites = field(default_factory=ConsentWrites)
    accounts: dict[str, _Account] = field(default_factory=dict)  # touched by rating events
    rows: list[tuple[str, _Row]] = field(default_factory=list)  # rows added or changed
    deleted: list[tuple[str, int]] = field(default_factory=list)


_update_rating = (
    ratings.update()
    .where(ratings.c.enterprise_id == bindparam("e_id"), ratings.c.seq == bindparam("e_seq"))
    .values(position=bindparam("position"), stream_version=bindparam("stream_version"),
            status=bindparam("status"), grade=bindparam("grade"), score=bindparam("score"), body=bindparam("body"))
)
_delete_rating = ratings.delete().where(ratings.c.enterprise_id == bindparam("e_id"),
                                        ratings.c.seq == bindparam("e_seq"))


class RatingProjection(Projection):
    name = "rating"
    tables = PROJECTION_TABLES
    writes_behind = True
    partitionable = True  # facts, history and consents are all kept per enterprise

    def __init__(self, benchmarks: BenchmarkTable, cached_enterprises: int = CACHED_ENTERPRISES) -> None:
        self.benchmarks = benchmarks
        self.cached_enterprises = cached_enterprises
        self._known: OrderedDict[str, _Account] = OrderedDict()
        self._batch = _Batch()
        # In a rebuild an enterprise's facts are written when it leaves memory or the rebuild ends, not
        # every batch: a document rewritten per batch grows with the history, and was a tenth of a rebuild.
        self._rebuilding = False

    # ---- the batch ---------------------------------------------------------------------------

    def begin_batch(self, conn: Connection, envelopes: Sequence[dict[str, Any]], applied: dict[str, int]) -> None:
        self._batch = _Batch()
        # Read, in two statements, every enterprise this batch will rate that is not in memory.
        wanted = {e["enterprise_id"] for e in envelopes if e["type"] in domain.RATING_EVENTS} - self._known.keys()
        if wanted:
            self._load(conn, wanted, {e: applied.get(e, 0) for e in wanted})

    def apply(self, conn: Connection, envelope: dict[str, Any]) -> None:
        enterprise_id, version = envelope["enterprise_id"], envelope["stream_version"]
        account = self._known.get(enterprise_id)
        if account is not None and account.version != version - 1:
            # Not the state this event follows (another process applied events meanwhile): read it again.
            del self._known[enterprise_id]
            account = None
        event_type = envelope["type"]
        if self._batch.consents.apply(envelope) or event_type not in domain.RATING_EVENTS:
            if account is not None:
                account.version = version  # asset movements and consents do not enter the rating
            return
        if account is None:
            self._load(conn, {enterprise_id}, {enterprise_id: version - 1})
            account = self._known[enterprise_id]
        recorded_at = envelope["recorded_at"]
        if account.pending is not None and account.pending.recorded_at != recorded_at:
            self._rate(enterprise_id, account)
        data = EVENT_TYPES[event_type].model_validate(envelope["data"])
        account.facts.apply(event_type, data, envelope["event_id"])
        account.version, account.dirty = version, True
        account.pending = _Instant(recorded_at, envelope["position"], version)
        self._batch.accounts[enterprise_id] = account

    def end_batch(self, conn: Connection) -> None:
        self.detach_writes()(conn)

    def detach_writes(self) -> Callable[[Connection], None]:
        batch = self._batch
        for enterprise_id, account in batch.accounts.items():
            if account.pending is not None:
                self._rate(enterprise_id, account)
        deleted = [{"e_id": e, "e_seq": seq} for e, seq in batch.deleted]
        updates = [{"e_id": e, "e_seq": r.seq, **r.values(e)} for e, r in batch.rows if r.changed and not r.dropped]
        inserts = [r.values(e) for e, r in batch.rows if not r.stored and not r.dropped]
        written = {} if self._rebuilding else dict(batch.accounts)
        while len(self._known) > self.cached_enterprises:
            enterprise_id, account = self._known.popitem(last=False)
            written[enterprise_id] = account  # leaving memory: its facts are read back from the table
        facts = self._facts_writes(written)
        consents = batch.consents
        # From here on memory is what the database holds once these writes commit.
        for _, row in batch.rows:
            row.stored, row.changed = True, False
        self._batch = _Batch()

        def write(conn: Connection) -> None:
            if deleted:
                conn.execute(_delete_rating, deleted)
            if updates:
                conn.execute(_update_rating, updates)
            insert_many(conn, ratings, inserts)
            upsert(conn, rating_facts, facts, ["enterprise_id"])
            consents.write(conn)

        return write

    @staticmethod
    def _facts_writes(accounts: dict[str, _Account]) -> list[dict[str, Any]]:
        """The facts documents of those accounts changed since last written; they count as written."""
        facts = [{"enterprise_id": e, "facts": a.facts.stored().decode()} for e, a in accounts.items() if a.dirty]
        for account in accounts.values():
            account.dirty = False
        return facts

    def begin_rebuild(self) -> None:
        self._rebuilding = True

    def end_rebuild(self) -> Callable[[Connection], None]:
        self._rebuilding = False
        facts = self._facts_writes(self._known)
        return lambda conn: upsert(conn, rating_facts, facts, ["enterprise_id"])

    def discard(self) -> None:
        # The transaction rolled back: what memory holds may be ahead of the database.
        self._known.clear()
        self._batch = _Batch()
        self._rebuilding = False

    def reset(self, conn: Connection) -> None:
        super().reset(conn)
        self.discard()

    # ---- reading and rating --------------------------------------------------------------------

    def _load(self, conn: Connection, enterprise_ids: set[str], versions: dict[str, int]) -> None:
        facts = {r.enterprise_id: r.facts for r in conn.execute(
            select(rating_facts.c.enterprise_id, rating_facts.c.facts)
            .where(rating_facts.c.enterprise_id.in_(enterprise_ids)))}
        tails: dict[str, list[_Row]] = {e: [] for e in enterprise_ids}
        if facts:  # without facts there is no history either
            newest = func.row_number().over(partition_by=ratings.c.enterprise_id, order_by=ratings.c.seq.desc())
            ranked = select(ratings, newest.label("newest")).where(ratings.c.enterprise_id.in_(facts)).subquery()
            for r in conn.execute(select(ranked).where(ranked.c.newest <= 2)
                                  .order_by(ranked.c.enterprise_id, ranked.c.seq)):
                tails[r.enterprise_id].append(_Row(r.seq, r.recorded_at, r.position, r.stream_version, r.status,
                                                   r.grade, r.score, r.body, stored=True))
        for enterprise_id in enterprise_ids:
            document = facts.get(enterprise_id)
            self._known[enterprise_id] = _Account(
                versions[enterprise_id],
                domain.Facts.from_json(orjson.loads(document)) if document else domain.Facts(enterprise_id),
                tails[enterprise_id][-2:])

    def _rate(self, enterprise_id: str, account: _Account) -> None:
        """Rate the pending instant; history keeps one row per instant at which the rating changed."""
        instant, account.pending = account.pending, None
        assert instant is not None
        at = _time(instant.recorded_at)
        rating = domain.rate(account.facts, at, self.benchmarks)
        if account.rated is not None and account.rated[0] is rating:  # the methodology saw nothing new
            body = account.rated[1]
        else:
            body = canonical(rating.to_dict())
            account.rated = (rating, body)
        tail, batch = account.tail, self._batch
        last = tail[-1] if tail else None
        if last is not None and last.recorded_at == at:
            # The same instant rated again (a batch ended inside its append): its rating is the last one.
            before = tail[-2].body if len(tail) > 1 else None
            if body == before:  # back to what it was before the instant: the instant changed nothing
                tail.pop()
                last.dropped = True
                if last.stored:
                    batch.deleted.append((enterprise_id, last.seq))
                return
            last.position, last.stream_version, last.body = instant.position, instant.stream_version, body
            last.status, last.grade, last.score = rating.status, rating.grade, rating.score
            if last.stored and not last.changed:
                last.changed = True
                batch.rows.append((enterprise_id, last))
            return
        if last is not None and last.body == body:
            return  # nothing the rating shows changed
        row = _Row((last.seq if last else 0) + 1, at, instant.position, instant.stream_version, rating.status,
                   rating.grade, rating.score, body, stored=False)
        tail.append(row)
        del tail[:-2]
        batch.rows.append((enterprise_id, row))


def build_projector(engine: Engine, benchmarks: BenchmarkTable) -> Projector:
    return Projector(RatingProjection(benchmarks), engine)


def create_projector(database_url: str) -> Projector:
    """For ``carbon replay rating``: the migrated rating database and its projector."""
    from services.rating.settings import RatingSettings

    engine = make_engine(database_url)
    migrate(engine)
    return build_projector(engine, RatingSettings().reference_data().benchmarks)
