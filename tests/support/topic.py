"""Read a whole Kafka topic, as it stands, with a consumer outside any group."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 60) -> list[Record]:
    """Every record from the beginning up to the end offsets seen at the start, in partition-offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="carbon-test-topic-reader", max_poll_records=2000)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while not partitions:
            assert time.monotonic() < deadline, f"no partition metadata for topic {topic}"
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        records: dict[int, list[Record]] = {tp.partition: [] for tp in assigned}
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            assert time.monotonic() < deadline, f"topic {topic} was not read to its end within {timeout_s}s"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records[tp.partition].extend(Record(tp.partition, r.offset, r.key, list(r.headers), r.value)
                                             for r in batch if r.offset < ends[tp])
        return [r for p in sorted(records) for r in records[p]]
    finally:
        consumer.close()


class TopicEnds:
    """The number of records a topic holds (sum of its partitions' end offsets), cheap to ask repeatedly."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      client_id="carbon-test-topic-ends")
        self.partitions = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        assert self.partitions, f"no partition metadata for topic {topic}"

    def total(self) -> int:
        return sum(self.consumer.end_offsets(self.partitions).values())

    def close(self) -> None:
        self.consumer.close()
