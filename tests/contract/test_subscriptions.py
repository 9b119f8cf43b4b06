"""The subscription contract, the same suite over both transports (store catch-up and Kafka).

Order per enterprise, no loss, no second effect on redelivery, resume after a restart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from carbon.account_client import AccountClient
from carbon.auth import mint_token
from carbon.db import make_engine
from carbon.projection import GapDetected, Projector
from carbon.subscriptions import EventSource, KafkaSource, StoreCatchUpSource
from contracts.types import uscc_check_character
from services.account.api import create_app
from services.account.settings import AccountSettings
from tests.live import serve
from tests.support.tally import TallyProjection, create_schema, expected_tally, read_tally

SECRET = "subscription-suite-secret-long-enough-for-hs256"


def uscc(n: int) -> str:
    first17 = f"9151010{n:010d}"
    return first17 + uscc_check_character(first17)


@dataclass
class Platform:
    base_url: str
    make_source: Callable[[Projector], EventSource]
    topic: str | None

    def headers(self, role: str, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}"}

    def register(self, count: int, offset: int = 0) -> list[str]:
        ids = [uscc(offset + i) for i in range(count)]
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            for enterprise in ids:
                body = {"uscc": enterprise, "name": f"Enterprise {enterprise}", "industry": "C3011", "region": "510100"}
                assert http.post("/v1/enterprises", json=body, headers=self.headers("operator", "ops")).status_code == 201
        return ids

    def append(self, enterprises: list[str], per_enterprise: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            for round_ in range(per_enterprise):
                for enterprise in enterprises:  # interleaved across streams, like real traffic
                    body = {"expected_version": None, "events": [{"type": "ActivityReported", "data": {
                        "period": f"2024-{round_ % 12 + 1:02d}", "revenue_10k_cny": str(100 + round_),
                        "output": {"quantity": "10", "unit": "t"}}}]}
                    response = http.post(f"/v1/enterprises/{enterprise}/events", json=body,
                                         headers=self.headers("enterprise", enterprise))
                    assert response.status_code == 201, response.text

    def all_events(self) -> list[dict]:
        client = AccountClient(self.base_url, jwt_secret=SECRET, service_name="tests")
        try:
            out, after = [], None
            while page := client.read_log(after):
                out.extend(page)
                after = page[-1]["position"]
            return out
        finally:
            client.close()


@pytest.fixture(params=["store", "kafka"])
def platform(request: pytest.FixtureRequest, tmp_path) -> Iterator[Platform]:
    settings = {"database_url": f"sqlite:///{tmp_path / 'account.db'}", "jwt_secret": SECRET}
    topic = None
    if request.param == "kafka":
        request.applymarker(pytest.mark.kafka)
        from tests.kafka_infra import kafka_bootstrap

        bootstrap = kafka_bootstrap()
        topic = f"carbon.test.{uuid.uuid4().hex[:12]}"
        settings.update(transport="kafka", kafka_bootstrap=bootstrap, kafka_topic=topic)
    app = create_app(AccountSettings(**settings))
    with serve(app) as base_url:
        if request.param == "store":
            def make_source(projector: Projector) -> EventSource:
                client = AccountClient(base_url, jwt_secret=SECRET, service_name="tests")
                return StoreCatchUpSource(client, after=projector.position())
        else:
            group = f"tally-{uuid.uuid4().hex[:8]}"

            def make_source(projector: Projector) -> EventSource:
                return KafkaSource(bootstrap, group, topic, session_timeout_ms=6000)
        yield Platform(base_url, make_source, topic)


@pytest.fixture
def projector(tmp_path) -> Iterator[Projector]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tally.db'}")
    create_schema(engine)
    yield Projector(TallyProjection(), engine)
    engine.dispose()


def drain_until(projector: Projector, source: EventSource, done: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the projection did not catch up in time"
        batch = source.fetch(200, timeout_s=0.5)
        projector.handle(batch)
        source.acknowledge()


def test_every_event_once_in_stream_order(platform: Platform, projector: Projector) -> None:
    enterprises = platform.register(6)
    platform.append(enterprises, 15)
    expected = expected_tally(platform.all_events())
    assert sum(count for count, _ in expected.values()) == 6 * 16
    source = platform.make_source(projector)
    try:
        drain_until(projector, source, lambda: read_tally(projector.engine) == expected)
    finally:
        source.close()
    assert read_tally(projector.engine) == expected


def test_redelivery_has_no_second_effect(platform: Platform, projector: Projector) -> None:
    enterprises = platform.register(3)
    platform.append(enterprises, 5)
    expected = expected_tally(platform.all_events())
    source = platform.make_source(projector)
    try:
        batch: list[dict] = []
        deadline = time.monotonic() + 60
        while len(batch) < 18:  # everything, before acknowledging any of it
            assert time.monotonic() < deadline
            batch.extend(source.fetch(200, timeout_s=0.5))
        first = projector.handle(batch)
        assert first.applied == 18
        again = projector.handle(batch)  # the same batch, delivered a second time
        assert (again.applied, again.skipped) == (0, 18)
    finally:
        source.close()  # closed without acknowledging: the transport will hand it all over again
    source = platform.make_source(projector)
    try:
        redelivered = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(redelivered) < (18 if platform.topic else 0):
            redelivered.extend(source.fetch(200, timeout_s=0.5))
        assert projector.handle(redelivered).applied == 0
    finally:
        source.close()
    assert read_tally(projector.engine) == expected


def test_resumes_from_the_last_position_after_restart(platform: Platform, projector: Projector) -> None:
    enterprises = platform.register(4)
    platform.append(enterprises, 5)
    source = platform.make_source(projector)
    try:
        drain_until(projector, source, lambda: expected_tally(platform.all_events()) == read_tally(projector.engine))
    finally:
        source.close()
    applied_before = sum(c for c, _ in read_tally(projector.engine).values())
    platform.append(enterprises, 3)
    expected = expected_tally(platform.all_events())
    source = platform.make_source(projector)  # a restarted consumer
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while read_tally(projector.engine) != expected:
            assert time.monotonic() < deadline
            batch = source.fetch(200, timeout_s=0.5)
            result = projector.handle(batch)
            seen += result.applied + result.skipped
            source.acknowledge()
    finally:
        source.close()
    assert sum(c for c, _ in read_tally(projector.engine).values()) == applied_before + 12
    assert seen == 12  # it resumed after what it had: nothing old was handed over again


def test_a_gap_is_refused_and_nothing_of_the_batch_is_applied(projector: Projector) -> None:
    def envelope(version: int, position: int) -> dict:
        return {"enterprise_id": "E", "stream_version": version, "position": position, "hash": f"{version:064d}"}

    projector.handle([envelope(1, 10)])
    with pytest.raises(GapDetected):
        projector.handle([envelope(2, 11), envelope(4, 13)])
    assert read_tally(projector.engine) == {"E": (1, expected_tally([envelope(1, 10)])["E"][1])}
    assert projector.position() == 10


def test_reset_forgets_everything(projector: Projector) -> None:
    projector.handle([{"enterprise_id": "E", "stream_version": 1, "position": 1, "hash": "a" * 64}])
    projector.reset()
    assert read_tally(projector.engine) == {} and projector.position() is None


class FailingTally(TallyProjection):
    """The tally whose database is "down" (every apply raises) until ``back`` is set."""

    def __init__(self) -> None:
        self.back = False
        self.refused = 0

    def apply(self, conn, envelope: dict) -> None:
        if not self.back:
            self.refused += 1
            raise ConnectionError("the projection's database is down")
        super().apply(conn, envelope)


def test_a_batch_that_failed_is_fetched_again_with_nothing_after_it(platform: Platform, tmp_path) -> None:
    """The follow loop meets an outage on the last events there will be: no later event comes to
    reveal the gap, so the source itself must hand the failed batch over again once it can be applied."""
    engine = make_engine(f"sqlite:///{tmp_path / 'failing.db'}")
    create_schema(engine)
    projection = FailingTally()
    projector = Projector(projection, engine)
    enterprises = platform.register(3, offset=40)
    platform.append(enterprises, 4)
    expected = expected_tally(platform.all_events())
    source = platform.make_source(projector)
    thread = projector.start(source)
    try:
        deadline = time.monotonic() + 60
        while projection.refused < 3:  # refused more than once: the loop retried while "down"
            assert time.monotonic() < deadline, "the follow loop never tried to apply the events"
            time.sleep(0.05)
        assert projector.last_error is not None and read_tally(engine) == {}
        projection.back = True
        while read_tally(engine) != expected:
            assert time.monotonic() < deadline, f"not applied after the outage: {read_tally(engine)}"
            time.sleep(0.05)
    finally:
        projector.stop()
        thread.join(15)
        source.close()
        engine.dispose()
    assert projector.last_error is None
    assert sum(count for count, _ in read_tally(engine).values()) == 3 * 5


@pytest.mark.kafka
@pytest.mark.slow
def test_a_consumer_started_before_its_topic_exists_gets_its_partitions_within_seconds() -> None:
    """A member whose topic is created only after it started consuming gets the topic's partitions
    and its events within seconds (a group assignment made without the topic's metadata lasts until
    the consumer's next metadata refresh: now at most 10 s, not the client's default 5 min)."""
    from kafka import KafkaProducer

    from carbon import subscriptions
    from carbon.kafka import ensure_topic
    from tests.kafka_infra import kafka_bootstrap

    bootstrap = kafka_bootstrap()
    topic = f"carbon.test.late.{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    source = KafkaSource(bootstrap, f"late-{uuid.uuid4().hex[:8]}", topic)
    try:
        assert time.monotonic() - started < subscriptions.TOPIC_WAIT_S + 5
        source.fetch(10, timeout_s=1.0)  # joins its group: no partition to be had yet
        ensure_topic(bootstrap, topic, partitions=2)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        envelope = {"event_id": str(uuid.uuid4()), "type": "T", "schema_version": 1, "enterprise_id": "E", "stream_version": 1,
                    "position": 1, "recorded_at": "2026-01-01T00:00:00Z", "data": {}, "metadata": {}}
        from carbon import cloudevents
        producer.send(topic, key=b"E", value=cloudevents.encode(envelope))
        producer.flush()
        producer.close()
        got: list[dict] = []
        deadline = time.monotonic() + 40
        while not got:
            assert time.monotonic() < deadline, "the consumer never got the topic's partitions"
            got = source.fetch(10, timeout_s=0.5)
        assert got[0]["event_id"] == envelope["event_id"]
    finally:
        source.close()


@pytest.mark.parametrize("error", ["RebalanceInProgressError", "IllegalGenerationError", "UnknownMemberIdError",
                                   "CommitFailedError"])
def test_an_offset_commit_lost_to_a_rebalance_is_not_a_projection_failure(error: str) -> None:
    """The batch is applied and checkpointed; only the consumer-group offset is lost, and the
    redelivery it causes is skipped. Raising it made the projection back off for up to 5 s, away
    from the poll that completes the rebalance — and fall further behind each time."""
    import kafka.errors
    from kafka import TopicPartition

    class Rebalancing:
        def commit(self, offsets) -> None:
            raise getattr(kafka.errors, error)()

    source = KafkaSource.__new__(KafkaSource)
    source.consumer = Rebalancing()
    source._offsets = {TopicPartition("t", 0): 5}
    source.acknowledge()  # does not raise
    assert source._offsets == {}
