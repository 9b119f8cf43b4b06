"""A rebuild in parallel, on SQLite and PostgreSQL: the log cut by stream into partitions, each rebuilt in a
process of its own, stores what a rebuild in one process stores; a failing process fails it loudly."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import pytest
from sqlalchemy import select

from carbon.db import make_engine
from carbon.eventstore import EventStore, NewEvent, Partition, migrate
from carbon.projection import Projector, RebuildFailed, RebuildUnfinished, stream_checkpoints
from carbon.subscriptions import StoreLogSource, store_log_source
from contracts.types import uscc_check_character
from services.rating.projection import create_projector
from services.rating.schema import rating_facts, ratings


def uscc(n: int) -> str:
    first17 = f"9151010{n:010d}"
    return first17 + uscc_check_character(first17)


ENTERPRISES = [uscc(700 + n) for n in range(9)]
LINE = {"gas": "CO2", "factor_ref": "f", "methodology": "m", "data_quality": 3}


def registration(n: int, enterprise: str) -> list[NewEvent]:
    industry = "C3011" if n % 2 else "D4411"
    return [NewEvent("EnterpriseRegistered", {"uscc": enterprise, "name": f"Example {n}", "industry": industry,
                                              "region": "510100"}),
            NewEvent("ConsentGranted", {"consent_id": f"00000000-0000-4000-8000-{n:012d}", "grantee": "bank-a",
                                        "scopes": ["rating:read"], "purpose": "loan",
                                        "expires_at": "2099-01-01T00:00:00Z"})]


def year(n: int, period: str) -> list[NewEvent]:
    tonnes = 400_000 + 10_000 * n
    return [NewEvent("ActivityReported", {"period": period, "revenue_10k_cny": "50000",
                                          "output": {"quantity": "1000000", "unit": "t"}}),
            NewEvent("EmissionRecorded", {"calculation_id": f"c{period}", "period": period, "scope": 1,
                                          "category": "process", "tco2e": str(tonnes), **LINE}),
            NewEvent("EmissionRecorded", {"calculation_id": f"e{period}", "period": period, "scope": 2,
                                          "category": "purchased_electricity", "tco2e": "20000", **LINE})]


def fill(store: EventStore) -> int:
    """Appends going round the enterprises, as reporting does: registration, two years, a verification."""
    appends = [lambda n, e: registration(n, e), lambda n, e: year(n, "2023"), lambda n, e: year(n, "2024"),
               lambda n, e: [NewEvent("EmissionVerified", {"period": "2024", "verifier": "v",
                                                           "verified_tco2e": str(400_000 + 10_000 * n),
                                                           "report_ref": "VR"})]]
    count = 0
    for make in appends:
        for n, enterprise in enumerate(ENTERPRISES):
            count += len(store.append_events(enterprise, make(n, enterprise)).positions)
    visible(store, count)
    return count


@dataclass
class Databases:
    account: str
    projections: list[str]


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request: pytest.FixtureRequest, tmp_path) -> Iterator[Databases]:
    """An account database and three empty projection databases, of each backend."""
    if request.param == "sqlite":
        yield Databases(f"sqlite:///{tmp_path / 'account.db'}", [f"sqlite:///{tmp_path / f'rating{i}.db'}" for i in range(3)])
        return
    request.applymarker(pytest.mark.postgres)
    from tests import infra

    server = request.getfixturevalue("postgres_server")
    with ExitStack() as stack:
        urls = [stack.enter_context(infra.fresh_database(server)) for _ in range(4)]
        yield Databases(urls[0], urls[1:])


@pytest.fixture
def store(databases: Databases) -> Iterator[EventStore]:
    engine = make_engine(databases.account)
    migrate(engine)
    yield EventStore(engine)
    engine.dispose()


def stored(projector: Projector) -> tuple[list[tuple], ...]:
    """The rating rows, facts, consents and stream checkpoints."""
    with projector.engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(ratings).order_by(ratings.c.enterprise_id, ratings.c.seq))],
            [tuple(r) for r in conn.execute(select(rating_facts).order_by(rating_facts.c.enterprise_id))],
            [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM consents ORDER BY consent_id")],
            [tuple(r) for r in conn.execute(select(stream_checkpoints).order_by(stream_checkpoints.c.stream_id))],
        )


def visible(store: EventStore, count: int) -> list[dict]:
    """The log once it shows ``count`` events: on PostgreSQL a commit shows once no older transaction
    anywhere in the cluster is still open (``carbon/eventstore/positions.py``)."""
    deadline = time.monotonic() + 30
    while len(log := store.read_all_envelopes(None, 1000)) < count:
        assert time.monotonic() < deadline, f"the log shows {len(log)} of {count} events"
        time.sleep(0.05)
    return log


def settled(parallel: Projector, one: Projector, account_url: str) -> None:
    """Whatever became visible only after the rebuild ended is applied by following the log from its head."""
    parallel.catch_up(StoreLogSource(EventStore(make_engine(account_url)), parallel.position()))
    one.rebuild(StoreLogSource(EventStore(make_engine(account_url))), batch_size=1000)


def applied_count(projector: Projector) -> int:
    with projector.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT applied FROM projection_heads WHERE projection = 'rating'").scalar_one()


def test_the_partitions_of_the_log_hold_whole_streams_once_each_in_log_order(store: EventStore) -> None:
    total = fill(store)
    log = store.read_all_envelopes(None, 1000)
    assert len(log) == total
    for count in (1, 2, 3, 5):
        shares = []
        for index in range(count):
            share, after = [], None
            while True:  # small pages: the cursor goes on from where each left off
                page = store.read_log_page(after, 4, Partition(index, count))
                share += page.envelopes
                if page.envelopes:
                    assert page.next >= page.envelopes[-1]["position"]
                after = page.next
                if not page.envelopes:
                    break
            assert [e["position"] for e in share] == sorted(e["position"] for e in share)
            # A short page of a share went on to the end of the visible log: nothing is left after it.
            assert after >= log[-1]["position"]
            assert store.read_log_page(after, 4, Partition(index, count)).envelopes == []
            shares.append(share)
        assert sorted(e["position"] for share in shares for e in share) == [e["position"] for e in log]
        owners = [{e["enterprise_id"] for e in share} for share in shares]
        assert sum(len(o) for o in owners) == len(ENTERPRISES)  # no stream is split between two shares
        assert count == 1 or sum(1 for o in owners if o) >= 2  # the hash spreads the streams


def test_a_partition_is_checked() -> None:
    with pytest.raises(ValueError, match="partition must be between 0 and 1"):
        Partition(2, 2)
    with pytest.raises(ValueError, match="partitions must be between 1 and 64"):
        Partition(0, 65)


@pytest.mark.slow
@pytest.mark.parametrize("partitions", [2, 3])
def test_a_rebuild_in_partitions_stores_what_one_process_does(databases: Databases, store: EventStore,
                                                              partitions: int) -> None:
    total = fill(store)
    one, parallel = create_projector(databases.projections[0]), create_projector(databases.projections[1])
    try:
        source = StoreLogSource(EventStore(make_engine(databases.account)))
        assert one.rebuild(source, batch_size=7) == total
        source.close()
        progress = []
        applied = parallel.rebuild_in_partitions(
            partial(create_projector, databases.projections[1]), partial(store_log_source, databases.account),
            partitions, batch_size=7, progress=progress.append)
        assert applied == total == applied_count(parallel)
        assert stored(parallel) == stored(one)
        assert sum(r.applied for r in progress) == total
        # The head: every event up to it is applied, and following the log from it finds nothing new.
        assert parallel.position() >= one.position() == store.read_all_envelopes(None, 1000)[-1]["position"]
        assert parallel.catch_up(StoreLogSource(EventStore(make_engine(databases.account)), parallel.position())) == 0
    finally:
        one.engine.dispose()
        parallel.engine.dispose()


class WrappedSource:
    """A partition's source read from the store, for the sources below to change one thing of."""

    def __init__(self, account_url: str, partition: Partition | None, after: int | None) -> None:
        self.source = store_log_source(account_url, partition, after)
        self.partition = partition

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        return self.source.fetch(max_events, timeout_s)

    @property
    def read_through(self) -> int | None:
        return self.source.read_through

    def acknowledge(self) -> None:
        pass

    def redeliver(self, position: int | None) -> None:
        self.source.redeliver(position)

    def close(self) -> None:
        self.source.close()


class AppendingWhileRead(WrappedSource):
    """A partition's source appends to the log after its first page (events the rebuild's processes may or
    may not see); the source of the tail, made once they have all ended, appends before it is read."""

    def __init__(self, account_url: str, partition: Partition | None, after: int | None) -> None:
        super().__init__(account_url, partition, after)
        self.appended = False
        if partition is None:
            self.source.store.append_events(ENTERPRISES[-1], year(len(ENTERPRISES) - 1, "2025"))
            visible(self.source.store, len(ENTERPRISES) * 9 + 3 * 3)  # so the tail must apply it

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        batch = self.source.fetch(max_events, timeout_s)
        if self.partition is not None and not self.appended:
            self.appended = True
            n = self.partition.index
            self.source.store.append_events(ENTERPRISES[n], year(n, "2025"))
        return batch


@pytest.mark.slow
def test_events_appended_during_a_rebuild_in_partitions_are_applied(databases: Databases, store: EventStore) -> None:
    total = fill(store)
    parallel, one = create_projector(databases.projections[0]), create_projector(databases.projections[1])
    try:
        applied = parallel.rebuild_in_partitions(
            partial(create_projector, databases.projections[0]), partial(AppendingWhileRead, databases.account),
            2, batch_size=5)
        assert applied == total + 3 * 3 == applied_count(parallel)  # each process appended a year, and the tail
        settled(parallel, one, databases.account)
        assert stored(parallel) == stored(one)
    finally:
        parallel.engine.dispose()
        one.engine.dispose()


class LateAppend(WrappedSource):
    """Partition 0, once it has read its share to the end, appends to one of its own streams; partition 1
    starts reading only then, so it reads further than partition 0 did. The event lies beyond what
    partition 0 read but before where partition 1 ended: only where all partitions had read is the head."""

    def __init__(self, flag: str, account_url: str, partition: Partition | None, after: int | None) -> None:
        super().__init__(account_url, partition, after)
        self.flag, self.streams = flag, []

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        if self.partition is not None and self.partition.index == 1 and not self.streams:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.flag) and time.monotonic() < deadline:
                time.sleep(0.02)
        batch = self.source.fetch(max_events, timeout_s)
        self.streams += [e["enterprise_id"] for e in batch]
        return batch

    def close(self) -> None:
        if self.partition is not None and self.partition.index == 0:
            self.source.store.append_events(self.streams[0], year(ENTERPRISES.index(self.streams[0]), "2026"))
            open(self.flag, "w").close()
        self.source.close()


@pytest.mark.slow
def test_the_head_is_where_every_partition_had_read_the_log(databases: Databases, store: EventStore, tmp_path) -> None:
    total = fill(store)
    parallel, one = create_projector(databases.projections[0]), create_projector(databases.projections[1])
    try:
        parallel.rebuild_in_partitions(
            partial(create_projector, databases.projections[0]),
            partial(LateAppend, str(tmp_path / "partition-0-appended"), databases.account), 2, batch_size=5)
        visible(store, total + 3)
        settled(parallel, one, databases.account)
        assert applied_count(parallel) == total + 3
        assert stored(parallel) == stored(one)
    finally:
        parallel.engine.dispose()
        one.engine.dispose()


class FailingSource(WrappedSource):
    """Partition 1 fails on its first fetch (``how``: raise, or end the process without a word)."""

    def __init__(self, how: str, account_url: str, partition: Partition | None, after: int | None) -> None:
        super().__init__(account_url, partition, after)
        self.how = how

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        if self.partition is not None and self.partition.index == 1:
            if self.how == "exit":
                os._exit(3)
            raise ConnectionError("the account database went away")
        return self.source.fetch(max_events, timeout_s)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "message"), [
    ("raise", r"partition 1 of 2 failed: ConnectionError: the account database went away"),
    ("exit", r"partition 1 of 2 ended without a report \(exit code 3\)"),
])
def test_a_failing_partition_fails_the_rebuild_loudly(databases: Databases, store: EventStore, how: str,
                                                      message: str) -> None:
    fill(store)
    projector = create_projector(databases.projections[0])
    try:
        with pytest.raises(RebuildFailed, match=message):
            projector.rebuild_in_partitions(partial(create_projector, databases.projections[0]),
                                            partial(FailingSource, how, databases.account), 2, batch_size=5)
        with pytest.raises(RebuildUnfinished):  # nothing follows the log into the half-rebuilt read model
            projector.position()
    finally:
        projector.engine.dispose()


def test_one_partition_is_a_rebuild_in_this_process(databases: Databases, store: EventStore) -> None:
    total = fill(store)
    projector = create_projector(databases.projections[0])
    try:
        made = []

        def make_source(partition, after):
            made.append((partition, after))
            return store_log_source(databases.account, partition, after)

        assert projector.rebuild_in_partitions(lambda: pytest.fail("no process is started"), make_source, 1) == total
        assert made == [(None, None)]
        with pytest.raises(ValueError, match="at least one partition"):
            projector.rebuild_in_partitions(lambda: projector, make_source, 0)
    finally:
        projector.engine.dispose()
