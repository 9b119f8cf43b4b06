"""One trace from an HTTP append in the account service to the rating projection that applies it."""

from __future__ import annotations

import secrets
import time

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carbon.auth import mint_token
from carbon import telemetry
from carbon.kafka import record_headers
from carbon.telemetry import span_for_event
from contracts.examples import CEMENT_MAKER_USCC as CEMENT
from services.account.api import create_app as account_app
from services.account.settings import AccountSettings
from services.rating.api import create_app as rating_app
from services.rating.settings import RatingSettings
from tests.live import serve

SECRET = "tracing-suite-secret-long-enough-for-hs256-keys"


def test_one_trace_links_the_append_and_the_projection(tmp_path) -> None:
    account = account_app(AccountSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", jwt_secret=SECRET))
    exporter = InMemorySpanExporter()
    telemetry.configure("tests")
    telemetry.export_spans(SimpleSpanProcessor(exporter))
    with serve(account) as account_url:
        rating = rating_app(RatingSettings(database_url=f"sqlite:///{tmp_path / 'r.db'}", jwt_secret=SECRET,
                                           account_url=account_url))
        with serve(rating) as rating_url, httpx.Client(timeout=30) as http:
            ops = {"Authorization": f"Bearer {mint_token(SECRET, sub='ops', role='operator')}"}
            http.post(f"{account_url}/v1/enterprises", headers=ops, json={
                "uscc": CEMENT, "name": "Cement", "industry": "C3011", "region": "510100"}).raise_for_status()
            owner = {"Authorization": f"Bearer {mint_token(SECRET, sub=CEMENT, role='enterprise')}"}
            # The caller's own trace: httpx (instrumented) sends it as the request's traceparent.
            with trace.get_tracer("tests").start_as_current_span("enterprise reports activity") as root:
                trace_id = format(root.get_span_context().trace_id, "032x")
                appended = http.post(f"{account_url}/v1/enterprises/{CEMENT}/events", headers=owner, json={
                    "expected_version": None, "events": [{"type": "ActivityReported", "data": {
                        "period": "2025", "revenue_10k_cny": "100", "output": {"quantity": "1", "unit": "t"}}}]})
            appended.raise_for_status()
            stored = http.get(f"{account_url}/v1/enterprises/{CEMENT}/events", headers=ops).json()["events"][-1]
            assert stored["metadata"]["traceparent"].split("-")[1] == trace_id

            def applied() -> list:
                return [s for s in exporter.get_finished_spans()
                        if s.name == "rating apply ActivityReported" and format(s.context.trace_id, "032x") == trace_id]

            deadline = time.monotonic() + 20
            while not applied():
                assert time.monotonic() < deadline, "the projection's span never joined the append's trace"
                time.sleep(0.1)
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    server = [s for s in spans if s.kind == trace.SpanKind.SERVER and "events" in s.name]
    assert server, [s.name for s in spans]
    [apply] = applied()
    # The projection's span is a child of the span the event was appended in.
    assert format(apply.parent.span_id, "016x") == stored["metadata"]["traceparent"].split("-")[2]


def test_kafka_records_carry_the_events_trace() -> None:
    trace_id = secrets.token_hex(16)
    envelope = {"event_id": "e", "type": "T", "enterprise_id": "E", "position": 1,
                "metadata": {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}}
    with span_for_event("publish", envelope, trace.SpanKind.PRODUCER):
        headers = dict(record_headers(envelope))
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["traceparent"].decode().split("-")[1] == trace_id
