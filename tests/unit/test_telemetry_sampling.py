"""Spans are recorded only once something receives them; trace context flows either way."""

from __future__ import annotations

from opentelemetry import context, propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, TraceIdRatioBased

from carbon.telemetry import RecordWhenExported


def provider_with(delegate=DEFAULT_ON) -> tuple[TracerProvider, RecordWhenExported]:
    provider = TracerProvider()
    provider.sampler = RecordWhenExported(delegate)
    return provider, provider.sampler


def test_nothing_is_recorded_while_no_processor_listens_but_the_trace_still_propagates() -> None:
    provider, _ = provider_with()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("server") as span:
        assert not span.is_recording()
        ctx = span.get_span_context()
        assert ctx.is_valid and not ctx.trace_flags.sampled
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    # An event appended here carries this trace; whatever continues it joins the same trace id.
    assert carrier["traceparent"].split("-")[1] == format(ctx.trace_id, "032x")
    with tracer.start_as_current_span("projection", context=propagate.extract(carrier)) as child:
        assert child.get_span_context().trace_id == ctx.trace_id


def test_spans_are_recorded_from_the_moment_they_are_exported() -> None:
    provider, sampler = provider_with()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sampler.exporting = True
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("server", context=context.Context()) as span:
        assert span.is_recording() and span.get_span_context().trace_flags.sampled
    assert [s.name for s in exporter.get_finished_spans()] == ["server"]


def test_the_configured_sampler_decides_once_exporting() -> None:
    provider, sampler = provider_with(TraceIdRatioBased(0.0))
    sampler.exporting = True
    with provider.get_tracer("t").start_as_current_span("x", context=context.Context()) as span:
        assert not span.is_recording()
    assert "TraceIdRatioBased" in sampler.get_description()
    assert RecordWhenExported(ALWAYS_ON).get_description().startswith("RecordWhenExported")
