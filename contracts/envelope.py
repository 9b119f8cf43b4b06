"""The envelope every stored, published and delivered event travels in."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, Strict

from contracts.enums import Role
from contracts.events import EventData, parse_event
from contracts.types import USCC, PartyId, UtcDatetime

__all__ = ["GENESIS_HASH", "Actor", "EventMetadata", "EventEnvelope", "format_time"]

# prev_hash of the first event of a stream: there is nothing before it.
GENESIS_HASH = "0" * 64

_HASH = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lowercase hex")]


@lru_cache(maxsize=1024)  # the events of one append share their time; pages repeat it
def format_time(moment: datetime) -> str:
    # Always microseconds: the one textual form of a recorded time, so a dumped
    # envelope is byte-for-byte what was hashed.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


_RecordedAt = Annotated[UtcDatetime, PlainSerializer(format_time, return_type=str, when_used="json")]
_TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class Actor(BaseModel):
    """Who caused the event: the `sub` and `role` of the caller's token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sub: PartyId
    role: Role


class EventMetadata(BaseModel):
    """Context of an append; not part of the business facts in `data`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: Actor
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    traceparent: Annotated[str, Field(pattern=_TRACEPARENT)] | None = Field(
        default=None, description="W3C trace context of the request that appended the event"
    )
    causation_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class EventEnvelope(BaseModel):
    """One event of an enterprise's stream, chained to its predecessor by hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID
    type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{0,63}$")]
    schema_version: Annotated[int, Strict(), Field(ge=1)]
    enterprise_id: USCC
    stream_version: Annotated[int, Strict(), Field(ge=1)]
    position: Annotated[int, Strict(), Field(ge=0, description="place in the global log")]
    recorded_at: _RecordedAt
    data: dict[str, Any]
    metadata: EventMetadata
    prev_hash: _HASH = Field(description="hash of the previous event; 64 zeros for the first")
    hash: _HASH

    def typed_data(self) -> EventData:
        """`data` validated as the model of `type` (raises `EventValidationError`)."""
        return parse_event(self.type, self.data)
