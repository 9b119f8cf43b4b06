"""The outbox relay against a real broker and a real PostgreSQL: faults, ordering, a foreign reader.

What SPEC §2 promises for the account's events on Kafka: nothing committed is lost, nothing
uncommitted is sent, each enterprise's events leave in stream order, and a crash may re-send (never
reorder) what was already sent, which the projections' checkpoints turn into a no-op.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from carbon import cloudevents
from carbon.db import make_engine
from carbon.eventstore import EventStore, NewEvent, event_hash, migrate
from carbon.eventstore.outbox import OutboxRelay
from carbon.kafka import KafkaPublisher, PublishFailed, ensure_topic
from carbon.projection import Projector
from carbon.subscriptions import KafkaSource
from contracts.types import uscc_check_character
from tests.infra import docker_answers
from tests.kafka_infra import BOOTSTRAP_ENV, kafka_bootstrap
from tests.support.kcat import kcat_path
from tests.support.private_kafka import PrivateBroker
from tests.support.service_process import ChildProcess
from tests.support.tally import TallyProjection, create_schema, expected_tally, read_tally
from tests.support.topic import Record, TopicEnds, read_topic

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

CONTENT_TYPE = b"application/cloudevents+json"
LOCAL_PORT = os.environ.get("CARBON_KAFKA_PORT", "9092")
LOCAL_BOOTSTRAP = f"127.0.0.1:{LOCAL_PORT}"


def brokers_come_from_the_local_script() -> bool:
    """Whether this environment runs Kafka with deploy/local/kafka.sh (not a remote broker or a container)."""
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        return configured in (LOCAL_BOOTSTRAP, f"localhost:{LOCAL_PORT}")
    return not docker_answers([])  # with Docker, kafka_bootstrap() runs a container instead


# The outage tests stop and start a broker, one of their own (see tests/support/private_kafka.py).
needs_the_local_script = pytest.mark.skipif(
    not brokers_come_from_the_local_script(),
    reason="stops and starts a broker run by deploy/local/kafka.sh; this environment uses "
           "CARBON_KAFKA_BOOTSTRAP elsewhere or a container",
)


def enterprise_id(n: int) -> str:
    first17 = f"9144030{n:010d}"
    return first17 + uscc_check_character(first17)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Poll until ``condition`` holds; fail naming ``what`` after ``timeout_s``. Returns the seconds waited."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < timeout_s, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(poll_s)
    return time.monotonic() - start


def outbox_counts(engine: Engine) -> tuple[int, int]:
    """(rows, pending) of the outbox."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox")).one()
    return row[0], row[1]


def all_envelopes(store: EventStore) -> list[dict]:
    out, after = [], None
    while page := store.read_all(after, limit=1000):
        out.extend(e.envelope() for e in page)
        after = page[-1].position
    return out


def global_log(store: EventStore, count: int, timeout_s: float = 60) -> list[dict]:
    """The whole global log once it shows ``count`` events.

    A transaction still open anywhere on the server (other tests, other databases) holds back what
    the log shows, by design: wait for it rather than mistake it for a loss.
    """
    log: list[dict] = []

    def complete() -> bool:
        nonlocal log
        log = all_envelopes(store)
        return len(log) >= count

    wait_until(complete, timeout_s, f"the global log to show {count} events", poll_s=0.5)
    assert len(log) == count
    return log


@pytest.fixture
def store_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url, pool_size=8)
    migrate(engine)
    yield engine
    engine.dispose()


def new_topic(bootstrap: str) -> str:
    name = f"carbon.test.outbox.{uuid.uuid4().hex[:12]}"
    ensure_topic(bootstrap, name)
    return name


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.run("stop")


@pytest.fixture
def own_broker(private_broker: PrivateBroker) -> PrivateBroker:
    private_broker.start()  # a no-op when running; a test that failed mid-outage may have left it stopped
    return private_broker


# ---- the relay as its own process ------------------------------------------------------------


class RelayProcess(ChildProcess):
    """``python -m services.account.relay``, as operators run it, with its log kept for failures."""

    def __init__(self, database_url: str, bootstrap: str, topic: str, log_dir: Path) -> None:
        super().__init__([sys.executable, "-m", "services.account.relay"], {
            "CARBON_DATABASE_URL": database_url, "CARBON_KAFKA_BOOTSTRAP": bootstrap, "CARBON_KAFKA_TOPIC": topic,
            "CARBON_DATA_DIR": str(log_dir / "var")}, log_dir, "relay")


# ---- writers that append only as far as the test allows --------------------------------------


class Writers:
    """Threads appending planned chunks through the store; ``allow(n)`` lets the total reach at least ``n``."""

    def __init__(self, store: EventStore, chunks: list[tuple[str, int]], threads: int) -> None:
        self.store, self.total = store, sum(n for _, n in chunks)
        self.todo: queue.Queue[tuple[str, int]] = queue.Queue()
        for chunk in chunks:
            self.todo.put(chunk)
        self.cond = threading.Condition()
        self.allowed = self.claimed = self.appended = 0
        self.stopped = False
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def allow(self, events: int) -> None:
        with self.cond:
            self.allowed = min(events, self.total)
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return self.appended

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def _run(self, writer: int) -> None:
        seq = 0
        try:
            while True:
                try:
                    stream, n = self.todo.get_nowait()
                except queue.Empty:
                    return
                with self.cond:
                    # A chunk may overshoot the limit by two events, so the total always reaches it.
                    # Bounded: the test's own deadlines fail first; this only keeps a thread from hanging.
                    if not self.cond.wait_for(lambda: self.stopped or self.claimed < self.allowed, timeout=300):
                        raise TimeoutError("writer was never allowed to continue")
                    if self.stopped:
                        return
                    self.claimed += n
                events = [NewEvent("Noted", {"writer": writer, "seq": seq + i}) for i in range(n)]
                seq += n
                self.store.append_events(stream, events)
                with self.cond:
                    self.appended += n
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.errors.append(exc)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not self.errors, f"a writer failed: {self.errors[0]!r}"
        assert not any(t.is_alive() for t in self.threads), "the writers did not finish in time"


def plan_chunks(streams: list[str], per_stream: int, rng: random.Random, hot: int = 5) -> list[tuple[str, int]]:
    """One to three events per append, a few streams at a time, so that writers meet on the same stream."""
    chunks = []
    for first in range(0, len(streams), hot):
        group = []
        for stream in streams[first:first + hot]:
            left = per_stream
            while left:
                n = min(left, rng.randint(1, 3))
                group.append((stream, n))
                left -= n
        rng.shuffle(group)
        chunks.extend(group)
    return chunks


# ---- 1. outage and crash ---------------------------------------------------------------------

STREAMS, PER_STREAM, WRITER_THREADS = 200, 50, 4


@needs_the_local_script
def test_outbox_survives_broker_outage_and_relay_crash(store_engine: Engine, postgres_url: str,
                                                        own_broker: PrivateBroker, tmp_path: Path) -> None:
    bootstrap = own_broker.bootstrap
    name = new_topic(bootstrap)
    store = EventStore(store_engine)
    streams = [enterprise_id(n) for n in range(STREAMS)]
    writers = Writers(store, plan_chunks(streams, PER_STREAM, random.Random(7202)), WRITER_THREADS)
    total = writers.total
    assert total == STREAMS * PER_STREAM

    relay = RelayProcess(postgres_url, bootstrap, name, tmp_path)
    timings: dict[str, float] = {}
    started = time.monotonic()

    def published() -> int:
        rows, pending = outbox_counts(store_engine)
        return rows - pending

    try:
        relay.start()
        writers.allow(3000)
        writers.start()
        wait_until(lambda: writers.count() >= 1500 and published() >= 500, 60, "the relay to publish")
        relay.assert_alive()

        # The broker goes away while events keep being appended.
        own_broker.stop()
        before_outage = writers.count()
        writers.allow(5000)
        time.sleep(4)
        assert writers.count() > before_outage, "nothing was appended while the broker was down"
        _, pending_in_outage = outbox_counts(store_engine)
        assert pending_in_outage > 0
        relay.assert_alive()
        own_broker.start()
        back = published()
        writers.allow(6500)
        timings["1000 more published after broker start (s)"] = wait_until(
            lambda: published() > back + 1000, 90, "the relay to resume after the broker came back")

        # The relay dies by SIGKILL once the broker holds records it has not marked yet: those are
        # what a crash re-sends. A kill that lands after the mark strands nothing: crash it again.
        ends = TopicEnds(bootstrap, name)
        try:
            budget, stranded, kills = 6500, 0, 0
            while not stranded:
                assert kills < 8, "no kill landed between the broker's append and the relay's mark"
                wait_until(lambda: writers.count() >= budget and outbox_counts(store_engine)[1] == 0, 60,
                           "the relay to catch up")
                resent_before = ends.total() - outbox_counts(store_engine)[0]
                budget += 300
                writers.allow(budget)
                unmarked, deadline = 0, time.monotonic() + 20
                while unmarked <= 0 and time.monotonic() < deadline:
                    # No sleep: the window between the broker's append and the relay's mark is short.
                    unmarked = ends.total() - published() - resent_before
                relay.assert_alive()
                relay.kill()
                kills += 1
                stranded = ends.total() - published() - resent_before
                if not stranded:
                    relay.start()
        finally:
            ends.close()
        writers.allow(budget + 500)  # appended while no relay runs
        time.sleep(1)
        relay.start()
        writers.allow(total)
        writers.join(120)

        timings["drain after last append (s)"] = wait_until(
            lambda: outbox_counts(store_engine)[1] == 0, 90, "the outbox to have no pending rows", poll_s=0.2)
        relay.assert_alive()
        assert OutboxRelay(store_engine, KafkaPublisher(bootstrap, name)).pending() == 0
    except BaseException:
        print(f"relay log (run {relay.runs}):\n{relay.log_tail()}")
        raise
    finally:
        writers.stop()
        relay.stop()
    timings["append + faults + drain (s)"] = time.monotonic() - started

    committed = global_log(store, total)
    by_id = {e["event_id"]: e for e in committed}
    # The store's own promise the relay builds on: in the global log each stream reads 1, 2, 3, …
    last: dict[str, int] = {}
    for e in committed:
        previous = last.get(e["enterprise_id"], 0)
        assert e["stream_version"] == previous + 1, (
            f"global log: {e['enterprise_id']} version {e['stream_version']} follows version {previous}")
        last[e["enterprise_id"]] = e["stream_version"]

    read_start = time.monotonic()
    records = read_topic(bootstrap, name, timeout_s=60)
    timings["read topic (s)"] = time.monotonic() - read_start
    on_topic = check_records(records, by_id)
    duplicates = len(records) - len(by_id)
    assert on_topic == set(by_id), f"{len(set(by_id) - on_topic)} committed events are not on the topic"

    # A consumer-group projection over the same topic: each event applied once, in stream order.
    project_start = time.monotonic()
    applied, skipped = project_from_topic(bootstrap, name, tmp_path, expected_tally(committed), total)
    timings["projection (s)"] = time.monotonic() - project_start
    assert (applied, skipped) == (total, duplicates)
    assert duplicates >= stranded, "the records stranded by the crash were not re-sent"

    print(f"\noutbox under faults: {total} events, {len(records)} records, {duplicates} duplicates "
          f"({stranded} stranded by the SIGKILL, {kills} kill(s)); "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def check_records(records: list[Record], by_id: dict[str, dict]) -> set[str]:
    """Check every record against the store; return the event ids seen.

    Per enterprise (= key = one partition), taking only the first record of each event in offset
    order, the stream versions read exactly 1, 2, …, n: a crash may re-send events already on the
    topic, but no event is delivered for the first time before an earlier event of its stream.
    """
    first_versions: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[str, int] = {}
    seen: set[str] = set()
    for record in records:
        envelope = cloudevents.decode(record.value)
        assert envelope == by_id.get(envelope["event_id"]), f"not a committed event as stored: {envelope}"
        assert record.key == envelope["enterprise_id"].encode()
        assert ("content-type", CONTENT_TYPE) in record.headers, record.headers
        assert partition_of.setdefault(record.key, record.partition) == record.partition, "a key on two partitions"
        if envelope["event_id"] not in seen:
            seen.add(envelope["event_id"])
            first_versions[envelope["enterprise_id"]].append(envelope["stream_version"])
    for stream, versions in first_versions.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream}: first deliveries out of order {versions}"
    return seen


def project_from_topic(bootstrap: str, topic: str, tmp_path: Path, expected: dict, total: int) -> tuple[int, int]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tally.db'}")
    create_schema(engine)
    projector = Projector(TallyProjection(), engine)
    source = KafkaSource(bootstrap, f"tally-{uuid.uuid4().hex[:8]}", topic, session_timeout_ms=6000)
    applied = skipped = 0
    try:
        deadline = time.monotonic() + 120
        while applied < total:
            assert time.monotonic() < deadline, f"the projection applied {applied} of {total} events in time"
            result = projector.handle(source.fetch(1000, timeout_s=0.5))
            source.acknowledge()
            applied, skipped = applied + result.applied, skipped + result.skipped
        # Whatever is left on the topic can only be redeliveries.
        while batch := source.fetch(1000, timeout_s=1.0):
            assert time.monotonic() < deadline, "the topic did not run dry"
            result = projector.handle(batch)
            source.acknowledge()
            applied, skipped = applied + result.applied, skipped + result.skipped
        assert read_tally(engine) == expected
        return applied, skipped
    finally:
        source.close()
        engine.dispose()


@needs_the_local_script
def test_publisher_gives_up_cleanly_when_the_broker_is_away(store_engine: Engine, own_broker: PrivateBroker) -> None:
    """A batch the broker cannot take fails within the ack timeout and leaves no producer behind."""
    bootstrap = own_broker.bootstrap
    name = new_topic(bootstrap)
    store = EventStore(store_engine)
    store.append_events(enterprise_id(9100), [NewEvent("Noted", {"n": n}) for n in range(3)])
    envelopes = global_log(store, 3)
    publisher = KafkaPublisher(bootstrap, name, ack_timeout_s=3)
    try:
        publisher.publish(envelopes)
        producer_threads = [t for t in threading.enumerate() if t.name.startswith("carbon-outbox-relay")]
        assert producer_threads, "expected the producer's I/O thread"
        own_broker.stop()
        try:
            started = time.monotonic()
            with pytest.raises(PublishFailed):
                publisher.publish(envelopes)
            assert time.monotonic() - started < 3 + 5 + 2
            # The failed producer is closed for good: its I/O thread ends and nothing resends the batch.
            wait_until(lambda: not any(t.is_alive() for t in producer_threads), 10, "the producer's thread to end")
            gc.collect()  # a half-closed producer would raise from its finaliser here
        finally:
            own_broker.start()
        publisher.publish(envelopes)  # a new producer once the broker is back
    finally:
        publisher.close()
    assert len(read_topic(bootstrap, name, timeout_s=30)) == 2 * len(envelopes)


# ---- 2. a partner's own client ---------------------------------------------------------------


def test_foreign_client_reads_the_cloudevents(store_engine: Engine) -> None:
    kcat = kcat_path()
    bootstrap = kafka_bootstrap()
    name = new_topic(bootstrap)
    store = EventStore(store_engine)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    enterprises = [enterprise_id(9000 + n) for n in range(3)]
    for n, enterprise in enumerate(enterprises):
        store.append_events(enterprise, [
            NewEvent("EnterpriseRegistered", {"name": f"Enterprise {n}", "industry": "C3011", "region": "510100"}),
            NewEvent("ActivityReported", {"period": "2024-Q1", "revenue_10k_cny": "120.5",
                                          "output": {"quantity": "10", "unit": "t"}},
                     metadata={"actor": {"sub": enterprise, "role": "enterprise"}, "traceparent": traceparent}),
        ])
    committed = {e["event_id"]: e for e in global_log(store, 2 * len(enterprises))}

    relay = OutboxRelay(store_engine, KafkaPublisher(bootstrap, name))
    thread = relay.start()
    try:
        wait_until(lambda: relay.pending() == 0, 60, "the relay to publish")
    finally:
        relay.stop()
        thread.join(15)
    assert not thread.is_alive()

    done = subprocess.run([kcat, "-C", "-b", bootstrap, "-t", name, "-o", "beginning", "-e", "-J", "-q"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(messages) == len(committed)
    seen = set()
    for message in messages:
        event = json.loads(message["payload"])  # structured mode: the whole CloudEvent is the value
        envelope = event["data"]
        assert event["specversion"] == "1.0"
        assert event["id"] == envelope["event_id"] and envelope["event_id"] in committed
        assert event["source"] == f"/enterprises/{envelope['enterprise_id']}"
        assert event["type"] == envelope["type"]
        assert event["datacontenttype"] == "application/json"
        assert envelope == committed[envelope["event_id"]]
        assert event_hash(envelope) == envelope["hash"]
        assert message["key"] == envelope["enterprise_id"]
        # kcat lists headers as [name, value, name, value, …].
        headers = dict(zip(message["headers"][::2], message["headers"][1::2], strict=True))
        assert headers["content-type"] == CONTENT_TYPE.decode()
        if envelope["metadata"].get("traceparent"):
            # The record carries the relay's producer span: the event's trace, one span further on.
            assert headers["traceparent"].split("-")[1] == traceparent.split("-")[1]
            assert event["traceparent"] == traceparent
        seen.add(envelope["event_id"])
    assert seen == set(committed)
    # Per enterprise the partner sees the chain in order: each prev_hash is the hash before it.
    by_stream: dict[str, list[dict]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m["partition"], m["offset"])):
        data = json.loads(message["payload"])["data"]
        by_stream[data["enterprise_id"]].append(data)
    assert Counter(len(v) for v in by_stream.values()) == Counter({2: len(enterprises)})
    for chain in by_stream.values():
        assert [e["stream_version"] for e in chain] == [1, 2]
        assert chain[1]["prev_hash"] == chain[0]["hash"]
