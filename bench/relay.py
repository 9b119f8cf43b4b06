"""Outbox relay throughput to Kafka, against a bare producer sending the same records.

The outbox on PostgreSQL is filled first (events appended through the store in batches, spread
over many streams), then ``OutboxRelay(engine, KafkaPublisher(...)).relay_once()`` runs until it
is drained: read a batch of pending rows, encode each as a CloudEvent, send with acks=all, wait for
every ack, mark the rows. The peer is kafka-python's producer alone, configured as the relay's,
sending the same records already encoded: the ceiling for this client. A second peer run waits for
the acks after every 500 records, as the relay must before it marks a batch.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from sqlalchemy import select, update

from bench.common import (
    BUSY_CORES,
    CpuProbe,
    busy_elsewhere,
    checkpoint,
    cleanest,
    console,
    database_name,
    delete_topics,
    figure,
    fresh_database,
    kafka_broker_pid,
    machine,
    markdown_table,
    postmaster_pid,
    rich_verdict,
    server_facts,
    server_url,
    source_revision,
    utc_now,
    verdict,
    warn_if_suspect,
    write_section,
)

NAME = "relay"
TARGET = 5_000.0  # events/s through the relay


@dataclass(frozen=True)
class Plan:
    events: int = 50_000
    streams: int = 200
    per_append: int = 50


FULL, QUICK = Plan(), Plan(events=5_000, streams=50, per_append=50)

# An EmissionRecorded as the accounting service writes it (~300 bytes of JSON).
EMISSION = {
    "calculation_id": "calc-2024-cement-01", "period": "2024", "scope": 1, "category": "process", "gas": "CO2",
    "tco2e": "642000.25", "factor_ref": "GB/T 32151.8-2015 clinker default", "methodology": "GB/T 32151.8-2015",
    "data_quality": 4,
}
METADATA = {"actor": {"sub": "accounting", "role": "service"}, "idempotency_key": None, "traceparent": None,
            "causation_id": None, "correlation_id": None}


@dataclass
class Run:
    who: str
    events: int
    seconds: float
    cpu: dict[str, float]
    first_batch_s: float | None = None  # the relay's first batch (producer connection), not in the rate
    note: str = ""
    runs: int = 1

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class Setup:
    db_url: str
    bootstrap: str
    probe: CpuProbe
    fill_rate: float
    topics: list[str] = field(default_factory=list)


def producer_config(bootstrap: str) -> dict[str, Any]:
    """The relay's producer settings (``carbon.kafka.KafkaPublisher``), for the peer."""
    return dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, batch_size=256 * 1024)


def new_topic(setup: Setup) -> str:
    from carbon.kafka import ensure_topic

    topic = f"bench.relay.{uuid.uuid4().hex[:12]}"
    ensure_topic(setup.bootstrap, topic)  # six partitions, as the platform's topic
    setup.topics.append(topic)
    return topic


def topic_total(bootstrap: str, topic: str) -> int:
    from tests.support.topic import TopicEnds

    ends = TopicEnds(bootstrap, topic)
    try:
        return ends.total()
    finally:
        ends.close()


def fill(engine, plan: Plan) -> float:
    from carbon.eventstore import EventStore, NewEvent

    store = EventStore(engine)
    began = time.perf_counter()
    for n in range(plan.events // plan.per_append):
        batch = [NewEvent("EmissionRecorded", {**EMISSION, "calculation_id": f"calc-{n}-{k}"}, METADATA)
                 for k in range(plan.per_append)]
        store.append_events(f"bench-{n % plan.streams:04d}", batch)
    return plan.events / (time.perf_counter() - began)


def run_relay(setup: Setup, engine, plan: Plan) -> Run:
    from carbon.eventstore.outbox import OutboxRelay
    from carbon.eventstore.schema import outbox
    from carbon.kafka import KafkaPublisher

    with engine.begin() as conn:  # every run starts from a full outbox
        conn.execute(update(outbox).values(published_at=None))
    checkpoint(setup.db_url)
    topic = new_topic(setup)
    relay = OutboxRelay(engine, KafkaPublisher(setup.bootstrap, topic))
    try:
        began = time.perf_counter()
        sent = first_batch = relay.relay_once()  # connects the producer and fetches the topic's metadata
        first = time.perf_counter() - began
        before = setup.probe.sample()
        began = time.perf_counter()
        while batch := relay.relay_once():
            sent += batch
        seconds = time.perf_counter() - began
        cpu = CpuProbe.cores(before, setup.probe.sample(), seconds)
        pending = relay.pending()
    finally:
        relay.publisher.close()
    stored = topic_total(setup.bootstrap, topic)
    if pending or sent != plan.events or stored != plan.events:
        raise RuntimeError(f"relay: sent {sent}, {pending} still pending, topic holds {stored}; expected {plan.events}")
    return Run("relay", plan.events - first_batch, seconds, cpu, first_batch_s=first)


def encoded_records(engine) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    from carbon import cloudevents
    from carbon.eventstore.schema import events
    from carbon.eventstore.store import recorded_from_row
    from carbon.kafka import record_headers

    with engine.connect() as conn:
        rows = conn.execute(select(events).order_by(events.c.position)).all()
    envelopes = [recorded_from_row(r).envelope() for r in rows]
    return [(e["enterprise_id"].encode(), cloudevents.encode(e), record_headers(e)) for e in envelopes]


def run_producer(setup: Setup, records, every: int | None) -> Run:
    from kafka import KafkaProducer

    topic = new_topic(setup)
    producer = KafkaProducer(client_id="carbon-bench-peer", **producer_config(setup.bootstrap))
    try:
        producer.send(topic, key=b"warm-up", value=b"{}").get(timeout=30)  # connection and metadata, as above
        chunk = every or len(records)
        before = setup.probe.sample()
        began = time.perf_counter()
        for start in range(0, len(records), chunk):
            futures = [producer.send(topic, key=k, value=v, headers=h) for k, v, h in records[start : start + chunk]]
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=0)
        seconds = time.perf_counter() - began
        cpu = CpuProbe.cores(before, setup.probe.sample(), seconds)
    finally:
        producer.close(timeout=5)
    stored = topic_total(setup.bootstrap, topic)
    if stored != len(records) + 1:
        raise RuntimeError(f"peer: topic holds {stored} records, expected {len(records) + 1}")
    who = "bare producer" + (f", acks awaited every {every}" if every else "")
    return Run(who, len(records), seconds, cpu)


def run(quick: bool = False) -> None:
    from carbon.db import make_engine
    from carbon.eventstore import migrate
    from tests.kafka_infra import kafka_bootstrap

    plan = QUICK if quick else FULL
    server = server_url()
    pg = server_facts(server)
    bootstrap = kafka_bootstrap()
    console.print(f"[dim]{machine(pg)}; Kafka at {bootstrap}[/dim]")
    with fresh_database(server) as db_url:
        engine = make_engine(db_url)
        try:
            migrate(engine)
            fill_rate = fill(engine, plan)
            console.print(f"  outbox filled: {plan.events:,} events over {plan.streams} streams at {fill_rate:,.0f} events/s")
            others = {"kafka": pid} if (pid := kafka_broker_pid(bootstrap)) else {}
            probe = CpuProbe(others, postmaster=postmaster_pid(server), databases={database_name(db_url)})
            setup = Setup(db_url, bootstrap, probe, fill_rate)
            try:
                runs: list[Run] = []
                relay, n = cleanest(lambda: run_relay(setup, engine, plan), lambda r: r.cpu, "relay")
                relay.runs = n
                runs.append(relay)
                _print(relay)
                records = encoded_records(engine)
                for every in (None, 500):
                    peer, n = cleanest(lambda: run_producer(setup, records, every), lambda r: r.cpu, "peer")
                    peer.runs = n
                    runs.append(peer)
                    _print(peer)
            finally:
                delete_topics(bootstrap, setup.topics)
        finally:
            engine.dispose()
    report(runs, setup, plan, pg, quick)


def _print(r: Run) -> None:
    console.print(f"  {r.who:<40} {r.rate:>8,.0f} events/s  cores bench {r.cpu['bench']:.2f} "
                  f"postgres {r.cpu['postgres']:.2f} kafka {r.cpu.get('kafka', 0):.2f} other {r.cpu['other']:.2f}")


def _cores(r: Run) -> str:
    return f"{r.cpu['bench']:.2f} / {r.cpu['postgres']:.2f} / {r.cpu.get('kafka', 0):.2f}"


def report(runs: list[Run], setup: Setup, plan: Plan, pg: dict[str, str], quick: bool) -> None:
    relay, ceiling = runs[0], runs[1]
    header = ["sender", "events", "events/s", "of bare producer", "target", "cores bench / pg / kafka", "other cores", "runs"]
    cells = []
    for r in runs:
        target = f"≥ {TARGET:,.0f}/s: {verdict(r.rate >= TARGET)}" if r is relay else ""
        cells.append([
            r.who, f"{r.events:,}", f"{r.rate:,.0f}" + (" ⚠" if busy_elsewhere(r.cpu) else ""),
            f"{r.rate / ceiling.rate:.2f}×", target, _cores(r), f"{r.cpu['other']:.2f}", str(r.runs),
        ])
    table = Table(title="Outbox relay to Kafka (acks=all) vs a bare kafka-python producer")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 or name == "target" else "right", no_wrap=True)
    for line in cells:
        table.add_row(*[rich_verdict(c) for c in line])
    console.print(table)
    met = relay.rate >= TARGET
    console.print(f"target relay ≥ {TARGET:,.0f} events/s: {relay.rate:,.0f} " + rich_verdict(verdict(met)))
    suspect = [r.who for r in runs if busy_elsewhere(r.cpu)]
    warn_if_suspect(suspect)
    if quick:
        console.print("[dim]--quick: docs/benchmarks.md left as it was[/dim]")
        return
    body = "\n".join([
        "## Outbox relay to Kafka (`python -m bench relay`)",
        "",
        f"Run {utc_now()} at {source_revision()}, on {machine(pg)}; Kafka {_broker_note()}.",
        "",
        f"The outbox of a fresh PostgreSQL database holds {plan.events:,} events (EmissionRecorded, ~300 bytes of"
        f" JSON) appended through the store, {plan.per_append} per append, round robin over {plan.streams} streams"
        f" (filled at {setup.fill_rate:,.0f} events/s). The relay is `OutboxRelay(engine,"
        " KafkaPublisher(bootstrap, topic)).relay_once()` in a loop until nothing is pending, into a fresh topic of"
        " six partitions; its first batch (producer connection, topic metadata:"
        f" {relay.first_batch_s * 1000:.0f} ms) is left out of the rate. The bare producer is kafka-python's"
        " `KafkaProducer` with the relay's settings (acks=all, idempotence, linger 5 ms, 256 KiB batches) sending"
        " the same records, CloudEvents already encoded and headers built, after a warm-up record; the second run"
        " waits for the acks every 500 records as the relay does per batch. Each run's topic is checked to hold"
        " every record. *Cores*: CPU used during the run by the benchmark process (relay or producer, with"
        " kafka-python's I/O thread), this database's PostgreSQL backends and the broker's JVM; *other* is the"
        " rest of the machine (⚠ above"
        f" {BUSY_CORES} cores: the point was run again and the quieter run kept).",
        "",
        markdown_table(header, cells, "lrrrlrrr"),
        "",
        f"Target: relay ≥ {TARGET:,.0f} events/s: {relay.rate:,.0f} events/s **{'met' if met else 'missed'}**"
        f" ({relay.rate / ceiling.rate:.2f}× the bare producer).",
        *(["", f"⚠ Something else used over {BUSY_CORES} cores during: {', '.join(suspect)}; those figures are suspect."]
          if suspect else []),
    ])
    figures = {
        "run": utc_now(), "revision": source_revision(), "machine": machine(pg),
        "figures": [
            figure("relay throughput to Kafka", relay.rate, "events/s", at_least=TARGET, suspect=busy_elsewhere(relay.cpu)),
            figure("bare producer, same records (ceiling)", ceiling.rate, "events/s", suspect=busy_elsewhere(ceiling.cpu)),
        ],
        "plot": {"throughput": {r.who: r.rate for r in runs}},
    }
    write_section(NAME, body, figures=figures)
    console.print(f"[dim]wrote the '{NAME}' section of docs/benchmarks.md[/dim]")


def _broker_note() -> str:
    from importlib.metadata import version

    return f"broker on this machine, one node (KRaft), kafka-python {version('kafka-python')}"
