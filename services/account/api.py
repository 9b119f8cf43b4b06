"""HTTP interface of the account service (SPEC §6 "account")."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from carbon import telemetry
from carbon.auth import CurrentPrincipal
from carbon.db import MAX_POSITION, MAX_VERSION, make_engine, ping
from carbon.errors import Invalid
from carbon.eventstore import MAX_EVENTS_PER_APPEND, MAX_LOG_PAGE, MAX_PARTITIONS, EventStore, Partition, migrate
from carbon.http import create_service_app, json_bytes_response
from carbon.problems import AUTHENTICATED, WITH_BODY, problem_responses
from contracts import Scope
from contracts.examples import CEMENT_MAKER_USCC, EXAMPLE_EVENT_DATA
from contracts.types import SINGLE_LINE_PATTERN
from services.account.service import AccountService, RequestContext
from services.account.settings import AccountSettings

MAX_PAGE = 1000

EnterpriseId = Annotated[str, Path(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN,
                                   description="The enterprise's USCC", examples=[CEMENT_MAKER_USCC])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    type: str = Field(min_length=1, max_length=64, examples=["ActivityReported"])
    data: dict[str, Any]


class AppendRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"expected_version": None, "events": [
        {"type": "ActivityReported", "data": EXAMPLE_EVENT_DATA["ActivityReported"]}]}]})

    expected_version: int | None = Field(
        ge=0, le=MAX_VERSION, description="The stream's current version; null appends at the end without a check"
    )
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_APPEND)


class AppendResponse(BaseModel):
    first_version: int
    last_version: int
    positions: list[int]


class RegisterRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_EVENT_DATA["EnterpriseRegistered"]]})

    uscc: str
    name: str
    industry: str
    region: str


class ConsentRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {k: v for k, v in EXAMPLE_EVENT_DATA["ConsentGranted"].items() if k != "consent_id"}]})

    grantee: str
    scopes: list[Scope]
    purpose: str
    expires_at: datetime


class RevokeRequest(Strict):
    reason: str | None = Field(default=None, max_length=500)


class ConsentOut(BaseModel):
    consent_id: str
    grantee: str
    scopes: list[str]
    purpose: str
    expires_at: datetime
    granted_at: datetime
    revoked_at: datetime | None
    status: str


class ConsentList(BaseModel):
    consents: list[ConsentOut]
    next: str | None = None


class EventList(BaseModel):
    events: list[dict[str, Any]]
    next: int | None = Field(description="the position to read after next; for a partition of the log, once a page is"
                                         " not full, the end of the log as far as it was read")


class ChainOut(BaseModel):
    ok: bool
    events_checked: int
    head_hash: str | None
    first_bad_version: int | None


def request_context(
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    traceparent: Annotated[str | None, Header(max_length=55)] = None,
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
    x_causation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> RequestContext:
    # The request's own server span (a child of any incoming traceparent) is what the event continues.
    traceparent = telemetry.current_traceparent() or traceparent
    return RequestContext(principal, idempotency_key, traceparent, x_causation_id, x_correlation_id)


Context = Annotated[RequestContext, Depends(request_context)]


def _service(request: Request) -> AccountService:
    return request.app.state.accounts


Accounts = Annotated[AccountService, Depends(_service)]


router = APIRouter(prefix="/v1", tags=["account"], responses=problem_responses(*AUTHENTICATED))


@router.post("/enterprises", status_code=201, summary="Register an enterprise (starts its stream)",
             responses=problem_responses(*WITH_BODY, 409))
def register_enterprise(body: RegisterRequest, ctx: Context, accounts: Accounts) -> dict[str, str]:
    return {"enterprise_id": accounts.register_enterprise(ctx, body.model_dump())}


@router.post(
    "/enterprises/{enterprise_id}/events",
    status_code=201,
    response_model=AppendResponse,
    summary="Append events to an enterprise's stream",
    responses=problem_responses(*WITH_BODY, 404, 409),
)
def append_events(enterprise_id: EnterpriseId, body: AppendRequest, ctx: Context, accounts: Accounts) -> Any:
    result = accounts.append(ctx, enterprise_id, body.expected_version, [e.model_dump() for e in body.events])
    return result.as_dict()


@router.get("/enterprises/{enterprise_id}/events", response_model=EventList, summary="Read an enterprise's stream",
            responses=problem_responses(404))
def read_events(
    enterprise_id: EnterpriseId,
    principal: CurrentPrincipal,
    accounts: Accounts,
    from_version: Annotated[int, Query(ge=1, le=MAX_VERSION)] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Any:
    page = accounts.read_events(principal, enterprise_id, from_version, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return json_bytes_response({"events": [e.envelope() for e in page],
                                "next": page[-1].stream_version + 1 if more else None})


@router.post("/enterprises/{enterprise_id}/consents", status_code=201, summary="Grant a party consent",
             responses=problem_responses(*WITH_BODY, 404))
def grant_consent(enterprise_id: EnterpriseId, body: ConsentRequest, ctx: Context, accounts: Accounts) -> dict[str, str]:
    payload = body.model_dump(mode="json")
    return {"consent_id": accounts.grant_consent(ctx, enterprise_id, payload)}


@router.delete("/enterprises/{enterprise_id}/consents/{consent_id}", summary="Revoke a consent",
               responses=problem_responses(*WITH_BODY, 404, 409))
def revoke_consent(
    enterprise_id: EnterpriseId,
    consent_id: Annotated[str, Path(max_length=64, pattern=SINGLE_LINE_PATTERN)],
    ctx: Context,
    accounts: Accounts,
    body: RevokeRequest | None = None,
) -> dict[str, str]:
    accounts.revoke_consent(ctx, enterprise_id, consent_id, body.reason if body else None)
    return {"consent_id": consent_id, "status": "revoked"}


@router.get("/enterprises/{enterprise_id}/consents", response_model=ConsentList, summary="List consents",
            responses=problem_responses(404))
def list_consents(enterprise_id: EnterpriseId, principal: CurrentPrincipal, accounts: Accounts) -> Any:
    return {"consents": accounts.list_consents(principal, enterprise_id), "next": None}


@router.get("/enterprises/{enterprise_id}/verify-chain", response_model=ChainOut, summary="Check the hash chain",
            responses=problem_responses(404))
def verify_chain(enterprise_id: EnterpriseId, principal: CurrentPrincipal, accounts: Accounts) -> Any:
    report = accounts.verify_chain(principal, enterprise_id)
    return {
        "ok": report.ok,
        "events_checked": report.events_checked,
        "head_hash": report.head_hash,
        "first_bad_version": report.first_bad_version,
    }


@router.get("/events", response_model=EventList, summary="The global log in commit order")
def read_log(
    principal: CurrentPrincipal,
    accounts: Accounts,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="Position to read after; omit to start at the beginning")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 100,
    partition: Annotated[int | None, Query(ge=0, lt=MAX_PARTITIONS, description="Read only this share of the log's streams (with `partitions`)")] = None,
    partitions: Annotated[int | None, Query(ge=1, le=MAX_PARTITIONS, description="Into how many shares by stream the log is cut, for a rebuild in parallel")] = None,
) -> Any:
    page, next_ = accounts.read_log(principal, after, limit, _partition(partition, partitions))
    return json_bytes_response({"events": orjson.Fragment(page), "next": next_})


def _partition(index: int | None, count: int | None) -> Partition | None:
    if index is None and count is None:
        return None
    if index is None:
        raise Invalid([{"field": "partition", "message": "give the partition to read along with partitions"}])
    if count is None:
        raise Invalid([{"field": "partitions", "message": "give the number of partitions along with partition"}])
    if index >= count:
        raise Invalid([{"field": "partition", "message": f"must be below partitions ({count}), got {index}"}])
    return Partition(index, count)


def create_app(settings: AccountSettings | None = None) -> FastAPI:
    settings = settings or AccountSettings()
    engine = make_engine(settings.resolved_database_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(engine)
        relay = None
        if settings.transport == "kafka":
            from services.account.relay import build_relay

            relay = build_relay(settings, engine)
            thread = relay.start()
        app.state.relay = relay
        yield
        if relay is not None:
            relay.stop()
            thread.join(timeout=15)
        engine.dispose()

    app = create_service_app(
        title="Carbon account",
        service_name="account",
        description="Each enterprise's append-only, consented, hash-chained carbon event stream.",
        verifier=settings.token_verifier(),
        max_body_bytes=settings.max_body_bytes,
        ready=lambda: ping(engine),
        lifespan=lifespan,
    )
    app.state.accounts = AccountService(EventStore(engine))
    app.include_router(router)
    return app
