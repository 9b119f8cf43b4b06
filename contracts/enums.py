"""Closed vocabularies shared by the events, tokens and HTTP interfaces."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """The `role` claim of a caller's token (SPEC §1)."""

    ENTERPRISE = "enterprise"
    BANK = "bank"
    REGULATOR = "regulator"
    PARTNER = "partner"
    VERIFIER = "verifier"
    REGISTRY = "registry"
    SERVICE = "service"
    OPERATOR = "operator"


class Scope(StrEnum):
    """What a consent lets its grantee do with the enterprise's data."""

    RATING_READ = "rating:read"
    PRICING_READ = "pricing:read"
    EVENTS_SUBSCRIBE = "events:subscribe"
    DISCLOSURE_READ = "disclosure:read"
    ACCOUNT_READ = "account:read"
    ACCOUNT_VERIFY = "account:verify"


class Gas(StrEnum):
    """The seven Kyoto Protocol greenhouse gases."""

    CO2 = "CO2"
    CH4 = "CH4"
    N2O = "N2O"
    HFCs = "HFCs"
    PFCs = "PFCs"
    SF6 = "SF6"
    NF3 = "NF3"


class AssetKind(StrEnum):
    """Carbon assets a registry can hold for an enterprise."""

    CCER = "CCER"  # China Certified Emission Reduction
    CDCER = "CDCER"  # Chengdu carbon-inclusion reduction (碳惠天府)
    VCU = "VCU"  # Verra Verified Carbon Unit
    CER = "CER"  # CDM Certified Emission Reduction
    CEA = "CEA"  # national ETS allowance
