"""The carbon account's rules (SPEC §6 "account", §7): who may write what, and the stream invariants.

Pure: an account's state is a fold over its events, and a batch of new events is checked by
applying it to that state one event at a time. No I/O here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from carbon.consent import REASON_TEXT, ConsentRecord, decide
from carbon.errors import Forbidden, Invalid, NotFound
from carbon.identity import Principal
from contracts import Role, Scope
from contracts.types import period_contains

# Event types each role may append through the events endpoint.
WRITERS: dict[str, frozenset[Role]] = {
    "ActivityReported": frozenset({Role.ENTERPRISE}),
    "EmissionRecorded": frozenset({Role.ENTERPRISE, Role.SERVICE}),
    "ReductionRecorded": frozenset({Role.ENTERPRISE, Role.SERVICE}),
    "EmissionVerified": frozenset({Role.VERIFIER}),
    "ReductionVerified": frozenset({Role.VERIFIER}),
    "CarbonAssetAcquired": frozenset({Role.REGISTRY}),
    "CarbonAssetPledged": frozenset({Role.REGISTRY}),
    "CarbonAssetReleased": frozenset({Role.REGISTRY}),
    "CarbonAssetTransferred": frozenset({Role.REGISTRY}),
    "CreditsRetired": frozenset({Role.REGISTRY}),
}
# Written only through their own endpoints, which build them from the caller's request.
ENDPOINT_ONLY: dict[str, str] = {
    "EnterpriseRegistered": "POST /v1/enterprises",
    "ConsentGranted": "POST /v1/enterprises/{id}/consents",
    "ConsentRevoked": "DELETE /v1/enterprises/{id}/consents/{consent_id}",
}
# Platform services allowed to write, by their token `sub` (least privilege).
SERVICE_WRITERS: dict[str, frozenset[str]] = {
    "accounting": frozenset({"EmissionRecorded", "ReductionRecorded"}),
}


@dataclass(slots=True)
class Pledge:
    asset: str
    batch: str
    quantity_t: Decimal
    pledgee: str
    released: bool = False


@dataclass(slots=True)
class AccountState:
    """What the account's rules need to know about a stream, folded from its events."""

    enterprise_id: str
    version: int = 0
    registered: bool = False
    consents: dict[str, ConsentRecord] = field(default_factory=dict)
    # EmissionRecorded event id → (period, superseded?)
    emission_records: dict[str, tuple[str, bool]] = field(default_factory=dict)
    verified_periods: dict[str, bool] = field(default_factory=dict)  # period → still current (not stale)
    reductions: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (project, period) → reduction
    holdings: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (asset, batch) → tonnes held
    pledges: dict[str, Pledge] = field(default_factory=dict)

    def pledged(self, asset: str, batch: str) -> Decimal:
        return sum(
            (p.quantity_t for p in self.pledges.values() if not p.released and (p.asset, p.batch) == (asset, batch)),
            Decimal(0),
        )

    def free_balance(self, asset: str, batch: str) -> Decimal:
        return self.holdings.get((asset, batch), Decimal(0)) - self.pledged(asset, batch)

    def emission_periods(self) -> set[str]:
        return {period for period, superseded in self.emission_records.values() if not superseded}


def fold(enterprise_id: str, history: Iterable[tuple[str, Any, datetime, str]]) -> AccountState:
    """State after ``history``: (type, parsed data, recorded_at, event_id) in stream order."""
    state = AccountState(enterprise_id)
    for event_type, data, recorded_at, event_id in history:
        apply(state, event_type, data, recorded_at, event_id)
    return state


def apply(state: AccountState, event_type: str, data: Any, recorded_at: datetime, event_id: str) -> None:
    """Evolve the state by one already-accepted event."""
    state.version += 1
    match event_type:
        case "EnterpriseRegistered":
            state.registered = True
        case "ConsentGranted":
            state.consents[str(data.consent_id)] = ConsentRecord(
                consent_id=str(data.consent_id),
                grantee=data.grantee,
                scopes=frozenset(str(s) for s in data.scopes),
                purpose=data.purpose,
                expires_at=data.expires_at,
                granted_at=recorded_at,
            )
        case "ConsentRevoked":
            old = state.consents[str(data.consent_id)]
            state.consents[old.consent_id] = ConsentRecord(
                old.consent_id, old.grantee, old.scopes, old.purpose, old.expires_at, old.granted_at, recorded_at
            )
        case "EmissionRecorded":
            if data.supersedes is not None:
                period, _ = state.emission_records[str(data.supersedes)]
                state.emission_records[str(data.supersedes)] = (period, True)
            state.emission_records[event_id] = (data.period, False)
            for verified in state.verified_periods:
                if period_contains(verified, data.period):
                    state.verified_periods[verified] = False  # the verification no longer covers every record
        case "EmissionVerified":
            state.verified_periods[data.period] = True
        case "ReductionRecorded":
            state.reductions[(data.project_id, data.period)] = data.reduction_tco2e
        case "CarbonAssetAcquired":
            key = (str(data.asset), data.batch)
            state.holdings[key] = state.holdings.get(key, Decimal(0)) + data.quantity_t
        case "CarbonAssetPledged":
            state.pledges[data.pledge_id] = Pledge(str(data.asset), data.batch, data.quantity_t, data.pledgee)
        case "CarbonAssetReleased":
            state.pledges[data.pledge_id].released = True
        case "CarbonAssetTransferred" | "CreditsRetired":
            key = (str(data.asset), data.batch)
            state.holdings[key] = state.holdings.get(key, Decimal(0)) - data.quantity_t
        case _:
            pass  # verifications of reductions and reported activity change nothing the rules check


def authorize_writer(actor: Principal, enterprise_id: str, event_type: str) -> None:
    """The role and ownership part of SPEC §6's writer table (consent is checked against the state)."""
    if event_type in ENDPOINT_ONLY:
        raise Forbidden("wrong_role", f"{event_type} is written only through {ENDPOINT_ONLY[event_type]}")
    roles = WRITERS[event_type]
    if actor.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise Forbidden("wrong_role", f"{event_type} may be written only by: {allowed}")
    if actor.role is Role.ENTERPRISE and actor.sub != enterprise_id:
        raise Forbidden("not_owner", "an enterprise may write only to its own account")
    if actor.role is Role.SERVICE and event_type not in SERVICE_WRITERS.get(actor.sub, frozenset()):
        raise Forbidden("wrong_role", f"service {actor.sub!r} may not write {event_type}")


def check_consent(state: AccountState, grantee: str, scope: Scope, now: datetime) -> str:
    """The consent id under which ``grantee`` acts; Forbidden with SPEC §5's reason otherwise."""
    decision = decide(state.consents.values(), grantee, scope.value, now)
    if not decision.allowed:
        raise Forbidden(decision.reason or "no_consent", f"{REASON_TEXT[decision.reason or 'no_consent']} ({scope.value})")
    return decision.consent_id or ""


def check_append(
    state: AccountState, actor: Principal, batch: Sequence[tuple[str, Any]], now: datetime, first_index: int = 0
) -> None:
    """Refuse the batch unless every event, applied in order, keeps the account's invariants.

    ``batch`` holds (type, parsed data); errors name ``events[i].data.<field>``.
    """
    if not state.registered:
        raise NotFound(f"enterprise {state.enterprise_id!r} is not registered")
    trial = copy.deepcopy(state)
    for offset, (event_type, data) in enumerate(batch):
        index = first_index + offset

        def fail(field_name: str, message: str) -> None:
            raise Invalid([{"field": f"events[{index}].data.{field_name}", "message": message}])

        if actor.role is Role.VERIFIER:
            check_consent(trial, actor.sub, Scope.ACCOUNT_VERIFY, now)
        _check_one(trial, actor, event_type, data, now, fail)
        apply(trial, event_type, data, now, f"pending-{index}")


def _check_one(state: AccountState, actor: Principal, event_type: str, data: Any, now: datetime, fail) -> None:
    match event_type:
        case "ConsentGranted":
            if data.expires_at <= now:
                fail("expires_at", "must be in the future")
            if str(data.consent_id) in state.consents:
                fail("consent_id", "a consent with this id already exists")
        case "ConsentRevoked":
            consent = state.consents.get(str(data.consent_id))
            if consent is None:
                raise NotFound(f"consent {data.consent_id} does not exist on this account")
            status = consent.status(now)
            if status != "active":
                fail("consent_id", f"only an active consent can be revoked; this one is {status}")
        case "EmissionRecorded":
            if data.supersedes is not None:
                record = state.emission_records.get(str(data.supersedes))
                if record is None:
                    fail("supersedes", "names no EmissionRecorded event of this account")
                elif record[1]:
                    fail("supersedes", "that record has already been superseded")
                elif record[0] != data.period:
                    fail("supersedes", f"a correction must keep the period {record[0]!r}")
        case "EmissionVerified":
            if data.verifier != actor.sub:
                fail("verifier", "must be the verifier's own identity (the token's sub)")
            if not any(period_contains(data.period, p) for p in state.emission_periods()):
                fail("period", f"no emissions are recorded for {data.period}")
        case "ReductionVerified":
            if data.verifier != actor.sub:
                fail("verifier", "must be the verifier's own identity (the token's sub)")
            recorded = state.reductions.get((data.project_id, data.period))
            if recorded is None:
                fail("project_id", f"no reduction is recorded for project {data.project_id!r} in {data.period}")
            elif data.verified_reduction_tco2e > recorded:
                fail("verified_reduction_tco2e", f"exceeds the recorded reduction of {recorded} tCO2e")
        case "CarbonAssetPledged":
            if data.pledge_id in state.pledges:
                fail("pledge_id", "a pledge with this id already exists")
            _within_free_balance(state, data, fail)
        case "CarbonAssetReleased":
            pledge = state.pledges.get(data.pledge_id)
            if pledge is None:
                fail("pledge_id", "names no pledge of this account")
            elif pledge.released:
                fail("pledge_id", "this pledge has already been released")
        case "CarbonAssetTransferred" | "CreditsRetired":
            _within_free_balance(state, data, fail)
        case _:
            pass


def _within_free_balance(state: AccountState, data: Any, fail) -> None:
    free = state.free_balance(str(data.asset), data.batch)
    if data.quantity_t > free:
        fail("quantity_t", f"exceeds the free (unpledged) balance of {free} t of {data.asset} batch {data.batch!r}")
