"""HTTP interface of the rating service (SPEC §6 "rating")."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time as day_time
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from carbon.auth import CurrentPrincipal
from carbon.db import MAX_POSITION, make_engine, ping
from carbon.errors import Invalid
from carbon.http import create_service_app
from carbon.problems import AUTHENTICATED, WITH_BODY, problem_responses
from carbon.projection import Projector
from carbon.projection_runtime import RunningProjection, source_for
from contracts import Money, Role
from contracts.examples import CEMENT_MAKER_USCC
from contracts.types import SINGLE_LINE_PATTERN
from services.rating import domain
from services.rating.projection import build_projector, migrate
from services.rating.service import AccessEntry, RatingService
from services.rating.settings import RatingSettings

EnterpriseId = Annotated[str, Path(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN,
                                   description="The enterprise's USCC", examples=[CEMENT_MAKER_USCC])]
JSON = "application/json"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- request bodies -----------------------------------------------------------------------------

class BillIn(Strict):
    bill_no: str = Field(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN)
    amount_cny: Money
    maturity: date
    project_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN)

    @field_validator("amount_cny")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


class EligibilityRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"issuer_id": CEMENT_MAKER_USCC, "bills": [
        {"bill_no": "B-2025-0001", "amount_cny": "5000000", "maturity": "2030-06-30", "project_id": "waste-heat-power-1"}]}]})

    issuer_id: str = Field(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN)
    bills: list[BillIn] = Field(min_length=1, max_length=500)

    @field_validator("bills")
    @classmethod
    def _distinct(cls, bills: list[BillIn]) -> list[BillIn]:
        numbers = [b.bill_no for b in bills]
        if len(set(numbers)) != len(numbers):
            raise ValueError("each bill_no may appear only once")
        return bills


class ClaimRequest(Strict):
    decision_id: str = Field(min_length=1, max_length=36, pattern=SINGLE_LINE_PATTERN,
                             description="An eligible re-discount eligibility decision")
    reference: str | None = Field(default=None, max_length=128, pattern=SINGLE_LINE_PATTERN,
                                  description="The regulator's own reference")


class AccessIn(Strict):
    party: str = Field(min_length=1, max_length=128, pattern=SINGLE_LINE_PATTERN)
    role: Role
    what: str = Field(min_length=1, max_length=200, pattern=SINGLE_LINE_PATTERN)
    consent_id: str | None = Field(default=None, max_length=64, pattern=SINGLE_LINE_PATTERN)
    supervisory: bool = False


# ---- response shapes (documentation; answers are served as the stored decision bytes) ---------------

class FactorOut(BaseModel):
    name: str
    value: str | None
    benchmark: str | None
    unit: str
    points: int
    max_points: int
    explanation: str
    detail: dict[str, Any]


class MissingOut(BaseModel):
    code: str
    detail: str


class RatingOut(BaseModel):
    enterprise_id: str
    status: Literal["rated", "not_rated"]
    grade: str | None
    score: int | None
    as_of: datetime
    methodology_version: str
    factors: list[FactorOut]
    missing: list[MissingOut]
    position: int | None
    period: str | None
    benchmark: dict[str, Any] | None
    recorded_at: datetime | None
    decision_id: str


class HistoryOut(BaseModel):
    enterprise_id: str
    ratings: list[dict[str, Any]]
    next: None
    as_of: datetime
    decision_id: str


class PricingOut(BaseModel):
    enterprise_id: str
    product: str
    grade: str | None
    tier: str
    adjustment_bp: int
    valid_until: datetime
    status: str
    score: int | None
    as_of: datetime
    explanation: str
    pricing_table_version: str
    methodology_version: str
    position: int | None
    decision_id: str


class ReasonOut(BaseModel):
    code: str
    met: bool
    detail: str
    bill_no: str | None = None


class EligibilityOut(BaseModel):
    eligible: bool
    reasons: list[ReasonOut]
    grade: str | None
    estimated_reduction_tco2e: str
    rediscount_rate: str
    decision_id: str
    issuer_id: str
    as_of: datetime
    threshold_grade: str
    attributable: list[dict[str, Any]]
    bills: list[dict[str, Any]]


class ClaimOut(BaseModel):
    claim_id: str
    decision_id: str
    issuer_id: str
    reserved_tco2e: str
    reservations: list[dict[str, Any]]
    claimed_at: datetime


class ReadOut(BaseModel):
    read_id: int
    at: datetime
    party: str
    role: str
    what: str
    consent_id: str | None
    supervisory: bool
    decision_id: str | None
    reported_by: str


class AccessLogOut(BaseModel):
    reads: list[ReadOut]
    next: int | None


# ---- endpoints ----------------------------------------------------------------------------------

def parse_as_of(value: str) -> datetime:
    """RFC 3339 time, or a date meaning the end of that day (UTC): what was known by its close."""
    value = value.strip().replace(" ", "+")  # an unescaped '+' in a query string arrives as a space
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), day_time.max, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid([{"field": "as_of", "message": "must be an RFC 3339 time or a date (YYYY-MM-DD)"}]) from None
    if moment.tzinfo is None:
        raise Invalid([{"field": "as_of", "message": "an RFC 3339 time needs its UTC offset (e.g. 'Z')"}])
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999 with an offset
        raise Invalid([{"field": "as_of", "message": "the time is out of range once converted to UTC"}]) from None


async def _service(request: Request) -> RatingService:
    # async: FastAPI runs a plain ``def`` dependency on the thread pool, a hop for nothing here.
    return request.app.state.ratings


Ratings = Annotated[RatingService, Depends(_service)]


def _json(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, media_type=JSON, status_code=status_code)


router = APIRouter(prefix="/v1", tags=["rating"], responses=problem_responses(*AUTHENTICATED))

# The decision-issuing reads are ``async``: they wait on the group-commit writer (which stores each
# answer before it is released) instead of holding a thread-pool thread and a transaction each.


@router.get("/ratings/{enterprise_id}", response_model=RatingOut, summary="An enterprise's carbon rating",
            responses=problem_responses(404, 503))
async def get_rating(
    enterprise_id: EnterpriseId, principal: CurrentPrincipal, ratings: Ratings,
    as_of: Annotated[str | None, Query(max_length=40, description="RFC 3339 time or date: the rating from what was recorded by then")] = None,
) -> Response:
    moment = parse_as_of(as_of) if as_of is not None else None
    return _json(await ratings.rating_async(principal, enterprise_id, moment))


@router.get("/ratings/{enterprise_id}/history", response_model=HistoryOut, summary="Every change of the rating",
            responses=problem_responses(404, 503))
async def get_history(enterprise_id: EnterpriseId, principal: CurrentPrincipal, ratings: Ratings) -> Response:
    return _json(await ratings.history_async(principal, enterprise_id))


@router.get("/pricing/{enterprise_id}", response_model=PricingOut, summary="Pricing tier and adjustment for a product",
            responses=problem_responses(404, 503))
async def get_pricing(
    enterprise_id: EnterpriseId, principal: CurrentPrincipal, ratings: Ratings,
    product: Annotated[Literal["loan", "bill_discount"], Query(description="loan or bill_discount")],
) -> Response:
    return _json(await ratings.pricing_async(principal, enterprise_id, product))


@router.post("/rediscount/eligibility", response_model=EligibilityOut,
             summary="Carbon-reduction bill re-discount eligibility, with reasons",
             responses=problem_responses(*WITH_BODY, 404, 503))
async def post_eligibility(body: EligibilityRequest, principal: CurrentPrincipal, ratings: Ratings) -> Response:
    bills = [domain.Bill(b.bill_no, b.amount_cny, b.maturity, b.project_id) for b in body.bills]
    return _json(await ratings.eligibility_async(principal, body.issuer_id, bills))


@router.post("/rediscount/claims", status_code=201, response_model=ClaimOut,
             summary="Record a granted re-discount, reserving the verified reduction behind it",
             responses=problem_responses(*WITH_BODY, 404, 409))
def post_claim(body: ClaimRequest, principal: CurrentPrincipal, ratings: Ratings) -> Any:
    return ratings.claim(principal, body.decision_id, body.reference)


@router.get("/decisions/{decision_id}", response_model=dict[str, Any], summary="A past answer, exactly as issued",
            responses=problem_responses(404))
def get_decision(decision_id: Annotated[str, Path(max_length=36, pattern=SINGLE_LINE_PATTERN)], principal: CurrentPrincipal,
                 ratings: Ratings) -> Response:
    return _json(ratings.decision(principal, decision_id))


@router.get("/methodology", summary="The rating methodology, weights, grade bands and reference data (public)")
def get_methodology(request: Request) -> dict[str, Any]:
    return request.app.state.methodology


@router.get("/access-log/{enterprise_id}", response_model=AccessLogOut,
            summary="Every third-party read of the enterprise's rating, pricing, eligibility and disclosures",
            responses=problem_responses(404))
def get_access_log(
    enterprise_id: EnterpriseId, principal: CurrentPrincipal, ratings: Ratings,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return ratings.access_log(principal, enterprise_id, after, limit)


@router.post("/access-log/{enterprise_id}", status_code=201,
             summary="Report a read served by the disclosure service (service 'disclosure' only)",
             responses=problem_responses(*WITH_BODY, 404))
def post_access_log(enterprise_id: EnterpriseId, body: AccessIn, principal: CurrentPrincipal,
                    ratings: Ratings) -> dict[str, Any]:
    entry = AccessEntry(body.party, body.role.value, body.what, body.consent_id, body.supervisory)
    return ratings.record_access(principal, enterprise_id, entry)


# ---- the application ----------------------------------------------------------------------------

class ProjectionHealth:
    """Not ready once the projection has failed for ``unready_after_s`` with no success in between."""

    def __init__(self, projector: Projector, unready_after_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.projector, self.unready_after_s, self.monotonic = projector, unready_after_s, monotonic
        self._failing_since: float | None = None

    def check(self) -> None:
        error = self.projector.last_error
        if error is None:
            self._failing_since = None
            return
        now = self.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self.unready_after_s:
            raise RuntimeError(f"the rating projection keeps failing: {error}")


def create_app(settings: RatingSettings | None = None, *,
               clock: Callable[[], datetime] | None = None) -> FastAPI:
    settings = settings or RatingSettings()
    reference = settings.reference_data()  # a bad table stops the start, not a loan later
    engine = make_engine(settings.resolved_database_url())
    projector = build_projector(engine, reference.benchmarks)
    health = ProjectionHealth(projector, settings.rating_projection_unready_after_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(engine)
        running = RunningProjection(projector, lambda: source_for(settings, projector, "rating"))
        running.start()
        try:
            yield
        finally:
            running.stop()
            await app.state.ratings.aclose()  # answers still queued are committed (and given) first
            engine.dispose()

    def ready() -> None:
        ping(engine)
        health.check()

    app = create_service_app(
        title="Carbon rating",
        description="Carbon-efficiency ratings, pricing tiers and carbon-reduction bill re-discount eligibility, "
                    "projected from the enterprises' carbon accounts.",
        verifier=settings.token_verifier(),
        max_body_bytes=settings.max_body_bytes,
        ready=ready,
        lifespan=lifespan,
    )
    app.state.ratings = RatingService(engine, reference, clock or (lambda: datetime.now(UTC)))
    app.state.projector = projector
    app.state.methodology = domain.describe(reference.benchmarks, reference.pricing, reference.rediscount)
    app.include_router(router)
    return app
