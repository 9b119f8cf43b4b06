"""The account's service layer: each use case validates, authorises and appends in one transaction."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carbon.eventstore import (
    AppendResult,
    ChainReport,
    EventStore,
    IdempotencyKeyReused,
    NewEvent,
    Partition,
    RecordedEvent,
    StreamHead,
    WrongExpectedVersion,
)
from carbon.eventstore.hashing import request_fingerprint
from contracts import EVENT_TYPES, EventValidationError, Role, Scope, parse_event
from services.account import domain
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.identity import Principal


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, and the tracing/idempotency facts that go into each event's metadata."""

    actor: Principal
    idempotency_key: str | None = None
    traceparent: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "actor": {"sub": self.actor.sub, "role": self.actor.role.value},
            "idempotency_key": self.idempotency_key,
            "traceparent": self.traceparent,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
        }


def parsed_history(events: Sequence[RecordedEvent]) -> list[tuple[str, Any, datetime, str]]:
    return [(e.type, EVENT_TYPES[e.type].model_validate(e.data), e.recorded_at, str(e.event_id)) for e in events]


class AccountService:
    def __init__(self, store: EventStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 cached_streams: int = 10_000) -> None:
        self.store, self.clock = store, clock
        # Folded states of recently written streams, so an append reads only the events since.
        self._states: OrderedDict[str, domain.AccountState] = OrderedDict()
        self._states_lock = threading.Lock()
        self._cached_streams = cached_streams

    def _current_state(self, enterprise_id: str, history: Callable[..., list[RecordedEvent]]) -> domain.AccountState:
        """The stream's state from the cache plus the committed events after it (called under the stream lock).

        Only committed events are ever folded in, so the cache never holds what a rolled-back append
        tried; another process's appends are simply read as "events since".
        """
        with self._states_lock:
            cached = self._states.pop(enterprise_id, None)
        state = cached if cached is not None else domain.AccountState(enterprise_id)
        for event_type, data, recorded_at, event_id in parsed_history(history(state.version + 1)):
            domain.apply(state, event_type, data, recorded_at, event_id)
        with self._states_lock:
            self._states[enterprise_id] = state
            while len(self._states) > self._cached_streams:
                self._states.popitem(last=False)
        return state

    # ---- writing -------------------------------------------------------------------------

    def register_enterprise(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        actor = ctx.actor
        data = self._parse_all([{"type": "EnterpriseRegistered", "data": body}], data_prefix="")[0][1]
        if actor.role is Role.ENTERPRISE:
            if actor.sub != data.uscc:
                raise Forbidden("not_owner", "an enterprise may register only itself (token sub = USCC)")
        elif actor.role is not Role.OPERATOR:
            raise Forbidden("wrong_role", "only the operator or the enterprise itself may register an enterprise")
        event = NewEvent("EnterpriseRegistered", data.model_dump(mode="json"), ctx.metadata())
        try:
            self.store.append_events(data.uscc, [event], expected_version=0)
        except WrongExpectedVersion:
            raise Conflict(f"enterprise {data.uscc} is already registered") from None
        return data.uscc

    def append(
        self, ctx: RequestContext, enterprise_id: str, expected_version: int | None, raw_events: list[dict[str, Any]]
    ) -> AppendResult:
        parsed = self._parse_all(raw_events)
        for event_type, _ in parsed:
            domain.authorize_writer(ctx.actor, enterprise_id, event_type)
        metadata = ctx.metadata()
        new_events = [NewEvent(t, d.model_dump(mode="json"), metadata) for t, d in parsed]
        request_hash = request_fingerprint({"expected_version": expected_version, "events": raw_events})

        def check(head: StreamHead, history: Callable[..., list[RecordedEvent]]) -> None:
            if head.version == 0:
                raise NotFound(f"enterprise {enterprise_id!r} is not registered")
            state = self._current_state(enterprise_id, history)
            domain.check_append(state, ctx.actor, parsed, self.clock())

        return self._append(enterprise_id, new_events, expected_version, ctx.idempotency_key, request_hash, check)

    def grant_consent(self, ctx: RequestContext, enterprise_id: str, body: dict[str, Any]) -> str:
        self._require_owner(ctx.actor, enterprise_id)
        consent_id = str(uuid.uuid4())
        [(event_type, data)] = self._parse_all([{"type": "ConsentGranted", "data": {"consent_id": consent_id, **body}}], data_prefix="")
        self._append_checked(ctx, enterprise_id, event_type, data)
        return consent_id

    def revoke_consent(self, ctx: RequestContext, enterprise_id: str, consent_id: str, reason: str | None) -> None:
        self._require_owner(ctx.actor, enterprise_id)
        try:
            uuid.UUID(consent_id)
        except ValueError:
            raise NotFound(f"consent {consent_id!r} does not exist on this account") from None
        [(event_type, data)] = self._parse_all(
            [{"type": "ConsentRevoked", "data": {"consent_id": consent_id, "reason": reason}}], data_prefix=""
        )
        self._append_checked(ctx, enterprise_id, event_type, data)

    def _append_checked(self, ctx: RequestContext, enterprise_id: str, event_type: str, data: Any) -> AppendResult:
        def check(head: StreamHead, history: Callable[..., list[RecordedEvent]]) -> None:
            state = self._current_state(enterprise_id, history)
            try:
                domain.check_append(state, ctx.actor, [(event_type, data)], self.clock())
            except Invalid as exc:  # endpoint bodies have no events[] wrapper: name the body field
                raise Invalid([{**e, "field": e["field"].split(".data.", 1)[-1]} for e in exc.errors]) from None

        event = NewEvent(event_type, data.model_dump(mode="json"), ctx.metadata())
        return self._append(enterprise_id, [event], None, ctx.idempotency_key, None, check)

    def _append(self, enterprise_id, new_events, expected_version, idempotency_key, request_hash, check) -> AppendResult:
        try:
            return self.store.append_events(
                enterprise_id,
                new_events,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                request_hash=request_hash or request_fingerprint([e.data for e in new_events]),
                check=check,
            )
        except WrongExpectedVersion as exc:
            raise Conflict(
                f"expected version {exc.expected} but the account is at version {exc.actual}; nothing was written"
            ) from None
        except IdempotencyKeyReused:
            raise Invalid(
                [{"field": "Idempotency-Key", "message": "already used for a different request on this account"}]
            ) from None

    @staticmethod
    def _parse_all(raw_events: list[dict[str, Any]], data_prefix: str | None = None) -> list[tuple[str, Any]]:
        """Parse every event, collecting every bad field before refusing."""
        parsed, errors = [], []
        for index, raw in enumerate(raw_events):
            try:
                parsed.append((raw["type"], parse_event(raw["type"], raw["data"])))
            except EventValidationError as exc:
                for error in exc.errors:
                    name = error["field"]
                    if data_prefix is not None:  # the body *is* the data: drop the "data." wrapper
                        name = name.removeprefix("data.")
                    else:
                        name = f"events[{index}].{name}"
                    errors.append({"field": name, "message": error["message"]})
        if errors:
            raise Invalid(errors)
        return parsed

    # ---- reading -------------------------------------------------------------------------

    def state(self, enterprise_id: str) -> domain.AccountState:
        events = list(self.store.iter_stream(enterprise_id))
        if not events:
            raise NotFound(f"enterprise {enterprise_id!r} is not registered")
        return domain.fold(enterprise_id, parsed_history(events))

    def authorize_stream_read(self, actor: Principal, enterprise_id: str) -> domain.AccountState:
        state = self.state(enterprise_id)
        if actor.role is Role.OPERATOR or (actor.role is Role.ENTERPRISE and actor.sub == enterprise_id):
            return state
        if actor.role is Role.ENTERPRISE:
            raise Forbidden("not_owner", "an enterprise may read only its own account")
        domain.check_consent(state, actor.sub, Scope.ACCOUNT_READ, self.clock())
        return state

    def read_events(self, actor: Principal, enterprise_id: str, from_version: int, limit: int) -> list[RecordedEvent]:
        self.authorize_stream_read(actor, enterprise_id)
        return self.store.read_stream(enterprise_id, from_version, limit)

    def list_consents(self, actor: Principal, enterprise_id: str) -> list[dict[str, Any]]:
        state = self.state(enterprise_id)
        if not (actor.role is Role.OPERATOR or (actor.role is Role.ENTERPRISE and actor.sub == enterprise_id)):
            if actor.role is Role.ENTERPRISE:
                raise Forbidden("not_owner", "an enterprise may list only its own consents")
            raise Forbidden("wrong_role", "only the enterprise and the operator may list its consents")
        now = self.clock()
        return [
            {
                "consent_id": c.consent_id,
                "grantee": c.grantee,
                "scopes": sorted(c.scopes),
                "purpose": c.purpose,
                "expires_at": c.expires_at,
                "granted_at": c.granted_at,
                "revoked_at": c.revoked_at,
                "status": c.status(now),
            }
            for c in sorted(state.consents.values(), key=lambda c: c.granted_at)
        ]

    def verify_chain(self, actor: Principal, enterprise_id: str) -> ChainReport:
        if self.store.stream_head(enterprise_id) is None:
            raise NotFound(f"enterprise {enterprise_id!r} is not registered")
        if not (actor.role is Role.OPERATOR or (actor.role is Role.ENTERPRISE and actor.sub == enterprise_id)):
            self.authorize_stream_read(actor, enterprise_id)
        return self.store.verify_chain(enterprise_id)

    def read_log(self, actor: Principal, after: int | None, limit: int,
                 partition: Partition | None = None) -> tuple[bytes | str, int | None]:
        """A page of the global log (or of one partition of it): the JSON array of its envelopes, and where to
        go on from."""
        if actor.role not in (Role.OPERATOR, Role.SERVICE):
            raise Forbidden("wrong_role", "the global log is open to the operator and platform services only")
        return self.store.read_log_json(after, limit, partition)

    @staticmethod
    def _require_owner(actor: Principal, enterprise_id: str) -> None:
        if actor.role is not Role.ENTERPRISE:
            raise Forbidden("wrong_role", "only the enterprise itself manages its consents")
        if actor.sub != enterprise_id:
            raise Forbidden("not_owner", "an enterprise may manage only its own consents")
