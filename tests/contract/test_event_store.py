"""The event store's contract: the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC

import orjson
import pytest
from sqlalchemy import text

from carbon.db import make_engine
from carbon.eventstore import (
    GENESIS_HASH,
    EventStore,
    IdempotencyKeyReused,
    NewEvent,
    WrongExpectedVersion,
    event_hash,
    migrate,
)


@pytest.fixture
def store(database_url: str) -> EventStore:
    engine = make_engine(database_url, pool_size=20)
    migrate(engine)
    yield EventStore(engine)
    engine.dispose()


def settled_log(store: EventStore, at_least: int, timeout_s: float = 30) -> list:
    """The whole global log once it shows ``at_least`` events (on PostgreSQL an open transaction
    elsewhere in the cluster can hold the log's horizon back for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = store.read_all(limit=100_000)
        if len(log) >= at_least or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def events(n: int, kind: str = "Noted") -> list[NewEvent]:
    return [NewEvent(kind, {"n": i, "amount": f"{i}.5"}, {"actor": {"sub": "t", "role": "operator"}}) for i in range(n)]


def test_append_and_read_back(store: EventStore) -> None:
    first = store.append_events("s-1", events(3), expected_version=0)
    assert (first.first_version, first.last_version, first.replayed) == (1, 3, False)
    assert len(first.positions) == 3 and first.positions == sorted(first.positions)
    second = store.append_events("s-1", events(2), expected_version=3)
    assert (second.first_version, second.last_version) == (4, 5)
    assert second.positions[0] > first.positions[-1]

    read = store.read_stream("s-1")
    assert [e.stream_version for e in read] == [1, 2, 3, 4, 5]
    assert [e.position for e in read] == first.positions + second.positions
    assert read[0].data == {"n": 0, "amount": "0.5"}
    assert read[0].metadata == {"actor": {"sub": "t", "role": "operator"}}
    assert read[0].recorded_at.tzinfo is not None and read[0].recorded_at.utcoffset() == UTC.utcoffset(None)
    envelope = read[4].envelope()
    assert envelope["enterprise_id"] == "s-1" and envelope["stream_version"] == 5
    assert envelope["recorded_at"].endswith("Z")
    assert store.read_stream("s-1", from_version=4, limit=1)[0].stream_version == 4
    assert store.stream_head("s-1").version == 5
    assert store.stream_head("missing") is None
    assert store.read_stream("missing") == []


def test_wrong_expected_version_writes_nothing(store: EventStore) -> None:
    store.append_events("s-1", events(2))
    with pytest.raises(WrongExpectedVersion) as caught:
        store.append_events("s-1", events(1), expected_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(WrongExpectedVersion):
        store.append_events("s-1", events(1), expected_version=0)  # 0 means: the stream must not exist
    assert len(store.read_stream("s-1")) == 2
    assert len(settled_log(store, 2)) == 2


def test_unchecked_append_never_conflicts(store: EventStore) -> None:
    store.append_events("s-1", events(1))
    result = store.append_events("s-1", events(1), expected_version=None)
    assert result.first_version == 2


def test_idempotent_retry_returns_first_result_and_writes_nothing(store: EventStore) -> None:
    first = store.append_events("s-1", events(2), expected_version=0, idempotency_key="k-1", request_hash="h")
    again = store.append_events("s-1", events(2), expected_version=0, idempotency_key="k-1", request_hash="h")
    assert again.replayed and again.as_dict() == first.as_dict()
    assert len(store.read_stream("s-1")) == 2
    # Same key on another stream is a different request scope.
    other = store.append_events("s-2", events(1), idempotency_key="k-1", request_hash="h")
    assert not other.replayed
    with pytest.raises(IdempotencyKeyReused):
        store.append_events("s-1", events(1), idempotency_key="k-1", request_hash="different")
    assert len(settled_log(store, 3)) == 3


def test_check_runs_under_lock_and_can_refuse(store: EventStore) -> None:
    store.append_events("s-1", events(2))
    seen = {}

    def refuse(head, history):
        seen["version"], seen["history"] = head.version, [e.stream_version for e in history()]
        raise ValueError("no")

    with pytest.raises(ValueError):
        store.append_events("s-1", events(1), check=refuse)
    assert seen == {"version": 2, "history": [1, 2]}
    assert store.stream_head("s-1").version == 2


def test_failed_batch_is_atomic(store: EventStore) -> None:
    duplicate = uuid.uuid4()
    store.append_events("s-1", [NewEvent("Noted", {}, event_id=duplicate)])
    with pytest.raises(Exception):
        store.append_events("s-2", [NewEvent("Noted", {}), NewEvent("Noted", {}, event_id=duplicate)])
    assert store.read_stream("s-2") == []
    assert len(settled_log(store, 1)) == 1


def test_hash_chain_links_and_verifies(store: EventStore) -> None:
    store.append_events("s-1", events(3))
    store.append_events("s-1", events(2))
    recorded = store.read_stream("s-1")
    assert recorded[0].prev_hash == GENESIS_HASH
    for before, after in zip(recorded, recorded[1:]):
        assert after.prev_hash == before.hash
    for event in recorded:
        assert event_hash(event.envelope()) == event.hash
    report = store.verify_chain("s-1")
    assert report.ok and report.events_checked == 5 and report.head_hash == recorded[-1].hash
    assert report.first_bad_version is None


def test_tampered_data_is_detected_at_its_version(store: EventStore) -> None:
    store.append_events("s-1", events(5))
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE events SET data = :d WHERE stream_id = 's-1' AND stream_version = 3"),
            {"d": '{"n": 2, "amount": "999.5"}'},
        )
    report = store.verify_chain("s-1")
    assert not report.ok and report.first_bad_version == 3


def test_deleted_tail_event_is_detected(store: EventStore) -> None:
    store.append_events("s-1", events(4))
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE stream_id = 's-1' AND stream_version = 4"))
    report = store.verify_chain("s-1")
    assert not report.ok and report.first_bad_version == 4


def test_global_log_pages_in_position_order(store: EventStore) -> None:
    for i in range(5):
        store.append_events(f"s-{i}", events(3))
    settled_log(store, 15)
    seen, after = [], None
    while page := store.read_all(after=after, limit=4):
        seen.extend(page)
        after = page[-1].position
    assert len(seen) == 15
    assert [e.position for e in seen] == sorted({e.position for e in seen})
    assert {e.stream_id for e in seen} == {f"s-{i}" for i in range(5)}


def test_the_log_as_envelopes_is_the_log(store: EventStore) -> None:
    for i in range(3):
        store.append_events(f"s-{i}", events(4))
    settled_log(store, 12)
    assert store.read_all_envelopes(limit=100) == [e.envelope() for e in store.read_all(limit=100)]
    first = store.read_all(limit=5)[-1].position
    assert store.read_all_envelopes(after=first, limit=3) == [e.envelope() for e in store.read_all(after=first, limit=3)]
    assert store.read_all_envelopes(after=10**15) == []


def test_the_log_as_envelopes_is_the_log_whatever_the_data_and_time(store: EventStore) -> None:
    """PostgreSQL writes the pages' JSON itself: the same envelopes, keys in the same order, the same text of times."""
    from datetime import datetime

    odd = {"name": "四川 \"quoted\" \\ back\nline", "nested": {"list": [1, None, True, 2.5, "x"], "empty": {}},
           "big": 2**53 - 1, "negative": -7, "decimal": "0.000001", "emoji": "🌱"}
    for at in (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 6, 30, 23, 59, 59, 123456, tzinfo=UTC),
               datetime(1999, 12, 31, 0, 0, 0, 10, tzinfo=UTC)):
        store.append_events("s-odd", [NewEvent("Noted", odd, {"actor": {"sub": "t", "role": "operator"}})],
                            now=lambda at=at: at)
    log = settled_log(store, 3)
    expected = [e.envelope() for e in log]
    page = store.read_log_page(None, 100)
    assert page.envelopes == expected and page.next == log[-1].position
    assert [list(e) for e in page.envelopes] == [list(e) for e in expected]
    assert [e["recorded_at"] for e in page.envelopes] == [
        "2025-01-01T00:00:00.000000Z", "2025-06-30T23:59:59.123456Z", "1999-12-31T00:00:00.000010Z"]
    served, next_ = store.read_log_json(None, 100)
    assert orjson.loads(served) == expected and next_ == page.next
    assert [event_hash(e) for e in page.envelopes] == [e.hash for e in log]  # the chain checks out on what is read
    assert store.read_log_page(log[-1].position, 100).envelopes == []
    assert orjson.loads(store.read_log_json(log[-1].position, 100)[0]) == []


def test_concurrent_appends_to_one_stream_get_consecutive_versions(store: EventStore) -> None:
    store.append_events("s-1", events(1))
    results, errors = [], []

    def append() -> None:
        try:
            results.append(store.append_events("s-1", events(1)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=append) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.first_version for r in results) == list(range(2, 52))
    assert [e.stream_version for e in store.read_stream("s-1")] == list(range(1, 52))
    assert store.verify_chain("s-1").ok


@pytest.mark.slow
def test_follower_never_skips_a_commit_under_concurrent_writers(store: EventStore) -> None:
    """8 writers on different streams commit in random order; a follower of the log sees each event once."""
    writers, appends_each = 8, 40
    done = threading.Event()
    written: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def slow_check(_head, _history) -> None:
        # Hold the transaction open a random while so commits land out of start order.
        time.sleep(random.uniform(0, 0.004))

    def writer(w: int) -> None:
        try:
            for i in range(appends_each):
                batch = events(random.randint(1, 3))
                store.append_events(f"w-{w}", batch, check=slow_check)
                with lock:
                    written.extend(str(e.event_id) for e in batch)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    followed: list = []

    def follower() -> None:
        after, deadline = None, None
        try:
            while True:
                page = store.read_all(after=after, limit=50)
                followed.extend(page)
                if page:
                    after = page[-1].position
                    continue
                if done.is_set():
                    # On PostgreSQL an unrelated transaction elsewhere in the cluster may hold the
                    # log's horizon back for a while: wait (bounded) rather than stop early.
                    deadline = deadline or time.monotonic() + 30
                    if len(followed) >= len(written) or time.monotonic() > deadline:
                        return
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=follower)
    reader.start()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join(timeout=60)
    assert errors == []
    positions = [e.position for e in followed]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    followed_ids = [str(e.event_id) for e in followed]
    assert len(followed_ids) == len(written)
    assert set(followed_ids) == set(written)
    # Per stream, the follower saw versions in order.
    for w in range(writers):
        versions = [e.stream_version for e in followed if e.stream_id == f"w-{w}"]
        assert versions == list(range(1, len(versions) + 1))
