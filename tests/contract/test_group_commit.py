"""Group commit on SQLite and PostgreSQL: concurrent answers share a commit, each is stored before it is given.

First the plumbing (``carbon.group_commit``) on a scratch table, then the rating service's decision-issuing
reads through it: every answer under its own decision_id, stored byte for byte with its access-log entry,
and a batch whose commit fails answers nobody and stores nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select, text

import carbon.group_commit as group_commit
from carbon.db import make_async_engine, make_engine
from carbon.errors import Forbidden, NotFound, Unavailable
from carbon.group_commit import GroupCommit, Staged
from carbon.identity import Principal
from carbon.problems import from_app_error
from contracts import Role
from contracts.envelope import format_time
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC
from services.rating.config import load_reference_data
from services.rating.projection import create_projector
from services.rating.schema import access_log, decisions
from services.rating.service import RatingService

CEMENT, POWER = CEMENT_MAKER_USCC, POWER_PLANT_USCC

scratch = sa.MetaData()
notes = sa.Table("notes", scratch, sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.String(40)))


# Every way of committing a batch, on each backend it serves: on the writer thread, on the event
# loop's own thread, and on the loop with every database wait awaited (asyncio driver: PostgreSQL).
MODES = [("sqlite", "writer-thread"), ("sqlite", "on-loop"),
         ("postgres", "writer-thread"), ("postgres", "on-loop"), ("postgres", "asyncio")]


@pytest.fixture(params=MODES, ids=[f"{backend}-{mode}" for backend, mode in MODES])
def mode(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:
    """(database URL, way of committing)."""
    backend, how = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", how
    else:
        request.applymarker(pytest.mark.postgres)
        yield request.getfixturevalue("postgres_url"), how


@pytest.fixture
def engine(mode: tuple[str, str]):
    engine = make_engine(mode[0])
    scratch.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def group_commit_of(engine, mode: tuple[str, str]) -> Iterator[Callable[..., GroupCommit]]:
    """``GroupCommit`` on the test's database, committing the test's way (other options passed on)."""
    how, async_engines = mode[1], []

    def make(**options) -> GroupCommit:
        if how == "asyncio":
            async_engines.append(make_async_engine(engine.url))
            options["async_engine"] = async_engines[-1]
        return GroupCommit(engine, "test", on_loop=how == "on-loop", **options)

    yield make
    for async_engine in async_engines:
        asyncio.run(async_engine.dispose())


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(notes).order_by(notes.c.id))]


def note(n: int, text: str | None = None):
    def work(conn) -> Staged[int]:
        return Staged(n, [(notes, {"id": n, "text": text or f"note {n}"})])
    return work


async def gather_settled(*awaitables):
    return await asyncio.gather(*awaitables, return_exceptions=True)


# ---- the plumbing ------------------------------------------------------------------------------------

def test_concurrent_units_share_batches_and_each_gets_its_own_result(engine, group_commit_of, mode) -> None:
    writer_thread = mode[1] == "writer-thread"
    batches: list[int] = []
    writes = group_commit_of(read_ahead=lambda conn, works: batches.append(len(works)))

    async def main():
        try:
            return await asyncio.gather(*(writes.submit(note(n)) for n in range(60)))
        finally:
            await writes.aclose()

    assert asyncio.run(main()) == list(range(60))
    assert stored(engine) == [(n, f"note {n}") for n in range(60)]
    # On the writer thread the first goes alone and the rest queue behind it, sharing the next
    # commit(s); on the loop (asyncio too), all that are ready in the same turn of the loop gather into one.
    assert sum(batches) == 60 and len(batches) < 60 and batches[0] == (1 if writer_thread else 60)


def test_after_a_quiet_spell_a_batch_gathers_for_a_moment_before_it_is_sent(engine, group_commit_of) -> None:
    batches: list[int] = []
    writes = group_commit_of(gather_s=0.2, read_ahead=lambda conn, works: batches.append(len(works)))

    async def spaced(n: int) -> int:
        await asyncio.sleep(0.02 * n)  # each arrives after the first, within its gathering time
        return await writes.submit(note(n))

    async def main():
        try:
            return await asyncio.gather(*(spaced(n) for n in range(4)))
        finally:
            await writes.aclose()

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert batches == [4] and stored(engine) == [(n, f"note {n}") for n in range(4)]


def test_a_unit_refused_on_its_own_stores_nothing_and_spoils_nothing(engine, group_commit_of) -> None:
    writes = group_commit_of()

    def refused(conn):
        raise NotFound("no such thing")

    async def main():
        try:
            return await gather_settled(writes.submit(note(1)), writes.submit(refused), writes.submit(note(2)))
        finally:
            await writes.aclose()

    first, second, third = asyncio.run(main())
    assert (first, third) == (1, 2) and isinstance(second, NotFound)
    assert stored(engine) == [(1, "note 1"), (2, "note 2")]


def test_a_failed_commit_fails_every_request_of_the_batch_and_stores_none_of_it(engine, group_commit_of) -> None:
    batches: list[int] = []
    # Requests that arrive together gather into one batch, whichever way it is committed.
    writes = group_commit_of(gather_s=0.05, read_ahead=lambda conn, works: batches.append(len(works)))

    async def main():
        try:
            first = await writes.submit(note(100, "first batch"))
            # The same primary key twice in one batch: its insert, hence its commit, fails.
            rest = await gather_settled(*(writes.submit(work) for work in (note(1), note(2, "twin"), note(2))))
            return first, rest
        finally:
            await writes.aclose()

    first, rest = asyncio.run(main())
    assert first == 100 and batches == [1, 3]
    assert all(isinstance(r, Unavailable) for r in rest), rest
    assert stored(engine) == [(100, "first batch")]  # note 1 was not kept without its batch


def test_a_database_error_in_a_unit_fails_its_batch(engine, group_commit_of) -> None:
    writes = group_commit_of()

    def broken(conn):
        conn.execute(text("SELECT * FROM no_such_table"))
        return Staged(0)

    async def main():
        try:
            return await gather_settled(writes.submit(broken))
        finally:
            await writes.aclose()

    [outcome] = asyncio.run(main())
    assert isinstance(outcome, Unavailable)
    problem = from_app_error(outcome)
    assert problem.status == 503 and problem.headers == {"Retry-After": "1"}
    with pytest.raises(Unavailable):
        writes.run(broken)


def test_a_request_cancelled_while_gathering_is_not_worked(engine, group_commit_of) -> None:
    writes = group_commit_of(gather_s=0.1)
    worked: list[int] = []

    def tracked(conn):
        worked.append(1)
        return Staged(1, [(notes, {"id": 1, "text": "gone"})])

    async def main():
        try:
            leaving = asyncio.ensure_future(writes.submit(tracked))
            await asyncio.sleep(0.01)
            leaving.cancel()
            staying = await writes.submit(note(2))
            return await gather_settled(leaving), staying
        finally:
            await writes.aclose()

    (left,), staying = asyncio.run(main())
    assert isinstance(left, asyncio.CancelledError) and staying == 2
    assert worked == [] and stored(engine) == [(2, "note 2")]


def test_a_request_cancelled_before_its_turn_is_not_worked(database_url: str) -> None:
    """On the writer thread: queued behind a batch still being committed, and cancelled meanwhile."""
    engine = make_engine(database_url)
    scratch.create_all(engine)
    writes = GroupCommit(engine, "test")
    release = threading.Event()
    worked: list[int] = []

    def slow(conn):
        release.wait(10)
        return Staged(0)

    def tracked(conn):
        worked.append(1)
        return Staged(1, [(notes, {"id": 1, "text": "late"})])

    async def main():
        try:
            first = asyncio.ensure_future(writes.submit(slow))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(writes.submit(tracked))
            await asyncio.sleep(0.05)
            second.cancel()
            release.set()
            return await gather_settled(first, second)
        finally:
            await writes.aclose()

    try:
        first, second = asyncio.run(main())
        assert first == 0 and isinstance(second, asyncio.CancelledError)
        assert worked == [] and stored(engine) == []
    finally:
        engine.dispose()


def test_after_close_work_is_refused_and_run_still_works_alone(engine, group_commit_of) -> None:
    writes = group_commit_of()

    async def main():
        await writes.submit(note(1))
        await writes.aclose()
        with pytest.raises(Unavailable):
            await writes.submit(note(2))

    asyncio.run(main())
    assert writes.run(note(3)) == 3
    assert stored(engine) == [(1, "note 1"), (3, "note 3")]


# ---- the rating service's reads ------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def events() -> list[dict]:
    positions, versions, out = itertools.count(1), {}, []

    def add(enterprise: str, event_type: str, **data) -> None:
        versions[enterprise] = versions.get(enterprise, 0) + 1
        out.append({"event_id": str(uuid.uuid4()), "type": event_type, "schema_version": 1,
                    "enterprise_id": enterprise, "stream_version": versions[enterprise], "position": next(positions),
                    "recorded_at": format_time(T0 + timedelta(hours=len(out))), "data": data,
                    "metadata": {"actor": {"sub": "x", "role": "operator"}}, "prev_hash": "0" * 64, "hash": "0" * 64})

    for enterprise, industry in ((CEMENT, "C3011"), (POWER, "D4411")):
        add(enterprise, "EnterpriseRegistered", uscc=enterprise, name="Example", industry=industry, region="510100")
        add(enterprise, "ConsentGranted", consent_id=f"consent-{enterprise}", grantee="bank-a",
            scopes=["rating:read", "pricing:read"], purpose="loan", expires_at="2099-01-01T00:00:00Z")
    add(CEMENT, "ActivityReported", period="2024", revenue_10k_cny="50000", output={"quantity": "1000000", "unit": "t"})
    add(CEMENT, "EmissionRecorded", calculation_id="c1", period="2024", scope=1, category="process", gas="CO2",
        tco2e="450000", factor_ref="f", methodology="m", data_quality=4)
    return out


@pytest.fixture
def service(database_url: str):
    projector = create_projector(database_url)
    projector.handle(events())
    service = RatingService(projector.engine, load_reference_data(), clock=lambda: NOW)
    yield service
    projector.engine.dispose()


def kept(service: RatingService) -> tuple[dict[str, bytes], list[tuple]]:
    with service.engine.connect() as conn:
        bodies = {r.decision_id: r.body.encode() for r in conn.execute(select(decisions.c.decision_id, decisions.c.body))}
        reads = [tuple(r) for r in conn.execute(select(
            access_log.c.enterprise_id, access_log.c.party, access_log.c.what, access_log.c.consent_id,
            access_log.c.decision_id).order_by(access_log.c.read_id))]
    return bodies, reads


def test_concurrent_reads_each_get_their_own_stored_decision_and_access_log_entry(service: RatingService) -> None:
    bank, other_bank, owner = Principal("bank-a", Role.BANK), Principal("bank-b", Role.BANK), Principal(CEMENT, Role.ENTERPRISE)

    async def main():
        try:
            reads = [service.rating_async(bank, (CEMENT, POWER)[n % 2]) for n in range(30)]
            reads += [service.pricing_async(bank, CEMENT, "loan"), service.rating_async(owner, CEMENT),
                      service.rating_async(bank, CEMENT, NOW - timedelta(days=1)),
                      service.rating_async(other_bank, CEMENT), service.rating_async(bank, "91510100MA00000000")]
            return await gather_settled(*reads)
        finally:
            await service.aclose()

    *answered, refused, unknown = asyncio.run(main())
    assert isinstance(refused, Forbidden) and refused.reason == "no_consent"
    assert isinstance(unknown, NotFound)
    bodies, reads = kept(service)
    ids = [json.loads(a)["decision_id"] for a in answered]
    assert len(set(ids)) == len(answered) == 33
    # Each answer is stored byte for byte under its decision_id; the refusals left nothing.
    assert {i: b for i, b in zip(ids, answered)} == bodies
    # Every third-party read is logged with its decision (the owner's own read is not).
    third_party = ids[:30] + ids[30:31] + ids[32:33]
    assert sorted(r[4] for r in reads) == sorted(third_party)
    assert {(r[0], r[1], r[3]) for r in reads} == {(CEMENT, "bank-a", f"consent-{CEMENT}"),
                                                   (POWER, "bank-a", f"consent-{POWER}")}
    ratings = [json.loads(a) for a in answered[:30]]
    assert {r["enterprise_id"] for r in ratings} == {CEMENT, POWER}
    assert all(r["as_of"] == format_time(NOW) for r in ratings)
    # A read together with others answers as a read alone does.
    alone = json.loads(service.rating(bank, CEMENT))
    together = next(r for r in ratings if r["enterprise_id"] == CEMENT)
    assert {k: v for k, v in alone.items() if k != "decision_id"} == {
        k: v for k, v in together.items() if k != "decision_id"}


def test_a_failed_commit_answers_no_read_and_stores_no_decision_nor_log_entry(service: RatingService,
                                                                               monkeypatch) -> None:
    bank = Principal("bank-a", Role.BANK)
    insert = group_commit.insert_staged

    def insert_then_fail(conn, staged):
        insert(conn, staged)  # the rows are written, then the commit is never reached
        raise sa.exc.OperationalError("COMMIT", {}, Exception("the disk is full"))

    monkeypatch.setattr(group_commit, "insert_staged", insert_then_fail)

    async def main():
        try:
            return await gather_settled(*(service.rating_async(bank, CEMENT) for _ in range(10)))
        finally:
            await service.aclose()

    outcomes = asyncio.run(main())
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    assert kept(service) == ({}, [])
