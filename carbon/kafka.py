"""Kafka plumbing shared by the outbox relay and the Kafka subscription transport."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from opentelemetry.trace import SpanKind

from carbon import cloudevents, telemetry

TOPIC = "carbon.account.events.v1"
log = logging.getLogger("carbon.kafka")


class PublishFailed(Exception):
    """Some records of a batch were not acknowledged: none of the batch counts as sent."""


def ensure_topic(bootstrap: str, topic: str = TOPIC, partitions: int = 6) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="carbon-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def record_headers(envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Content type, and the trace: the current (producer) span if any, else the event's own."""
    headers = [("content-type", cloudevents.CONTENT_TYPE.encode())]
    traceparent = telemetry.current_traceparent() or (envelope.get("metadata") or {}).get("traceparent")
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return headers


def _send(producer: KafkaProducer, topic: str, envelope: dict[str, Any]):
    with telemetry.span_for_event(f"{topic} publish", envelope, SpanKind.PRODUCER):
        return producer.send(topic, key=envelope["enterprise_id"].encode(), value=cloudevents.encode(envelope),
                             headers=record_headers(envelope))


class KafkaPublisher:
    """Publishes envelopes as structured CloudEvents, key = enterprise id, and waits for acks=all."""

    def __init__(self, bootstrap: str, topic: str = TOPIC, *, ack_timeout_s: float = 30.0,
                 create_topic: bool = False) -> None:
        self.bootstrap, self.topic, self.ack_timeout_s = bootstrap, topic, ack_timeout_s
        self._topic_missing = create_topic
        self._producer: KafkaProducer | None = None

    def ensure_topic(self) -> None:
        """Create the topic if this publisher was asked to; until that works, every publish tries again."""
        if self._topic_missing:
            ensure_topic(self.bootstrap, self.topic)
            self._topic_missing = False

    def _connect(self) -> KafkaProducer:
        self.ensure_topic()
        if self._producer is None:
            ack_timeout_ms = int(self.ack_timeout_s * 1000)
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="carbon-outbox-relay",
                acks="all",
                # Idempotence keeps per-partition order across the producer's own retries.
                enable_idempotence=True,
                linger_ms=5,
                batch_size=256 * 1024,
                request_timeout_ms=min(10_000, ack_timeout_ms // 2),
                # Every record is acked or failed within the ack timeout, so a failed batch leaves
                # nothing in flight: kafka-python's close() raises on records still pending and
                # then leaves its I/O thread running, resending the batch the relay will retry.
                delivery_timeout_ms=ack_timeout_ms,
                reconnect_backoff_max_ms=2_000,
            )
        return self._producer

    def publish(self, envelopes: Sequence[dict[str, Any]]) -> None:
        try:
            producer = self._connect()
            futures = [_send(producer, self.topic, e) for e in envelopes]
            # The delivery timeout completes every record first; the margin covers the expiry sweep.
            producer.flush(timeout=self.ack_timeout_s + 5)
            for future in futures:
                future.get(timeout=0)  # raises the delivery error, or times out if still pending
        except Exception as exc:  # noqa: BLE001 - any failure: drop the producer, retry the batch later
            self.close()
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken producer must not mask the cause
                log.debug("closing the producer failed", exc_info=True)
            self._producer = None
