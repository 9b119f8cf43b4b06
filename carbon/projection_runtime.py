"""Running a projection inside its service: pick the transport from settings, follow, replay."""

from __future__ import annotations

import threading
from collections.abc import Callable

from carbon.account_client import AccountClient
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
REPLAY_BATCH_EVENTS = 20_000


def replay(projector: Projector, client: AccountClient, on_batch: Callable[[BatchResult], None] | None = None) -> int:
    """Rebuild from scratch by paging the account's global log; returns events applied."""
    source = ReadAheadSource(StoreCatchUpSource(client, after=None))
    try:
        applied = projector.rebuild(source, batch_size=REPLAY_BATCH_EVENTS, progress=on_batch)
    finally:
        source.close()
    projector.analyze()
    return applied
