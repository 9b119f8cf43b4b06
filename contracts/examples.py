"""Valid sample values for tests, demos and documentation.

The USCCs are made up but carry correct GB 32100-2015 check characters.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CEMENT_MAKER_USCC",
    "POWER_PLANT_USCC",
    "VERIFIER_USCC",
    "EXAMPLE_USCCS",
    "CEMENT_INDUSTRY",
    "THERMAL_POWER_INDUSTRY",
    "SICHUAN",
    "CHENGDU",
    "LESHAN",
    "EXAMPLE_EVENT_DATA",
]

# A cement maker registered in Chengdu, Sichuan.
CEMENT_MAKER_USCC = "91510100MA6CN3011R"
# A coal-fired power plant registered in Leshan, Sichuan.
POWER_PLANT_USCC = "91511100MA62D4411L"
# A third-party verification body in Chengdu (Wuhou district).
VERIFIER_USCC = "91510107MA6HY00013"
EXAMPLE_USCCS = (CEMENT_MAKER_USCC, POWER_PLANT_USCC, VERIFIER_USCC)

CEMENT_INDUSTRY = "C3011"  # cement manufacturing
THERMAL_POWER_INDUSTRY = "D4411"  # thermal power generation
SICHUAN = "510000"
CHENGDU = "510100"
LESHAN = "511100"

# One valid `data` per event type, in wire (JSON) form.
EXAMPLE_EVENT_DATA: dict[str, dict[str, Any]] = {
    "EnterpriseRegistered": {
        "uscc": CEMENT_MAKER_USCC,
        "name": "Sichuan Example Cement Co., Ltd.",
        "industry": CEMENT_INDUSTRY,
        "region": CHENGDU,
    },
    "ConsentGranted": {
        "consent_id": "0b6f4e8a-2d1c-4f3a-9e57-6c1d2e3f4a5b",
        "grantee": "bank-a",
        "scopes": ["rating:read", "pricing:read"],
        "purpose": "Bill discounting under the green supply-chain programme",
        "expires_at": "2027-06-30T00:00:00Z",
    },
    "ConsentRevoked": {
        "consent_id": "0b6f4e8a-2d1c-4f3a-9e57-6c1d2e3f4a5b",
        "reason": "programme ended",
    },
    "ActivityReported": {
        "period": "2024",
        "revenue_10k_cny": "125000.5",
        "output": {"quantity": "1200000", "unit": "t"},
    },
    "EmissionRecorded": {
        "calculation_id": "calc-2024-cement-01",
        "period": "2024",
        "scope": 1,
        "category": "process",
        "gas": "CO2",
        "tco2e": "642000.25",
        "factor_ref": "GB/T 32151.8-2015 clinker default",
        "methodology": "GB/T 32151.8-2015",
        "data_quality": 4,
    },
    "EmissionVerified": {
        "period": "2024",
        "verifier": VERIFIER_USCC,
        "verified_tco2e": "810500.75",
        "report_ref": "VR-2025-0031",
    },
    "ReductionRecorded": {
        "project_id": "waste-heat-power-1",
        "period": "2024",
        "methodology": "CCER-14-001-V01",
        "baseline_tco2e": "52000",
        "project_tco2e": "4000.5",
        "reduction_tco2e": "47999.5",
        "benefits": {"standard_coal_saved_t": "18250", "so2_reduced_t": "12.4"},
    },
    "ReductionVerified": {
        "project_id": "waste-heat-power-1",
        "period": "2024",
        "verifier": VERIFIER_USCC,
        "verified_reduction_tco2e": "47000",
        "report_ref": "VR-2025-0032",
    },
    "CarbonAssetAcquired": {
        "asset": "CCER",
        "batch": "CCER-2024-000123",
        "quantity_t": "20000",
        "source": "issuance",
    },
    "CarbonAssetPledged": {
        "pledge_id": "PL-2025-0007",
        "asset": "CCER",
        "batch": "CCER-2024-000123",
        "quantity_t": "8000",
        "pledgee": "bank-a",
        "loan_ref": "LOAN-2025-118",
    },
    "CarbonAssetReleased": {"pledge_id": "PL-2025-0007"},
    "CarbonAssetTransferred": {
        "asset": "CCER",
        "batch": "CCER-2024-000123",
        "quantity_t": "1000",
        "counterparty": POWER_PLANT_USCC,
    },
    "CreditsRetired": {
        "asset": "CCER",
        "batch": "CCER-2024-000123",
        "quantity_t": "500",
        "period": "2024",
        "purpose": "Neutralise 2024 business-travel emissions",
        "retirement_ref": "RET-2025-0042",
    },
}
