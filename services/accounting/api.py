"""HTTP interface of the accounting service (SPEC §6 "accounting")."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool
from pydantic_core import PydanticCustomError

from carbon.account_client import AccountClient
from carbon.auth import CurrentPrincipal
from carbon.db import make_engine, ping
from carbon.eventstore.hashing import unhashable
from carbon.http import create_service_app
from carbon.migrate import upgrade
from carbon.problems import AUTHENTICATED, WITH_BODY, Problem, problem_responses
from contracts import USCC, Output, Period
from contracts.types import SINGLE_LINE_PATTERN, Identifier, IndustryCode, LongIdentifier, Money
from services.accounting.catalogue import Catalogue, default_catalogue
from services.accounting.domain import Organisation, ProjectType
from services.accounting.service import AccountingService, RecordingFailed
from services.accounting.settings import AccountingSettings

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_ACTIVITIES = 500


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fingerprintable(value: Any) -> Any:
    # The request is fingerprinted (RFC 8785) before the domain reads it, so refuse what cannot be.
    if (why := unhashable(value)) is not None:
        raise PydanticCustomError("json_value", why)
    return value


FreeJson = Annotated[Any, AfterValidator(_fingerprintable)]


class CalculationRequest(Strict):
    enterprise_id: USCC
    period: Period
    activities: list[FreeJson] = Field(
        min_length=1, max_length=MAX_ACTIVITIES,
        description="each an object with a `category` (fuel_combustion, process, purchased_electricity, "
                    "purchased_heat, fugitive, exported_electricity, exported_heat, co2_recovery; for "
                    "non-industrial organisations stationary_combustion and mobile_combustion), a decimal-string "
                    "`quantity` and a `unit`",
        examples=[[{"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "10", "unit": "10^4 Nm3"}]],
    )
    record: StrictBool = False
    calculation_id: LongIdentifier | None = Field(default=None, description="reuse to retry; a new UUID when absent")
    organisation: Organisation = "industrial"
    gwp: str | None = Field(default=None, description="AR5 (default) or AR4")
    factor_edition: str | None = Field(default=None, description="grid-factor edition: mee-nbs (default) or mee-ets")
    industry: IndustryCode | None = Field(default=None, description="GB/T 4754 code, for the intensity and energy-mix checks")
    revenue_10k_cny: Money | None = Field(default=None, description="revenue of the period in 10 000 CNY")
    output: Output | None = None


class BenefitRequest(Strict):
    enterprise_id: USCC
    project_id: Identifier
    project_type: ProjectType
    period: Period
    parameters: dict[str, FreeJson] = Field(examples=[{"annual_generation_mwh": "10000", "grid": "510000", "year": 2022}])
    record: StrictBool = False
    calculation_id: LongIdentifier | None = None
    factor_edition: str | None = None


class FactorList(BaseModel):
    factors: list[dict[str, Any]]
    catalogue_version: str
    editions: list[dict[str, Any]]
    next: str | None = None


def _service(request: Request) -> AccountingService:
    return request.app.state.accounting


Accounting = Annotated[AccountingService, Depends(_service)]
router = APIRouter(prefix="/v1", tags=["accounting"], responses=problem_responses(*AUTHENTICATED))


def _recording(call):  # noqa: ANN001, ANN202 - wraps a use case that may record on the account
    try:
        return call()
    except RecordingFailed as exc:
        if exc.retryable:
            raise Problem(503, "Service Unavailable", exc.detail, slug="account-unavailable",
                          headers={"Retry-After": "5"}) from None
        raise Problem(502, "Bad Gateway", exc.detail, slug="account-refused") from None


@router.get("/factors", response_model=FactorList, summary="The emission-factor catalogue, filterable")
def list_factors(
    _principal: CurrentPrincipal,
    accounting: Accounting,
    kind: Annotated[str | None, Query(max_length=32, description="fuel, gwp, grid, grid_baseline, heat, process, …")] = None,
    fuel: Annotated[str | None, Query(max_length=64)] = None,
    region: Annotated[str | None, Query(max_length=32, description="national, a regional grid, or a GB/T 2260 code")] = None,
    year: Annotated[int | None, Query(ge=1990, le=2100)] = None,
    edition: Annotated[str | None, Query(max_length=64)] = None,
    gas: Annotated[str | None, Query(max_length=8)] = None,
) -> Any:
    catalogue: Catalogue = accounting.catalogue
    factors = accounting.factors(kind=kind, fuel=fuel, region=region, year=year, edition=edition, gas=gas)
    return {"factors": factors, "catalogue_version": catalogue.version,
            "editions": [e.model_dump() for e in catalogue.editions], "next": None}


@router.post("/calculations", summary="Calculate an enterprise's emissions; record them with record: true",
             responses=problem_responses(*WITH_BODY, 404, 409, 502, 503))
def calculate(body: CalculationRequest, principal: CurrentPrincipal, accounting: Accounting) -> dict[str, Any]:
    return _recording(lambda: accounting.calculate(principal, body.model_dump(mode="json")))


@router.get("/calculations/{calculation_id}", summary="A stored calculation or benefit measurement",
            responses=problem_responses(404))
def read_calculation(
    calculation_id: Annotated[str, PathParam(max_length=128, pattern=SINGLE_LINE_PATTERN)], principal: CurrentPrincipal, accounting: Accounting
) -> dict[str, Any]:
    return accounting.read(principal, calculation_id)


@router.post("/benefits", summary="Measure a green project's environmental benefits; record with record: true",
             responses=problem_responses(*WITH_BODY, 404, 409, 502, 503))
def measure_benefits(body: BenefitRequest, principal: CurrentPrincipal, accounting: Accounting) -> dict[str, Any]:
    return _recording(lambda: accounting.benefits(principal, body.model_dump(mode="json")))


def create_app(settings: AccountingSettings | None = None, *, catalogue: Catalogue | None = None) -> FastAPI:
    settings = settings or AccountingSettings()
    catalogue = catalogue or default_catalogue()  # validated now: a bad data file stops the start
    engine = make_engine(settings.resolved_database_url())
    account = AccountClient(settings.account_url, tokens=settings.service_tokens("accounting"),
                            service_name="accounting", timeout=settings.account_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        upgrade(engine, MIGRATIONS)
        yield
        account.close()
        engine.dispose()

    app = create_service_app(
        title="Carbon accounting",
        description="GHG accounting after GB/T 32150-2015 and ISO 14064-1, and green projects' environmental "
                    "benefits; every figure names its formula, factors and sources.",
        verifier=settings.token_verifier(),
        max_body_bytes=settings.max_body_bytes,
        ready=lambda: ping(engine),
        lifespan=lifespan,
    )
    app.state.accounting = AccountingService(engine, catalogue, account, yoy_threshold=settings.yoy_threshold)
    app.include_router(router)
    return app
