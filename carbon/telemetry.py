"""OpenTelemetry for every service: traces across HTTP, the event store, Kafka and projections; metrics.

The exporters follow the standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_EXPORTER`` …). Metrics are also served in Prometheus form at
``/metrics``. One trace follows an append from the HTTP request into the event's ``traceparent``,
through the outbox and the Kafka record headers, into each projection that applies it and out in
the webhook that delivers it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import SpanKind

_lock = threading.Lock()
_configured = False

tracer = trace.get_tracer("carbon")
meter = metrics.get_meter("carbon")


class RecordWhenExported(Sampler):
    """The configured sampler (``OTEL_TRACES_SAMPLER``, else parent-based always-on) while some span
    processor receives spans; until then no span is recorded.

    Trace context flows either way: an unrecorded span still has a valid trace and span id, so an
    append's ``traceparent`` reaches its events and what follows them. What is saved is building,
    attributing and ending spans that nothing would export — most of tracing's cost per request.
    """

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate
        self.exporting = False

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        chosen = self.delegate if self.exporting else ALWAYS_OFF
        return chosen.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RecordWhenExported{{{self.delegate.get_description()}}}"


def configure(service_name: str) -> None:
    """Install the process's tracer and meter providers once (a process may host several services in tests)."""
    global _configured
    with _lock:
        if _configured:
            return
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"carbon-{service_name}")})
        provider = TracerProvider(resource=resource)
        provider.sampler = RecordWhenExported(provider.sampler)  # before any tracer is handed out
        trace.set_tracer_provider(provider)
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none")
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            export_spans(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter == "console":
            export_spans(BatchSpanProcessor(ConsoleSpanExporter()))

        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers: list[Any] = [PrometheusMetricReader()]
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and os.environ.get("OTEL_METRICS_EXPORTER", "otlp") == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _configured = True


def export_spans(processor: SpanProcessor) -> None:
    """Send the spans of this process to ``processor`` too, and record spans from now on."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise RuntimeError("telemetry.configure() has not installed the SDK's tracer provider")
    provider.add_span_processor(processor)
    if isinstance(provider.sampler, RecordWhenExported):
        provider.sampler.exporting = True


# Spans and metrics for the HTTP stack itself would say nothing about these.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def http_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (``FastAPI(telemetry=…)``): a server span per request continuing an
    incoming ``traceparent``, and the HTTP server metrics, from the global providers ``configure`` sets.

    Not its spans for each dependency, the endpoint and serialisation (several per request, costing
    more than the request's own work here), nor its exception log records (our handlers log those).
    """
    return {"operation_spans": False, "logs": False, "exclude": lambda scope: scope.get("path") in UNTRACED_PATHS}


def serve_metrics(app: Any) -> None:
    """``/metrics`` in Prometheus form."""
    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def instrument_http_clients() -> None:
    """Outgoing httpx calls (service to service) carry the current trace."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span_for_event(name: str, envelope: dict[str, Any], kind: SpanKind) -> Iterator[trace.Span]:
    """A span continuing the trace the event was appended in (its metadata's ``traceparent``)."""
    traceparent = (envelope.get("metadata") or {}).get("traceparent")
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else context.Context()
    with tracer.start_as_current_span(name, context=parent, kind=kind, attributes={
        "carbon.event_id": envelope.get("event_id", ""),
        "carbon.event_type": envelope.get("type", ""),
        "carbon.enterprise_id": envelope.get("enterprise_id", ""),
        "carbon.position": envelope.get("position", 0),
    }) as span:
        yield span


# Up to this many events a projection batch gets a span per event, continuing each event's trace;
# a larger batch (catch-up, replay) gets one span linked to the events' traces, as OpenTelemetry's
# messaging conventions do for batch processing: a span per event would cost more than applying it.
SPAN_PER_EVENT_UP_TO = 16
MAX_LINKS = 128  # the SDK's default span limit


def _remote_span_context(traceparent: str) -> trace.SpanContext | None:
    """A W3C ``traceparent`` (version 00) as a remote span context; None when it does not parse."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))


@contextmanager
def span_for_events(name: str, envelopes: Sequence[dict[str, Any]], kind: SpanKind) -> Iterator[trace.Span]:
    """One span for a batch of events, linked to the traces they were appended in (distinct, at most 128)."""
    links: list[trace.Link] = []
    seen: set[str] = set()
    for envelope in envelopes:
        traceparent = (envelope.get("metadata") or {}).get("traceparent")
        if not traceparent or traceparent in seen:
            continue
        seen.add(traceparent)
        if (span_context := _remote_span_context(traceparent)) is not None:
            links.append(trace.Link(span_context))
            if len(links) == MAX_LINKS:
                break
    with tracer.start_as_current_span(name, context=context.Context(), kind=kind, links=links, attributes={
        "messaging.batch.message_count": len(envelopes),
        "carbon.position.first": envelopes[0].get("position", 0) if envelopes else 0,
        "carbon.position.last": envelopes[-1].get("position", 0) if envelopes else 0,
    }) as span:
        yield span


# ---- metrics ---------------------------------------------------------------------------------

events_appended = meter.create_counter("carbon.events.appended", unit="{event}", description="events appended to the store")
projection_lag = meter.create_histogram(
    "carbon.projection.lag", unit="s", description="from an event's commit to its projection's commit")
deliveries_failed = meter.create_counter(
    "carbon.webhook.delivery_failures", unit="{attempt}", description="webhook delivery attempts that failed")
deliveries_succeeded = meter.create_counter(
    "carbon.webhook.deliveries", unit="{delivery}", description="webhook deliveries acknowledged by partners")


def observe_outbox_backlog(read_backlog: Callable[[], int]) -> None:
    """Report the relay's pending rows as a gauge (read when metrics are collected)."""

    def callback(_options):
        try:
            yield metrics.Observation(read_backlog())
        except Exception:  # noqa: BLE001 - a database hiccup must not break metric collection
            return

    meter.create_observable_gauge("carbon.outbox.backlog", [callback], unit="{event}",
                                  description="events committed but not yet acknowledged by Kafka")


def record_lags(envelopes: list[dict[str, Any]], projection: str) -> None:
    """Each applied event's lag from its commit; events of one append share their ``recorded_at``."""
    now, attributes = datetime.now(UTC), {"projection": projection}
    lags: dict[str, float] = {}
    for envelope in envelopes:
        text = envelope.get("recorded_at")
        if text is None:
            continue
        if (lag := lags.get(text)) is None:
            lag = lags[text] = (now - datetime.fromisoformat(text.replace("Z", "+00:00"))).total_seconds()
        projection_lag.record(lag, attributes)
