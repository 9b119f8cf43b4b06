"""The data of each event type (SPEC §7), version 1.

These models check what a single event can check on its own. Rules that need
the stream (consent still active, pledge within the free balance, emissions
recorded before verification, ...) belong to the account service.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contracts.enums import AssetKind, Gas, Scope
from contracts.errors import EventValidationError, field_errors
from contracts.types import (
    USCC,
    DataQuality,
    Description,
    GhgScope,
    Identifier,
    IndustryCode,
    LongIdentifier,
    Money,
    Name,
    NonNegativeDecimal,
    OptionalDescription,
    PartyId,
    Period,
    PositiveTonnes,
    Reference,
    RegionCode,
    SnakeCase,
    Tonnes,
    Unit,
    UtcDatetime,
)

__all__ = [
    "EventData",
    "EnterpriseRegistered",
    "ConsentGranted",
    "ConsentRevoked",
    "ActivityReported",
    "Output",
    "EmissionRecorded",
    "EmissionVerified",
    "ReductionRecorded",
    "ReductionVerified",
    "CarbonAssetAcquired",
    "CarbonAssetPledged",
    "CarbonAssetReleased",
    "CarbonAssetTransferred",
    "CreditsRetired",
    "EVENT_TYPES",
    "parse_event",
]


class EventData(BaseModel):
    """Base of every event's `data`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


# --- Account and consent ----------------------------------------------------


class EnterpriseRegistered(EventData):
    """An enterprise's carbon account is opened; always version 1 of its stream."""

    TYPE: ClassVar[str] = "EnterpriseRegistered"

    uscc: USCC
    name: Name
    industry: IndustryCode
    region: RegionCode


class ConsentGranted(EventData):
    """The enterprise lets a party use its data for the listed scopes until `expires_at`."""

    TYPE: ClassVar[str] = "ConsentGranted"

    consent_id: UUID
    grantee: PartyId = Field(description="the `sub` of the party receiving consent")
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]
    purpose: Description
    expires_at: UtcDatetime

    @field_validator("scopes")
    @classmethod
    def _no_duplicate_scopes(cls, scopes: list[Scope]) -> list[Scope]:
        seen: set[Scope] = set()
        for s in scopes:
            if s in seen:
                raise PydanticCustomError("duplicate_scope", f"scope '{s.value}' is listed more than once")
            seen.add(s)
        return scopes


class ConsentRevoked(EventData):
    """A consent ends before its expiry."""

    TYPE: ClassVar[str] = "ConsentRevoked"

    consent_id: UUID
    reason: OptionalDescription = None


# --- Activity and emissions -------------------------------------------------


class Output(BaseModel):
    """Physical output of the period, e.g. tonnes of clinker or MWh generated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: NonNegativeDecimal
    unit: Unit


class ActivityReported(EventData):
    """Revenue and output of a period, the denominators of intensity metrics."""

    TYPE: ClassVar[str] = "ActivityReported"

    period: Period
    revenue_10k_cny: Money = Field(description="revenue in units of 10,000 CNY")
    output: Output


class EmissionRecorded(EventData):
    """One calculated emission line; a correction names the event it supersedes."""

    TYPE: ClassVar[str] = "EmissionRecorded"

    calculation_id: LongIdentifier
    period: Period
    scope: GhgScope
    category: SnakeCase = Field(
        description="e.g. fuel_combustion, process, purchased_electricity, purchased_heat"
    )
    gas: Gas
    tco2e: Tonnes
    factor_ref: Reference
    methodology: Reference
    data_quality: DataQuality
    supersedes: UUID | None = Field(
        default=None, description="event_id of the EmissionRecorded event this corrects"
    )


class EmissionVerified(EventData):
    """A verification body confirms the emissions of a period."""

    TYPE: ClassVar[str] = "EmissionVerified"

    period: Period
    verifier: PartyId
    verified_tco2e: Tonnes
    report_ref: Reference


# --- Reductions -------------------------------------------------------------


class ReductionRecorded(EventData):
    """The emission reduction a project achieved against its baseline."""

    TYPE: ClassVar[str] = "ReductionRecorded"

    project_id: Identifier
    period: Period
    methodology: Reference
    baseline_tco2e: Tonnes
    project_tco2e: Tonnes
    reduction_tco2e: Tonnes
    benefits: Annotated[dict[SnakeCase, NonNegativeDecimal], Field(max_length=64)] = Field(
        default_factory=dict,
        description="environmental benefits by name, e.g. standard_coal_saved_t, so2_reduced_t",
        json_schema_extra={"additionalProperties": False},
    )

    # A field validator (not a model one) so the error names reduction_tco2e;
    # baseline and project are declared first, so they are in info.data when valid.
    @field_validator("reduction_tco2e")
    @classmethod
    def _reduction_is_difference(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        baseline = info.data.get("baseline_tco2e")
        project = info.data.get("project_tco2e")
        if baseline is None or project is None:
            return value
        expected = baseline - project
        if expected < 0:
            raise PydanticCustomError(
                "reduction_negative",
                f"project emissions ({project}) exceed the baseline ({baseline}): "
                "there is no reduction to record",
            )
        if value != expected:
            raise PydanticCustomError(
                "reduction_mismatch",
                f"must equal baseline_tco2e - project_tco2e = {expected}, got {value}",
            )
        return value


class ReductionVerified(EventData):
    """A verification body confirms a project's reduction for a period."""

    TYPE: ClassVar[str] = "ReductionVerified"

    project_id: Identifier
    period: Period
    verifier: PartyId
    verified_reduction_tco2e: Tonnes
    report_ref: Reference


# --- Carbon assets (written by the registry) --------------------------------


class CarbonAssetAcquired(EventData):
    """The registry records carbon assets credited to the enterprise."""

    TYPE: ClassVar[str] = "CarbonAssetAcquired"

    asset: AssetKind
    batch: Identifier
    quantity_t: PositiveTonnes
    source: Reference


class CarbonAssetPledged(EventData):
    """Part of a holding is frozen as collateral for a bank loan."""

    TYPE: ClassVar[str] = "CarbonAssetPledged"

    pledge_id: Identifier
    asset: AssetKind
    batch: Identifier
    quantity_t: PositiveTonnes
    pledgee: PartyId = Field(description="the `sub` of the bank holding the pledge")
    loan_ref: Reference


class CarbonAssetReleased(EventData):
    """A pledge ends and its assets are free again."""

    TYPE: ClassVar[str] = "CarbonAssetReleased"

    pledge_id: Identifier


class CarbonAssetTransferred(EventData):
    """Assets leave the enterprise's holding for a counterparty."""

    TYPE: ClassVar[str] = "CarbonAssetTransferred"

    asset: AssetKind
    batch: Identifier
    quantity_t: PositiveTonnes
    counterparty: PartyId


class CreditsRetired(EventData):
    """Assets are retired to neutralise emissions of a period."""

    TYPE: ClassVar[str] = "CreditsRetired"

    asset: AssetKind
    batch: Identifier
    quantity_t: PositiveTonnes
    period: Period
    purpose: Description
    retirement_ref: Reference


EVENT_TYPES: dict[str, type[EventData]] = {
    m.TYPE: m
    for m in (
        EnterpriseRegistered,
        ConsentGranted,
        ConsentRevoked,
        ActivityReported,
        EmissionRecorded,
        EmissionVerified,
        ReductionRecorded,
        ReductionVerified,
        CarbonAssetAcquired,
        CarbonAssetPledged,
        CarbonAssetReleased,
        CarbonAssetTransferred,
        CreditsRetired,
    )
}


def parse_event(type: str, data: Any) -> EventData:  # noqa: A002 - the wire name
    """Validate `data` as an event of `type`, or raise `EventValidationError`."""
    model = EVENT_TYPES.get(type) if isinstance(type, str) else None
    if model is None:
        known = ", ".join(sorted(EVENT_TYPES))
        shown = repr(type) if isinstance(type, str) else "a non-string value"
        raise EventValidationError(
            [{"field": "type", "message": f"unknown event type {shown}; known types: {known}"}]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(field_errors(exc, prefix="data")) from None
