"""Running a projection inside its service: pick the transport from settings, follow, replay."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial

from sqlalchemy.engine import make_url

from carbon.account_client import AccountClient
from carbon.eventstore import Partition
from carbon.projection import BatchResult, Projector
from carbon.settings import PlatformSettings
from carbon.subscriptions import EventSource, KafkaSource, ReadAheadSource, StoreCatchUpSource


def account_client(settings: PlatformSettings, service_name: str) -> AccountClient:
    return AccountClient(settings.account_url, tokens=settings.service_tokens(service_name), service_name=service_name)


def source_for(settings: PlatformSettings, projector: Projector, service_name: str) -> EventSource:
    """The configured transport: Kafka consumer group named after the projection, or store catch-up."""
    if settings.transport == "kafka":
        return KafkaSource(settings.kafka_bootstrap, f"{settings.kafka_group_prefix}-{projector.name}", settings.kafka_topic)
    return StoreCatchUpSource(account_client(settings, service_name), after=projector.position())


class RunningProjection:
    """A projector following its source on a background thread, for a service's lifespan."""

    def __init__(self, projector: Projector, make_source: Callable[[], EventSource]) -> None:
        self.projector, self.make_source = projector, make_source
        self._thread: threading.Thread | None = None
        self._source: EventSource | None = None

    def start(self) -> None:
        def follow() -> None:
            # Building a Kafka consumer can fail while the broker is away: keep trying until stopped.
            while not self.projector.stopping:
                try:
                    self._source = self.make_source()
                    break
                except Exception as exc:  # noqa: BLE001
                    self.projector.last_error = exc
                    self.projector.wait(2.0)
            if self._source is not None:
                self.projector.run(self._source)

        self._thread = threading.Thread(target=follow, name=f"projection-{self.projector.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.projector.stop()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._source is not None:
            self._source.close()


# A rebuild applies this many events per transaction: the read model is written once per enterprise
# per batch, so fewer, larger batches write less (following the log, batches stay small for lag).
# The price is memory: two batches (one applied, one being written) per rebuilding process, about
# 1 GB per process on the benchmark's log.
REPLAY_BATCH_EVENTS = 100_000


# Processes of a rebuild in parallel, when not told: one per core, as many as pay off.
MAX_AUTO_PARTITIONS = 4


def replay(projector: Projector, client: AccountClient, on_batch: Callable[[BatchResult], None] | None = None) -> int:
    """Rebuild from scratch by paging the account's global log in this process; returns events applied."""
    source = ReadAheadSource(StoreCatchUpSource(client, after=None))
    try:
        applied = projector.rebuild(source, batch_size=REPLAY_BATCH_EVENTS, progress=on_batch)
    finally:
        source.close()
    projector.analyze()
    return applied


def replay_in_partitions(projector: Projector, make_projector: Callable[[], Projector],
                         make_client: Callable[[], AccountClient], partitions: int,
                         on_batch: Callable[[BatchResult], None] | None = None) -> int:
    """Rebuild from scratch in ``partitions`` processes, each paging one partition of the account's
    global log (``make_projector`` and ``make_client`` run in each, so they must pickle); returns events applied."""
    applied = projector.rebuild_in_partitions(make_projector, partial(log_source, make_client), partitions,
                                              batch_size=REPLAY_BATCH_EVENTS, progress=on_batch)
    projector.analyze()
    return applied


def log_source(make_client: Callable[[], AccountClient], partition: Partition | None, after: int | None) -> ReadAheadSource:
    """The account's global log (or one partition of it) from ``after``, pages read ahead on a thread."""
    return ReadAheadSource(StoreCatchUpSource(make_client(), after=after, partition=partition))


def default_partitions(projector: Projector, database_url: str) -> int:
    """How many processes rebuild a projection when not told: one per core (at most four) for a
    projection that can be rebuilt in parallel into PostgreSQL; one otherwise (SQLite takes one writer at a time)."""
    if not projector.projection.rebuilt_in_partitions or make_url(database_url).get_backend_name() != "postgresql":
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_PARTITIONS))
