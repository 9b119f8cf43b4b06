"""Faults against real PostgreSQL and Kafka: after each, every committed event reached every projection
exactly once, and every webhook delivery arrived at least once, in order, duplicated only by its id.

1. The rating service, following Kafka or the store's log while events are appended, is SIGKILLed
   while a batch transaction is open, and restarted: its read model equals a clean replay.
2. The PostgreSQL cluster of the account store restarts (fast, then a crash) under writers, two
   account replicas with their relays and projections on both transports; then the cluster of the
   projections' databases crashes.
3. Partners whose endpoints time out, answer 500, close the connection or drip their answer, then
   recover, next to a healthy partner.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text
from standardwebhooks.webhooks import Webhook

from carbon import cloudevents
from carbon.account_client import AccountClient
from carbon.db import make_engine
from carbon.eventstore import EventStore
from carbon.eventstore.outbox import RELAY_LOCK_KEY
from carbon.kafka import ensure_topic
from carbon.projection import Projector
from carbon.projection_runtime import RunningProjection, replay, replay_in_partitions
from carbon.subscriptions import KafkaSource, StoreCatchUpSource
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.settings import DisclosureSettings
from services.rating.projection import create_projector as create_rating_projector
from services.rating.schema import PROJECTION_TABLES as RATING_TABLES
from tests.infra import docker_answers, fresh_database
from tests.kafka_infra import BOOTSTRAP_ENV, kafka_bootstrap
from tests.live import serve
from tests.support.account_load import AccountWriters, auth, grant, register, uscc, yearly_report
from tests.support.partners import Partner, start_partner
from tests.support.private_kafka import PrivateBroker
from tests.support.private_postgres import PrivateCluster
from tests.support.service_process import ServiceProcess
from tests.support.tally import TallyProjection, expected_tally, read_tally
from tests.support.tally import create_schema as create_tally_schema
from tests.support.topic import Record, read_topic

SECRET = "fault-suite-secret-long-enough-for-hs256-keys"
BANK = "bank-a"


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    """Poll until ``condition`` is truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(poll_s)
    return value


def brokers_come_from_the_local_script() -> bool:
    """Whether this environment runs Kafka with deploy/local/kafka.sh (not a remote broker or a container)."""
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        return False
    return not docker_answers([])


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of the module's own where deploy/local/kafka.sh runs brokers: a service's consumer group
    has a fixed name, and on a shared broker a concurrent run's members would join it (and stall its
    rebalances); elsewhere, the configured broker."""
    if not brokers_come_from_the_local_script():
        yield kafka_bootstrap()
        return
    broker = PrivateBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.run("stop")


def new_topic(bootstrap: str) -> str:
    name = f"carbon.test.faults.{uuid.uuid4().hex[:12]}"
    ensure_topic(bootstrap, name)
    return name


@contextmanager
def engine_for(url: str, pool_size: int = 2) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=pool_size)
    try:
        yield engine
    finally:
        engine.dispose()


def stream_versions(account: Engine) -> dict[str, int]:
    with account.connect() as conn:
        return dict(conn.execute(text("SELECT stream_id, version FROM streams WHERE version > 0")).all())


def checkpoints(projection_db: Engine, projection: str) -> dict[str, int]:
    with projection_db.connect() as conn:
        return dict(conn.execute(text("SELECT stream_id, version FROM projection_stream_checkpoints "
                                      "WHERE projection = :p"), {"p": projection}).all())


def applied_count(projection_db: Engine, projection: str) -> int:
    """Events the projection counted as applied (not skipped), kept in the same transaction as their effect."""
    with projection_db.connect() as conn:
        return conn.execute(text("SELECT coalesce(max(applied), 0) FROM projection_heads WHERE projection = :p"),
                            {"p": projection}).scalar_one()


def event_count(account: Engine) -> int:
    with account.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM events")).scalar_one()


def table_rows(engine: Engine, tables) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))] for t in tables}


# ---- 1. the rating service SIGKILLed mid-batch ------------------------------------------------


class BatchProbe:
    """Watches the rating database from outside: what has committed, and whether a batch is being written."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def state(self) -> tuple[int, bool]:
        """(events applied so far, whether another session holds uncommitted writes)."""
        with self.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT (SELECT applied FROM projection_heads WHERE projection = 'rating'),"
                " EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                "         AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL)")).one()
        return row[0] or 0, row[1]


def kill_mid_batch(service: ServiceProcess, probe: BatchProbe, timeout_s: float = 60) -> str:
    """SIGKILL the service as soon as its projection holds an open, written batch transaction.

    Returns ``rolled back`` when nothing committed between the sighting and the kill (the batch died
    with the process), ``committed`` when the batch won the race by a hair (and is handed over again).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        service.assert_alive()
        applied, writing = probe.state()
        if writing:
            service.kill()
            break
        assert time.monotonic() < deadline, "the projection was never seen applying a batch"
        time.sleep(0.002)
    wait_until(lambda: not probe.state()[1], 30, "the killed batch's transaction to end", poll_s=0.05)
    return "rolled back" if probe.state()[0] == applied else "committed"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("transport", [pytest.param("kafka", marks=pytest.mark.kafka), "store"])
def test_rating_service_killed_mid_batch_ends_equal_to_a_clean_replay(transport: str, postgres_server: str,
                                                                    request: pytest.FixtureRequest,
                                                                    tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        account_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_account"))
        rating_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_rating"))
        replay_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_replay"))
        parallel_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_parallel"))
        account_db = stack.enter_context(engine_for(account_url_db))
        rating_db = stack.enter_context(engine_for(rating_url_db))
        transport_env = {"CARBON_TRANSPORT": transport}
        if transport == "kafka":
            bootstrap = request.getfixturevalue("bootstrap")
            topic = new_topic(bootstrap)
            transport_env |= {"CARBON_KAFKA_BOOTSTRAP": bootstrap, "CARBON_KAFKA_TOPIC": topic}
        account_app = create_account_app(AccountSettings(database_url=account_url_db, jwt_secret=SECRET, **{
            k.removeprefix("CARBON_").lower(): v for k, v in transport_env.items()}))
        account_url = stack.enter_context(serve(account_app))
        client = stack.enter_context(httpx.Client(base_url=account_url, timeout=30))

        enterprises = [uscc(100 + n) for n in range(24)]
        for enterprise in enterprises:
            register(client, SECRET, enterprise)
            grant(client, SECRET, enterprise, BANK, ["rating:read"])
        writers = AccountWriters([account_url], SECRET, enterprises, threads=3)
        stack.callback(writers.stop)

        rating = ServiceProcess("services.rating.api:create_app", {
            "CARBON_DATABASE_URL": rating_url_db, "CARBON_JWT_SECRET": SECRET, "CARBON_ACCOUNT_URL": account_url,
            "CARBON_DATA_DIR": str(tmp_path / "rating"), **transport_env,
        }, tmp_path, "rating")
        stack.callback(rating.stop)
        probe = BatchProbe(rating_db)
        kills: list[str] = []
        try:
            # A backlog first, so the service's first batches are full ones.
            writers.start()
            wait_until(lambda: writers.events() >= 1200, 90, "a backlog of appended events")
            timings["backlog"] = time.monotonic() - started
            writers.pause_s = 0.05  # then a steady trickle, so the restarts do not fall far behind
            rating.start()
            kills.append(kill_mid_batch(rating, probe))
            # Restarted (on Kafka it rejoins its consumer group), once it is applying again, kill it again.
            for _ in range(3):
                rating.start()
                at_restart = applied_count(rating_db, "rating")
                wait_until(lambda: applied_count(rating_db, "rating") > at_restart, 90,
                           "the restarted service to apply events")
                kills.append(kill_mid_batch(rating, probe))
                if "rolled back" in kills and len(kills) >= 2:
                    break
            assert "rolled back" in kills, f"no kill landed inside an open batch: {kills}"
            rating.start()
            timings["kills"] = time.monotonic() - started
            more = writers.events() + 300
            wait_until(lambda: writers.events() >= more, 60, "more appends after the restarts")
            writers.stop()
            writers.join(120)
            assert not writers.refusals, writers.refusals[:5]

            target = stream_versions(account_db)
            wait_until(lambda: checkpoints(rating_db, "rating") == target, 120,
                       "the rating checkpoints to reach every stream's version", poll_s=0.5)
            timings["caught up"] = time.monotonic() - started
            rating.assert_alive()
        except BaseException:
            print(f"rating service log (run {rating.runs}):\n{rating.log_tail()}")
            raise

        total = event_count(account_db)
        assert sum(target.values()) == total
        assert applied_count(rating_db, "rating") == total, "an event was applied twice or not at all"

        # The service's read model equals a rebuild from scratch.
        projector = create_rating_projector(replay_url_db)
        stack.callback(projector.engine.dispose)
        log_client = AccountClient(account_url, jwt_secret=SECRET, service_name="rating")
        stack.callback(log_client.close)
        assert replay(projector, log_client) == total
        timings["replayed"] = time.monotonic() - started
        served, rebuilt = table_rows(rating_db, RATING_TABLES), table_rows(projector.engine, RATING_TABLES)
        for name in rebuilt:
            assert served[name] == rebuilt[name], f"{name} differs from the clean replay"
        # And so does a rebuild in parallel, each process paging its partition of the log over HTTP.
        parallel = create_rating_projector(parallel_url_db)
        stack.callback(parallel.engine.dispose)
        assert replay_in_partitions(parallel, partial(create_rating_projector, parallel_url_db),
                                    partial(AccountClient, account_url, jwt_secret=SECRET, service_name="rating"), 3) == total
        in_parallel = table_rows(parallel.engine, RATING_TABLES)
        for name in rebuilt:
            assert in_parallel[name] == rebuilt[name], f"{name} differs between the rebuilds in one and in three processes"
        assert len(rebuilt["ratings"]) > len(enterprises)

        # And it serves them: the current rating over HTTP is the replay's last one.
        latest = {r[0]: r for r in rebuilt["ratings"]}  # ordered by (enterprise, seq)
        with httpx.Client(base_url=rating.url, timeout=30) as api:
            for enterprise in enterprises[:3]:
                answer = api.get(f"/v1/ratings/{enterprise}", headers=auth(SECRET, "bank", BANK))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert (body["status"], body["grade"], body["score"]) == latest[enterprise][5:8]

    print(f"\nrating SIGKILL ({transport}): {total} events, kills {kills}; "
          + ", ".join(f"{k} at {v:.1f}s" for k, v in timings.items()))


# ---- 2. PostgreSQL restarted under load ---------------------------------------------------------

OUTAGE_S = 3.0
READ_SIDE_QUIET_S = 6.0  # longer than a projection's back-off after a few failed batches (0.2, 0.4, … 3.2 s)


def relay_lock_holders(account: Engine) -> int:
    """Sessions holding the relay's advisory lock on the account database (one relay may send)."""
    with account.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0"
            " AND objid = :k AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"k": RELAY_LOCK_KEY}).scalar_one()


def pending_outbox(account: Engine) -> int:
    with account.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()


def committed_envelopes(store: EventStore) -> list[dict]:
    out, after = [], None
    while page := store.read_all(after, limit=1000):
        out.extend(e.envelope() for e in page)
        after = page[-1].position
    return out


def check_topic(records: list[Record], committed: list[dict]) -> int:
    """Every committed event is on the topic as stored, first deliveries in stream order; returns duplicates."""
    by_id = {e["event_id"]: e for e in committed}
    seen: set[str] = set()
    last: dict[str, int] = {}
    for record in records:
        envelope = cloudevents.decode(record.value)
        assert envelope == by_id.get(envelope["event_id"]), f"not a committed event as stored: {envelope['event_id']}"
        if envelope["event_id"] in seen:
            continue
        seen.add(envelope["event_id"])
        stream = envelope["enterprise_id"]
        assert envelope["stream_version"] == last.get(stream, 0) + 1, (
            f"{stream}: version {envelope['stream_version']} first sent after version {last.get(stream, 0)}")
        last[stream] = envelope["stream_version"]
    missing = set(by_id) - seen
    assert not missing, f"{len(missing)} committed events are not on the topic"
    return len(records) - len(seen)


class ProjectionWatch:
    """A Tally projection followed by the product's runtime, and whether an outage was felt by it."""

    def __init__(self, engine: Engine, make_source: Callable[[], Any]) -> None:
        self.engine = engine
        create_tally_schema(engine)
        self.projector = Projector(TallyProjection(), engine)
        self.running = RunningProjection(self.projector, make_source)

    def failing(self) -> bool:
        return self.projector.last_error is not None


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.kafka
def test_postgresql_restarts_under_load(bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        # The account's database on one cluster, the projections' databases on another.
        write_side, read_side = PrivateCluster(), PrivateCluster()
        stack.callback(write_side.remove)
        stack.callback(read_side.remove)
        write_side.start()
        read_side.start()
        account_url_db = write_side.create_database("account")
        account_db = stack.enter_context(engine_for(account_url_db))

        # Two replicas of the account service, each with its relay (one of them leads).
        settings = AccountSettings(database_url=account_url_db, jwt_secret=SECRET, transport="kafka",
                                   kafka_bootstrap=bootstrap, kafka_topic=topic)
        replicas = [create_account_app(settings) for _ in range(2)]
        urls = [stack.enter_context(serve(app)) for app in replicas]
        relays = [app.state.relay for app in replicas]
        client = stack.enter_context(httpx.Client(base_url=urls[0], timeout=30))
        enterprises = [uscc(300 + n) for n in range(24)]
        for enterprise in enterprises:
            register(client, SECRET, enterprise)

        # Projections on both transports, their databases on the other cluster.
        via_kafka = ProjectionWatch(stack.enter_context(engine_for(read_side.create_database("tally_kafka"))),
                                    lambda: KafkaSource(bootstrap, f"tally-{uuid.uuid4().hex[:8]}", topic,
                                                        session_timeout_ms=10_000))
        via_store = ProjectionWatch(stack.enter_context(engine_for(read_side.create_database("tally_store"))),
                                    lambda: StoreCatchUpSource(
                                        AccountClient(urls[1], jwt_secret=SECRET, service_name="tally"),
                                        after=via_store.projector.position()))
        watches = [via_kafka, via_store]
        for watch in watches:
            watch.running.start()
            stack.callback(watch.running.stop)

        writers = AccountWriters(urls, SECRET, enterprises, threads=4, pause_s=0.02)
        stack.callback(writers.stop)

        def one_relay_sends(what: str) -> None:
            """Exactly one session holds the relay lock, and exactly one relay publishes."""
            wait_until(lambda: relay_lock_holders(account_db) == 1, 30, f"one relay to hold the lock {what}")
            wait_until(lambda: pending_outbox(account_db) < 200, 30, f"the relay to catch up {what}")
            before = [r.published_total for r in relays]
            time.sleep(1.5)
            sending = [i for i, r in enumerate(relays) if r.published_total > before[i]]
            assert relay_lock_holders(account_db) == 1 and len(sending) == 1, (
                f"{what}: relays {sending} published, {relay_lock_holders(account_db)} lock holder(s)")

        def write_side_outage(how: str) -> None:
            appended, failed = writers.events(), len(writers.failures)
            if how == "restart":
                write_side.stop()
            else:
                write_side.crash()
            time.sleep(OUTAGE_S)
            write_side.start()
            wait_until(lambda: writers.events() > appended + 100, 60, "writers to get through again")
            assert len(writers.failures) > failed, "no append failed while the account's database was down"

        def read_side_outage() -> set[int]:
            """The projections' database crashes; events keep coming for a while, then none for longer
            than the projections' longest back-off. Those events reach the sources while nothing can
            be applied, and no later event of their streams comes to reveal a gap: each must be
            fetched again once the database is back. Returns which projections met the outage."""
            appended, felt = writers.events(), set()
            read_side.crash()
            down = time.monotonic()
            # Events keep coming until both projections have tried to apply some and failed: a
            # projection learns of the outage only from a batch it cannot write (on a loaded machine
            # the Kafka consumer may be seconds late, e.g. rejoining its group), so 1.5 s at least,
            # and at most 45 s.
            while time.monotonic() < down + 1.5 or (felt != {0, 1} and time.monotonic() < down + 45):
                felt |= {i for i, w in enumerate(watches) if w.failing()}
                time.sleep(0.05)
            writers.stop()
            writers.join(120)
            assert writers.events() > appended, "nothing was appended while the read side was down"
            # At least one must have met it, or the fault was not exercised at all. A Kafka consumer
            # starved of the interpreter in this crowded process (two services, two relays, writers)
            # can be evicted from its group and miss the whole window; that path is covered
            # deterministically by tests/contract/test_subscriptions.py, and either way every event
            # must arrive once below.
            assert felt, "no projection noticed its database go"
            quiet = time.monotonic()
            while time.monotonic() < quiet + READ_SIDE_QUIET_S:  # no events for longer than any back-off
                time.sleep(0.05)
            read_side.start()
            return felt

        try:
            writers.start()
            wait_until(lambda: writers.events() >= 400, 60, "appends before the first outage")
            one_relay_sends("before any outage")
            write_side_outage("restart")
            timings["write side restarted"] = time.monotonic() - started
            one_relay_sends("after the restart")
            write_side_outage("crash")
            timings["write side crashed"] = time.monotonic() - started
            one_relay_sends("after the crash")
            met_outage = read_side_outage()
            timings["read side crashed"] = time.monotonic() - started

            wait_until(lambda: pending_outbox(account_db) == 0, 60, "the outbox to drain", poll_s=0.2)
            store = EventStore(account_db)
            committed = committed_envelopes(store)
            expected = expected_tally(committed)
            for watch, name in ((via_kafka, "the Kafka projection"), (via_store, "the store catch-up projection")):
                wait_until(lambda: read_tally(watch.engine) == expected, 60, f"{name} to apply every event",
                           poll_s=0.25)
            timings["projections caught up"] = time.monotonic() - started
        except BaseException:
            print(f"write side log:\n{write_side.log_tail()}\nread side log:\n{read_side.log_tail()}")
            raise

        # Nothing half-written, nothing twice: each append is in the store once, whole, as answered.
        assert not writers.refusals, f"answers that are not clean failures: {writers.refusals[:5]}"
        versions = stream_versions(account_db)
        assert sum(versions.values()) == len(committed) == event_count(account_db)
        for enterprise in enterprises:
            report = store.verify_chain(enterprise)
            assert report.ok and report.events_checked == versions[enterprise], (enterprise, report)
        by_key: dict[str, list[int]] = {}
        for envelope in committed:
            key = envelope["metadata"].get("idempotency_key")
            if key:
                by_key.setdefault(key, []).append(envelope["stream_version"])
        answered = {a.key: list(range(a.first_version, a.last_version + 1)) for a in writers.done}
        assert by_key == answered, "the store holds appends other than those answered, or parts of them"

        # Every committed event is on the topic and applied exactly once by both projections.
        duplicates = check_topic(read_topic(bootstrap, topic, timeout_s=60), committed)
        for watch in watches:
            assert applied_count(watch.engine, "tally") == len(committed)

    print(f"\nPostgreSQL outages: {len(committed)} events in {len(answered)} appends, "
          f"{len(writers.failures)} failed attempts retried, {duplicates} duplicate records; "
          f"read-side outage met by the {' and '.join(['Kafka', 'store'][i] for i in sorted(met_outage))} "
          "projection(s); " + ", ".join(f"{k} at {v:.1f}s" for k, v in timings.items()))


# ---- 3. partners that time out, fail, hang up or drip -------------------------------------------

WEBHOOK_TIMEOUT_S = 0.5
MAX_ATTEMPTS = 5
FAILING_FOR_S = 4.0  # more than the attempt bound takes for a partner answering 500 or hanging up
PARTNER_MODES = ("healthy", "timeout", "error", "close", "drip")


@pytest.mark.slow
@pytest.mark.postgres
def test_misbehaving_partners_get_everything_in_order_and_delay_no_one_else(postgres_server: str,
                                                                            tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        account_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_account"))
        disclosure_url_db = stack.enter_context(fresh_database(postgres_server, "carbon_fault_disclosure"))
        account_url = stack.enter_context(serve(create_account_app(AccountSettings(
            database_url=account_url_db, jwt_secret=SECRET))))
        disclosure_app = create_disclosure_app(DisclosureSettings(
            database_url=disclosure_url_db, jwt_secret=SECRET, account_url=account_url, transport="store",
            webhook_allow_private=True, webhook_timeout_s=WEBHOOK_TIMEOUT_S, webhook_max_attempts=MAX_ATTEMPTS,
            webhook_backoff_base_s=0.1, webhook_backoff_max_s=0.4, webhook_poll_interval_s=0.05,
            # One worker per subscription: should a failing partner hold two, the healthy one would wait.
            webhook_workers=len(PARTNER_MODES)))
        disclosure_url = stack.enter_context(serve(disclosure_app))
        account = stack.enter_context(httpx.Client(base_url=account_url, timeout=30))
        disclosure = stack.enter_context(httpx.Client(base_url=disclosure_url, timeout=30))

        partners = {mode: start_partner(stack, Partner(mode, hang_s=6 * WEBHOOK_TIMEOUT_S))
                    for mode in PARTNER_MODES}
        names = {mode: f"partner-{mode}" for mode in partners}
        enterprises = [uscc(500 + n) for n in range(4)]
        for enterprise in enterprises:
            register(account, SECRET, enterprise)
            for name in names.values():
                grant(account, SECRET, enterprise, name, ["events:subscribe"])
        subscriptions: dict[str, tuple[str, str]] = {}
        for mode, partner in partners.items():
            created = disclosure.post("/v1/subscriptions", headers=auth(SECRET, "partner", names[mode]), json={
                "callback_url": partner.url, "event_types": ["ActivityReported", "EmissionRecorded"]})
            assert created.status_code == 201, created.text
            subscriptions[mode] = (created.json()["subscription_id"], created.json()["secret"])

        # Reports keep coming while four of the five partners misbehave, each in its own way.
        started = time.monotonic()
        appended_at: dict[tuple[str, int], float] = {}
        for k in range(6):
            for enterprise in enterprises:
                response = account.post(f"/v1/enterprises/{enterprise}/events", json={
                    "expected_version": None, "events": yearly_report(enterprise, k)},
                    headers=auth(SECRET, "enterprise", enterprise))
                assert response.status_code == 201, response.text
                done = time.monotonic()
                for version in range(response.json()["first_version"], response.json()["last_version"] + 1):
                    appended_at[(enterprise, version)] = done
            time.sleep(0.4)
        reports = ("ActivityReported", "EmissionRecorded")
        expected = {e: [env for env in read_stream(account, e) if env["type"] in reports] for e in enterprises}
        wanted = sum(len(v) for v in expected.values())
        assert wanted == len(appended_at)

        # The healthy partner is served as if the others were not there.
        wait_until(lambda: len(partners["healthy"].acknowledged()) >= wanted, 20, "the healthy partner's events")
        timings["healthy partner served"] = time.monotonic() - started
        lags = sorted(r.acknowledged_at - appended_at[(r.envelope["enterprise_id"], r.envelope["stream_version"])]
                      for r in partners["healthy"].acknowledged())
        assert lags[-1] < 2.5, f"the healthy partner waited up to {lags[-1]:.1f}s for an event"
        for mode in ("timeout", "error", "close"):
            assert partners[mode].all(), f"the {mode} partner was never tried"

        # They recover only once the healthy partner has everything: it was served while they failed.
        wait_until(lambda: time.monotonic() - started >= FAILING_FOR_S, 10, "the end of the failures")
        for partner in partners.values():
            partner.recover()
        timings["partners recovered"] = time.monotonic() - started

        # Each partner now takes what reaches it, and replays what was dead-lettered meanwhile.
        replayed = dict.fromkeys(partners, 0)

        def all_delivered() -> bool:
            finished = True
            for mode, (subscription_id, _) in subscriptions.items():
                rows = deliveries(disclosure, subscription_id, names[mode])
                if any(d["status"] == "dead" for d in rows):
                    answer = disclosure.post(f"/v1/subscriptions/{subscription_id}/deliveries/replay",
                                             headers=auth(SECRET, "partner", names[mode]))
                    assert answer.status_code == 202, answer.text
                    replayed[mode] += answer.json()["replayed"]
                finished &= len(rows) == wanted and all(d["status"] == "delivered" for d in rows)
            return finished

        wait_until(all_delivered, 60, "every delivery of every partner to be delivered", poll_s=0.25)
        timings["all delivered"] = time.monotonic() - started
        time.sleep(0.5)  # nothing more may arrive

        for mode, partner in partners.items():
            check_partner(mode, partner, subscriptions[mode][1], expected)
        # Each attempt is bounded as a whole, however the partner spreads its answer out.
        drips = [r.ended - r.arrived for r in partners["drip"].all() if r.mode == "drip"]
        assert drips and max(drips) < WEBHOOK_TIMEOUT_S + 1.0, (
            f"a dripping answer kept the sender for {max(drips):.1f}s (timeout {WEBHOOK_TIMEOUT_S}s)")
        assert replayed["error"] and replayed["close"], f"no dead letter to replay: {replayed}"
        assert replayed["healthy"] == 0

    duplicates = {m: len([r for r in p.all() if r.processed]) - wanted for m, p in partners.items()}
    print(f"\npartners: {wanted} events each; dead letters replayed {replayed}; events processed twice {duplicates}; "
          f"healthy lag max {lags[-1]:.2f}s, median {lags[len(lags) // 2]:.2f}s; "
          + ", ".join(f"{k} at {v:.1f}s" for k, v in timings.items()))


def read_stream(account: httpx.Client, enterprise: str) -> list[dict]:
    response = account.get(f"/v1/enterprises/{enterprise}/events", params={"limit": 1000},
                           headers=auth(SECRET, "enterprise", enterprise))
    assert response.status_code == 200, response.text
    return response.json()["events"]


def deliveries(disclosure: httpx.Client, subscription_id: str, partner: str) -> list[dict]:
    response = disclosure.get(f"/v1/subscriptions/{subscription_id}/deliveries", params={"limit": 500},
                              headers=auth(SECRET, "partner", partner))
    assert response.status_code == 200, response.text
    assert response.json()["next"] is None
    return response.json()["deliveries"]


def check_partner(mode: str, partner: Partner, secret: str, expected: dict[str, list[dict]]) -> None:
    """What the partner saw: signed envelopes as stored, each acknowledged exactly once; any duplicate
    carries the same webhook-id; no event attempted before every earlier one of its enterprise was
    acknowledged; nothing missing."""
    stored = {e["event_id"]: e for events in expected.values() for e in events}
    acknowledged: dict[str, float] = {}
    for request in sorted(partner.all(), key=lambda r: r.arrived):
        Webhook(secret).verify(request.body, request.headers)
        envelope = request.envelope
        assert request.headers["webhook-id"] == envelope["event_id"], f"{mode}: webhook-id is not the event id"
        assert stored.get(envelope["event_id"]) == envelope, f"{mode}: not an expected event as stored"
        earlier = [e["event_id"] for e in expected[envelope["enterprise_id"]]
                   if e["stream_version"] < envelope["stream_version"]]
        late = [i for i in earlier if acknowledged.get(i, float("inf")) > request.arrived]
        assert not late, f"{mode}: version {envelope['stream_version']} attempted before {len(late)} earlier event(s)"
        if request.acknowledged_at is not None:
            assert envelope["event_id"] not in acknowledged, f"{mode}: an event acknowledged twice"
            acknowledged[envelope["event_id"]] = request.acknowledged_at
    assert set(acknowledged) == set(stored), f"{mode}: {len(set(stored) - set(acknowledged))} events never delivered"
