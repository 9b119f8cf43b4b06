"""HTTP interface of the disclosure service (SPEC §6 "disclosure")."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from carbon import cloudevents
from carbon.auth import CurrentPrincipal
from carbon.db import MAX_POSITION, make_engine, ping
from carbon.http import create_service_app
from carbon.problems import AUTHENTICATED, WITH_BODY, Problem, problem_responses
from carbon.projection import Projector
from carbon.projection_runtime import RunningProjection, source_for
from contracts import EVENT_TYPES, USCC
from contracts.examples import CEMENT_MAKER_USCC
from contracts.types import SINGLE_LINE_PATTERN
from services.disclosure import domain, render
from services.disclosure.access_log import AccessLog, AccessLogUnavailable
from services.disclosure.callbacks import Resolver, system_resolver
from services.disclosure.delivery import DeliveryWorkers
from services.disclosure.projection import DisclosureProjection, migrate
from services.disclosure.service import DisclosureService
from services.disclosure.settings import DisclosureSettings

MAX_PAGE = 500

SubscriptionId = Annotated[str, Path(min_length=1, max_length=36, pattern=SINGLE_LINE_PATTERN)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=36, pattern=SINGLE_LINE_PATTERN)]


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_url: str = Field(min_length=1, max_length=2048, examples=["https://partner.example.com/carbon-events"])
    event_types: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), examples=[["EmissionVerified"]])
    enterprise_ids: list[USCC] | None = Field(
        default=None, min_length=1, max_length=1000,
        description="only these enterprises; omitted: every enterprise that grants you events:subscribe")

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        for t in types:
            if t not in EVENT_TYPES:
                raise PydanticCustomError("event_type", f"unknown event type {t!r}; known types: "
                                          + ", ".join(sorted(EVENT_TYPES)))
        return types


class SubscriptionCreated(BaseModel):
    subscription_id: str
    secret: str = Field(description="Standard Webhooks signing secret (whsec_…); shown only once")


class SubscriptionOut(BaseModel):
    subscription_id: str
    partner: str
    callback_url: str
    event_types: list[str]
    enterprise_ids: list[str] | None
    status: Literal["active", "deleted"]
    created_at: datetime
    deleted_at: datetime | None


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]
    next: int | None = None


class DeliveryOut(BaseModel):
    delivery_id: str
    event_id: str
    event_type: str
    enterprise_id: str
    stream_version: int
    status: Literal["pending", "delivered", "dead", "cancelled"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    cancelled_reason: str | None
    created_at: datetime


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next: int | None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enterprise_id: USCC | None = None


class ReplayOut(BaseModel):
    replayed: int


class Feed(BaseModel):
    events: list[dict[str, Any]] = Field(description="structured CloudEvents whose data is the event envelope")
    next: int | None


def _service(request: Request) -> DisclosureService:
    return request.app.state.disclosure


Disclosure = Annotated[DisclosureService, Depends(_service)]

router = APIRouter(prefix="/v1", tags=["disclosure"], responses=problem_responses(*AUTHENTICATED))


@router.post("/subscriptions", status_code=201, response_model=SubscriptionCreated,
             summary="Subscribe to the consented events of enterprises (partner)",
             responses=problem_responses(*WITH_BODY))
def create_subscription(body: SubscriptionRequest, principal: CurrentPrincipal, service: Disclosure) -> Any:
    return service.create_subscription(principal, body.callback_url, body.event_types, body.enterprise_ids)


@router.get("/subscriptions", response_model=SubscriptionList, summary="Your subscriptions")
def list_subscriptions(principal: CurrentPrincipal, service: Disclosure) -> Any:
    return {"subscriptions": service.list_subscriptions(principal), "next": None}


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut, summary="One subscription",
            responses=problem_responses(404))
def get_subscription(subscription_id: SubscriptionId, principal: CurrentPrincipal, service: Disclosure) -> Any:
    return service.get_subscription(principal, subscription_id)


@router.delete("/subscriptions/{subscription_id}", response_model=SubscriptionOut,
               summary="End a subscription (what is still queued is cancelled)", responses=problem_responses(404, 409))
def delete_subscription(subscription_id: SubscriptionId, principal: CurrentPrincipal, service: Disclosure) -> Any:
    return service.delete_subscription(principal, subscription_id)


@router.get("/subscriptions/{subscription_id}/deliveries", response_model=DeliveryList,
            summary="Webhook deliveries: queued, delivered, dead-lettered and cancelled", responses=problem_responses(404))
def list_deliveries(
    subscription_id: SubscriptionId,
    principal: CurrentPrincipal,
    service: Disclosure,
    status: Annotated[Literal["pending", "delivered", "dead", "cancelled"] | None, Query()] = None,
    enterprise_id: Annotated[str | None, Query(max_length=64, pattern=SINGLE_LINE_PATTERN)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Any:
    rows, next_cursor = service.list_deliveries(principal, subscription_id, status=status,
                                                enterprise_id=enterprise_id, after=after, limit=limit)
    return {"deliveries": rows, "next": next_cursor}


@router.post("/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry", status_code=202,
             response_model=DeliveryOut, summary="Send a dead-lettered (or delivered) event again",
             responses=problem_responses(404, 409))
def retry_delivery(subscription_id: SubscriptionId, delivery_id: DeliveryId, principal: CurrentPrincipal,
                   service: Disclosure) -> Any:
    return service.retry_delivery(principal, subscription_id, delivery_id)


@router.post("/subscriptions/{subscription_id}/deliveries/replay", status_code=202, response_model=ReplayOut,
             summary="Send every dead letter again (optionally of one enterprise)",
             responses=problem_responses(*WITH_BODY, 404, 409))
def replay_dead_letters(subscription_id: SubscriptionId, principal: CurrentPrincipal, service: Disclosure,
                        body: ReplayRequest | None = None) -> Any:
    return {"replayed": service.replay_dead_letters(principal, subscription_id, body.enterprise_id if body else None)}


@router.get("/feeds/{subscription_id}", response_model=Feed, summary="Pull the subscription's events",
            responses=problem_responses(404, 409))
def feed(
    subscription_id: SubscriptionId,
    principal: CurrentPrincipal,
    service: Disclosure,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="the `next` of the previous page; omit to start")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Any:
    envelopes, next_cursor = service.feed(principal, subscription_id, after, limit)
    # The same structured-mode JSON a webhook carries, one object per event.
    return {"events": [orjson.loads(cloudevents.encode(e)) for e in envelopes], "next": next_cursor}


@router.get("/disclosures/{enterprise_id}/{year}", summary="An enterprise's environmental-information disclosure",
            responses={200: {"content": {"application/json": {}, "text/html": {}, "application/pdf": {}}},
                       **problem_responses(404, 503)})
def disclosure(
    enterprise_id: Annotated[str, Path(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN,
                                       examples=[CEMENT_MAKER_USCC])],
    year: Annotated[int, Path(ge=1990, le=2100, examples=[2024])],
    principal: CurrentPrincipal,
    service: Disclosure,
    format: Annotated[Literal["json", "html", "pdf"], Query()] = "json",  # noqa: A002 - the query name
) -> Response:
    try:
        report = service.report(principal, enterprise_id, year, format)
    except AccessLogUnavailable as exc:
        raise Problem(503, "Service Unavailable", f"the read cannot be logged for the enterprise, so it is refused: {exc}",
                      slug="access-log-unavailable", headers={"Retry-After": "5"}) from None
    if format == "json":
        return JSONResponse(domain.jsonable(report))
    html = render.render_html(report)
    if format == "html":
        return HTMLResponse(html)
    filename = f"disclosure-{enterprise_id}-{year}.pdf"
    return Response(render.render_pdf(html), media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


def create_app(settings: DisclosureSettings | None = None, *, resolve: Resolver = system_resolver) -> FastAPI:
    settings = settings or DisclosureSettings()
    engine = make_engine(settings.resolved_database_url())
    projector = Projector(DisclosureProjection(), engine)
    workers = DeliveryWorkers(engine, settings, resolve=resolve)
    access_log = AccessLog(settings.rating_url, tokens=settings.service_tokens("disclosure"),
                           timeout=settings.access_log_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(engine)
        running = RunningProjection(projector, lambda: source_for(settings, projector, "disclosure"))
        running.start()
        workers.start()
        app.state.projection = running
        yield
        workers.stop()
        running.stop()
        access_log.close()
        engine.dispose()

    app = create_service_app(
        title="Carbon disclosure",
        description="Consent-filtered partner feeds (signed webhooks, pull) and environmental-information "
                    "disclosure reports.",
        verifier=settings.token_verifier(),
        max_body_bytes=settings.max_body_bytes,
        ready=lambda: ping(engine),
        lifespan=lifespan,
    )
    app.state.projector = projector
    app.state.workers = workers
    app.state.disclosure = DisclosureService(engine, allow_private=settings.webhook_allow_private,
                                             access_log=access_log, resolve=resolve, wake_workers=workers.wake,
                                             position=projector.position)
    app.include_router(router)
    return app
