"""Events on the wire (Kafka values, webhook bodies): CloudEvents 1.0, structured JSON mode.

The CloudEvent's ``data`` is the full event envelope (SPEC §7), so a consumer can verify the
hash chain from what it receives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

CONTENT_TYPE = JSONFormat.CONTENT_TYPE  # application/cloudevents+json
_FORMAT = JSONFormat()


def to_cloudevent(envelope: dict[str, Any]) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": envelope["event_id"],
        "source": f"/enterprises/{envelope['enterprise_id']}",
        "type": envelope["type"],
        "time": datetime.fromisoformat(envelope["recorded_at"].replace("Z", "+00:00")),
        "datacontenttype": "application/json",
        "dataschema": f"/schemas/{envelope['type']}.v{envelope['schema_version']}.json",
        "subject": str(envelope["stream_version"]),
    }
    traceparent = (envelope.get("metadata") or {}).get("traceparent")
    if traceparent:
        attributes["traceparent"] = traceparent  # the distributed-tracing extension
    return CloudEvent(attributes, envelope)


def encode(envelope: dict[str, Any]) -> bytes:
    """Structured-mode JSON bytes of an envelope."""
    return _FORMAT.write(to_cloudevent(envelope))


def decode(body: bytes | str) -> dict[str, Any]:
    """The envelope carried by a structured-mode CloudEvent."""
    event = _FORMAT.read(None, body)
    data = event.get_data()
    if not isinstance(data, dict):
        raise ValueError("CloudEvent data is not an event envelope")
    return data
