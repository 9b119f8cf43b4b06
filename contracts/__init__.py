"""Event contracts of the carbon account platform (SPEC §7).

One pydantic model per event type, the envelope events travel in, the value
types they are built from, and their exported JSON Schemas (`contracts/schemas`).
"""

from contracts.enums import AssetKind, Gas, Role, Scope
from contracts.envelope import GENESIS_HASH, Actor, EventEnvelope, EventMetadata
from contracts.errors import EventValidationError, field_errors
from contracts.events import (
    EVENT_TYPES,
    ActivityReported,
    CarbonAssetAcquired,
    CarbonAssetPledged,
    CarbonAssetReleased,
    CarbonAssetTransferred,
    ConsentGranted,
    ConsentRevoked,
    CreditsRetired,
    EmissionRecorded,
    EmissionVerified,
    EnterpriseRegistered,
    EventData,
    Output,
    ReductionRecorded,
    ReductionVerified,
    parse_event,
)
from contracts.types import (
    USCC,
    IndustryCode,
    Money,
    Period,
    PositiveTonnes,
    RegionCode,
    Tonnes,
    is_valid_uscc,
    period_contains,
    period_year,
    uscc_check_character,
)

__all__ = [
    "EVENT_TYPES",
    "GENESIS_HASH",
    "ActivityReported",
    "Actor",
    "AssetKind",
    "CarbonAssetAcquired",
    "CarbonAssetPledged",
    "CarbonAssetReleased",
    "CarbonAssetTransferred",
    "ConsentGranted",
    "ConsentRevoked",
    "CreditsRetired",
    "EmissionRecorded",
    "EmissionVerified",
    "EnterpriseRegistered",
    "EventData",
    "EventEnvelope",
    "EventMetadata",
    "EventValidationError",
    "Gas",
    "IndustryCode",
    "Money",
    "Output",
    "Period",
    "PositiveTonnes",
    "ReductionRecorded",
    "ReductionVerified",
    "RegionCode",
    "Role",
    "Scope",
    "Tonnes",
    "USCC",
    "field_errors",
    "is_valid_uscc",
    "parse_event",
    "period_contains",
    "period_year",
    "uscc_check_character",
]
