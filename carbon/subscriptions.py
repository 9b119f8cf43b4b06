"""One subscription interface, two transports (SPEC §2).

- ``StoreCatchUpSource`` pages the account service's global log (``GET /v1/events?after=``): the
  embedded default, and the way every projection is rebuilt.
- ``KafkaSource`` reads topic ``carbon.account.events.v1`` in a consumer group and commits offsets
  only after the projection's transaction committed.

Both hand over batches of envelopes in per-enterprise order; both may hand an event over twice
(after a crash or a rebalance), which the projection's checkpoints turn into a no-op.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

from carbon import cloudevents
from carbon.account_client import AccountClient
from carbon.eventstore import MAX_LOG_PAGE, EventStore, Partition

log = logging.getLogger("carbon.subscriptions")


class EventSource(Protocol):
    def fetch(self, max_events: int, timeout_s: float) -> list[dict[str, Any]]:
        """The next batch of envelopes (empty when none arrived within the timeout)."""

    def acknowledge(self) -> None:
        """The last batch is durably applied: do not hand it over again."""

    def redeliver(self, position: int | None) -> None:
        """The last batch was not applied: hand over again everything after the durable ``position``."""

    def close(self) -> None: ...


class StoreCatchUpSource:
    """Follows the account service's global log from a position (``None``: the beginning), or only
    one ``partition`` of it (for a rebuild in parallel): ``after`` is how far the log has been read."""

    def __init__(self, client: AccountClient, after: int | None, partition: Partition | None = None) -> None:
        self.client, self.after, self.partition = client, after, partition

    def fetch(self, max_events: int, timeout_s: float) -> list[dict[str, Any]]:
        page, self.after = self.client.read_log_page(self.after, min(max_events, MAX_LOG_PAGE), self.partition)
        return page

    @property
    def read_through(self) -> int | None:
        return self.after

    def acknowledge(self) -> None:
        pass  # the projection's own checkpoint is the cursor: nothing to tell the account service

    def redeliver(self, position: int | None) -> None:
        self.after = position

    def close(self) -> None:
        self.client.close()


class ReadAheadSource:
    """For a rebuild: pages fetched on a thread of their own while the projection applies the last batch.

    A batch then takes ``max_events`` (or the rest of the log), many pages at once, so the read model
    is written once per enterprise per batch, not once per page; and the account service prepares
    the next pages while this process applies. ``fetch`` returns nothing once the log's end (as it
    was when reached) has been handed over; a failed fetch is raised there.
    """

    def __init__(self, source: EventSource, *, page_size: int = MAX_LOG_PAGE, pages_ahead: int = 16) -> None:
        self.source, self.page_size = source, page_size
        self._pages: queue.Queue[list[dict[str, Any]] | BaseException] = queue.Queue(maxsize=pages_ahead)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._fetch_all, name="read-ahead", daemon=True)
        self._thread.start()

    def _fetch_all(self) -> None:
        try:
            while not self._stop.is_set():
                page = self.source.fetch(self.page_size, timeout_s=0.5)
                self._put(page)
                if not page:  # the end of the log
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of ``fetch``
            self._put(exc)

    def _put(self, item: list[dict[str, Any]] | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._pages.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def fetch(self, max_events: int, timeout_s: float) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while not self._ended and len(batch) < max_events:
            item = self._pages.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
            batch.extend(item)
        return batch

    def acknowledge(self) -> None:
        self.source.acknowledge()

    @property
    def read_through(self) -> int | None:
        """How far the log has been read, once ``fetch`` has returned nothing (before, it runs ahead)."""
        return self.source.read_through  # type: ignore[attr-defined]

    def redeliver(self, position: int | None) -> None:
        raise NotImplementedError("a rebuild is not retried batch by batch: it is run again from the start")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.source.close()


class StoreLogSource:
    """The global log (or one ``partition`` of it) read straight from an event store in this process,
    handing over as many events as asked: for a projection next to the store's database (benchmarks,
    tests); ``limit`` stops after that many events. Closing it disposes of the store's engine."""

    def __init__(self, store: EventStore, after: int | None = None, partition: Partition | None = None, *,
                 limit: int | None = None, page_size: int = MAX_LOG_PAGE) -> None:
        self.store, self.after, self.partition = store, after, partition
        self.limit, self.page_size, self.handed = limit, page_size, 0

    def fetch(self, max_events: int, timeout_s: float) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < max_events:
            want = min(self.page_size, max_events - len(batch))
            if self.limit is not None:
                want = min(want, self.limit - self.handed - len(batch))
            if want <= 0:
                break
            page = self.store.read_log_page(self.after, want, self.partition)
            self.after = page.next
            if not page.envelopes:
                break
            batch.extend(page.envelopes)
        self.handed += len(batch)
        return batch

    @property
    def read_through(self) -> int | None:
        return self.after

    def acknowledge(self) -> None:
        pass

    def redeliver(self, position: int | None) -> None:
        self.after = position

    def close(self) -> None:
        self.store.engine.dispose()


def store_log_source(database_url: str, partition: Partition | None = None, after: int | None = None) -> StoreLogSource:
    """A ``StoreLogSource`` on the event store at ``database_url`` (it pickles: a rebuild's processes each make one)."""
    from carbon.db import make_engine

    return StoreLogSource(EventStore(make_engine(database_url, pool_size=1)), after, partition)


TOPIC_WAIT_S = 10.0


class KafkaSource:
    """A consumer-group member; offsets are committed by ``acknowledge`` after the read-model commit."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topic: str | None = None,
        *,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 10_000,
        metadata_max_age_ms: int = 10_000,
    ) -> None:
        from kafka import KafkaConsumer

        from carbon.kafka import TOPIC

        name = topic or TOPIC
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=f"carbon-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Batches are applied in one transaction well within this, so the member is never evicted
            # for being slow; if it is, the next commit fails and the batch is simply redelivered.
            max_poll_interval_ms=max_poll_interval_ms,
            session_timeout_ms=session_timeout_ms,
            # A topic created after the member joined (or whose metadata had not yet reached the
            # broker it asked) is noticed at the next metadata refresh: seconds, not the default 5 min.
            metadata_max_age_ms=metadata_max_age_ms,
        )
        # Subscribe once the broker knows the topic's partitions (bounded): a member that joins its
        # group before then is assigned no partition at all until that next refresh.
        deadline = time.monotonic() + TOPIC_WAIT_S
        while not self.consumer.partitions_for_topic(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.consumer.subscribe([name])
        self._offsets: dict[Any, int] = {}

    def fetch(self, max_events: int, timeout_s: float) -> list[dict[str, Any]]:
        polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_events)
        batch: list[dict[str, Any]] = []
        self._offsets = {}
        for partition, records in polled.items():
            for record in records:
                try:
                    batch.append(cloudevents.decode(record.value))
                except ValueError:
                    log.error("skipping a record that is not a CloudEvent envelope at %s@%d", partition, record.offset)
                self._offsets[partition] = record.offset + 1
        # Within a partition records are in order; across partitions order does not matter (keys differ).
        return batch

    def acknowledge(self) -> None:
        if not self._offsets:
            return
        from kafka import OffsetAndMetadata
        from kafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError

        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._offsets.items()})
        except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError) as exc:
            # The group is rebalancing or has: the batch is durably applied all the same, whoever owns
            # its partition next re-reads from the last commit, and checkpoints skip what was applied.
            # Not a failure of the projection: backing off here would only keep the member from the
            # poll that completes the rebalance.
            log.info("offset commit lost to a rebalance (%s); the batch will be redelivered and skipped",
                     type(exc).__name__)
        self._offsets = {}

    def redeliver(self, position: int | None) -> None:
        # Kafka offsets, not log positions, say where this member stands: go back to the last commit.
        for partition in self.consumer.assignment():
            committed = self.consumer.committed(partition)
            if committed is None:
                self.consumer.seek_to_beginning(partition)
            else:
                self.consumer.seek(partition, committed)
        self._offsets = {}

    def close(self) -> None:
        self.consumer.close()
