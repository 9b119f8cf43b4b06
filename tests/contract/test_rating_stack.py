"""The account and rating services side by side on real ports: helpers shared by the rating suites (no tests here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from carbon.auth import mint_token
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.rating.api import create_app as create_rating_app
from services.rating.settings import RatingSettings
from tests.live import serve

SECRET = "rating-suite-secret-long-enough-for-hs256-keys"
VERIFIER = "verifier-cq"


class Clock:
    """The rating service's clock: real time, moved forward on demand (consent expiry, maturity)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


def headers(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}"}


class Stack:
    def __init__(self, account_url: str, rating_url: str, rating_app, clock: Clock) -> None:
        self.account = httpx.Client(base_url=account_url, timeout=30)
        self.rating = httpx.Client(base_url=rating_url, timeout=30)
        self.app, self.clock = rating_app, clock

    def close(self) -> None:
        self.account.close()
        self.rating.close()

    # ---- account side ----------------------------------------------------------------------------

    def register(self, uscc: str, industry: str = "C3011", name: str = "Sichuan Example Co.") -> None:
        body = {"uscc": uscc, "name": name, "industry": industry, "region": "510100"}
        response = self.account.post("/v1/enterprises", json=body, headers=headers("operator", "ops"))
        assert response.status_code == 201, response.text

    def append(self, enterprise: str, events: list[dict], role: str = "enterprise", sub: str | None = None) -> dict:
        response = self.account.post(f"/v1/enterprises/{enterprise}/events",
                                     json={"expected_version": None, "events": events},
                                     headers=headers(role, sub or enterprise))
        assert response.status_code == 201, response.text
        return response.json()

    def grant(self, enterprise: str, grantee: str, scopes: list[str], expires_in: timedelta = timedelta(days=30)) -> str:
        body = {"grantee": grantee, "scopes": scopes, "purpose": "loan review",
                "expires_at": (datetime.now(UTC) + expires_in).isoformat()}
        response = self.account.post(f"/v1/enterprises/{enterprise}/consents", json=body,
                                     headers=headers("enterprise", enterprise))
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    def revoke(self, enterprise: str, consent_id: str) -> None:
        response = self.account.delete(f"/v1/enterprises/{enterprise}/consents/{consent_id}",
                                       headers=headers("enterprise", enterprise))
        assert response.status_code == 200, response.text

    def head(self) -> int | None:
        after = None
        while True:
            params = {"limit": 1000} | ({"after": after} if after is not None else {})
            page = self.account.get("/v1/events", params=params, headers=headers("operator", "ops")).json()["events"]
            if not page:
                return after
            after = page[-1]["position"]

    def sync(self, timeout_s: float = 20) -> None:
        """Wait (bounded) until the rating projection has applied everything the account has committed."""
        target = self.head()
        deadline = time.monotonic() + timeout_s
        while target is not None and (self.app.state.projector.position() or -1) < target:
            assert time.monotonic() < deadline, "the rating projection did not catch up in time"
            time.sleep(0.02)

    # ---- rating side -----------------------------------------------------------------------------

    def get(self, path: str, role: str, sub: str, **params) -> httpx.Response:
        return self.rating.get(path, params=params, headers=headers(role, sub))

    def post(self, path: str, body: dict, role: str, sub: str) -> httpx.Response:
        return self.rating.post(path, json=body, headers=headers(role, sub))


@contextmanager
def rating_stack(rating_database_url: str, tmp_path: Path, **rating_settings) -> Iterator[Stack]:
    account_app = create_account_app(AccountSettings(database_url=f"sqlite:///{tmp_path / 'account.db'}",
                                                     jwt_secret=SECRET))
    clock = Clock()
    with serve(account_app) as account_url:
        settings = RatingSettings(database_url=rating_database_url, jwt_secret=SECRET, account_url=account_url,
                                  data_dir=tmp_path, **rating_settings)
        rating_app = create_rating_app(settings, clock=clock)
        with serve(rating_app) as rating_url:
            stack = Stack(account_url, rating_url, rating_app, clock)
            try:
                yield stack
            finally:
                stack.close()


# ---- events -------------------------------------------------------------------------------------

def activity(period: str, revenue: str = "50000", output: str = "1000000", unit: str = "t") -> dict:
    return {"type": "ActivityReported",
            "data": {"period": period, "revenue_10k_cny": revenue, "output": {"quantity": output, "unit": unit}}}


def emission(period: str, tco2e: str, *, scope: int = 1, quality: int = 4, supersedes: str | None = None,
             calc: str = "calc") -> dict:
    data = {"calculation_id": calc, "period": period, "scope": scope, "category": "process", "gas": "CO2",
            "tco2e": tco2e, "factor_ref": "GB/T 32151.8-2015", "methodology": "GB/T 32151.8-2015",
            "data_quality": quality}
    if supersedes:
        data["supersedes"] = supersedes
    return {"type": "EmissionRecorded", "data": data}


def emission_verified(period: str, tco2e: str, verifier: str = VERIFIER) -> dict:
    return {"type": "EmissionVerified",
            "data": {"period": period, "verifier": verifier, "verified_tco2e": tco2e, "report_ref": f"VR-{period}"}}


def reduction(project: str, period: str, baseline: str, project_t: str) -> dict:
    from decimal import Decimal

    return {"type": "ReductionRecorded", "data": {
        "project_id": project, "period": period, "methodology": "CCER-14-001-V01", "baseline_tco2e": baseline,
        "project_tco2e": project_t, "reduction_tco2e": str(Decimal(baseline) - Decimal(project_t))}}


def reduction_verified(project: str, period: str, tco2e: str, verifier: str = VERIFIER) -> dict:
    return {"type": "ReductionVerified", "data": {
        "project_id": project, "period": period, "verifier": verifier, "verified_reduction_tco2e": tco2e,
        "report_ref": f"VR-{project}-{period}"}}


def acquired(batch: str, quantity: str) -> dict:
    return {"type": "CarbonAssetAcquired", "data": {"asset": "CCER", "batch": batch, "quantity_t": quantity,
                                                    "source": "issuance"}}


def retired(batch: str, quantity: str, period: str) -> dict:
    return {"type": "CreditsRetired", "data": {"asset": "CCER", "batch": batch, "quantity_t": quantity,
                                               "period": period, "purpose": "neutralisation",
                                               "retirement_ref": f"RET-{batch}"}}
