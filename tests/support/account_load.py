"""Load on the account service as clients make it: valid events over HTTP, each append retried under its
Idempotency-Key until it succeeds, so an append whose answer was lost is never written twice.

What every append did is kept, so a test can hold the store to it afterwards: each key written once,
whole (all its events or none), at the versions the service answered.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from carbon.auth import mint_token
from contracts.types import uscc_check_character

PROBLEM_JSON = "application/problem+json"


def uscc(n: int, region: str = "9144030") -> str:
    first17 = f"{region}{n:010d}"
    return first17 + uscc_check_character(first17)


def auth(secret: str, role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, sub=sub, role=role)}"}


def register(client: httpx.Client, secret: str, enterprise: str, industry: str = "C3011") -> None:
    body = {"uscc": enterprise, "name": f"Enterprise {enterprise[-6:]}", "industry": industry, "region": "440300"}
    response = client.post("/v1/enterprises", json=body, headers=auth(secret, "operator", "ops"))
    assert response.status_code == 201, response.text


def grant(client: httpx.Client, secret: str, enterprise: str, grantee: str, scopes: list[str]) -> str:
    body = {"grantee": grantee, "scopes": scopes, "purpose": "green loan review",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()}
    response = client.post(f"/v1/enterprises/{enterprise}/consents", json=body,
                           headers=auth(secret, "enterprise", enterprise))
    assert response.status_code == 201, response.text
    return response.json()["consent_id"]


def yearly_report(enterprise: str, k: int) -> list[dict]:
    """An enterprise's k-th report: activity and an emission for one quarter, so the rating moves."""
    year, quarter = 2015 + (k // 4) % 10, k % 4 + 1
    period = f"{year}-Q{quarter}"
    seed = int(enterprise[7:17]) * 31 + k
    return [
        {"type": "ActivityReported", "data": {"period": period, "revenue_10k_cny": str(8000 + seed % 5000),
                                              "output": {"quantity": str(200000 + seed % 90000), "unit": "t"}}},
        {"type": "EmissionRecorded", "data": {
            "calculation_id": f"calc-{k}", "period": period, "scope": 1 + seed % 2, "category": "process",
            "gas": "CO2", "tco2e": str(50000 + (seed * 7919) % 200000), "factor_ref": "GB/T 32151.8-2015",
            "methodology": "GB/T 32151.8-2015", "data_quality": 1 + seed % 5}},
    ]


@dataclass(frozen=True, slots=True)
class Append:
    enterprise: str
    key: str
    events: int
    first_version: int
    last_version: int


@dataclass
class AccountWriters:
    """Threads appending reports to their own enterprises (thread i owns every i-th one), round robin."""

    urls: list[str]
    secret: str
    enterprises: list[str]
    threads: int = 3
    pause_s: float = 0.0
    give_up_after_s: float = 90.0  # how long one append may keep failing before the writer reports it
    done: list[Append] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # answers that are not a clean, retryable failure
    failures: list[str] = field(default_factory=list)  # clean failures (5xx problem, connection error)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"writer-{i}")
                         for i in range(self.threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Writers finish the append they are on (retrying it as long as it takes), then end."""
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not self.errors, f"a writer failed: {self.errors[0]!r}"
        assert not any(t.is_alive() for t in self._threads), "the writers did not finish in time"

    def events(self) -> int:
        with self._lock:
            return sum(a.events for a in self.done)

    def _run(self, index: int) -> None:
        own = self.enterprises[index::self.threads]
        rng = random.Random(index)
        clients = [httpx.Client(base_url=url, timeout=30) for url in self.urls]
        try:
            k = 0
            while not self._stop.is_set():
                for enterprise in own:
                    if self._stop.is_set():
                        break
                    self._append(clients, enterprise, k, rng)
                    if self.pause_s:
                        time.sleep(self.pause_s)
                k += 1
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.errors.append(exc)
        finally:
            for client in clients:
                client.close()

    def _append(self, clients: list[httpx.Client], enterprise: str, k: int, rng: random.Random) -> None:
        key = f"report-{enterprise}-{k}"
        events = yearly_report(enterprise, k)
        headers = {**auth(self.secret, "enterprise", enterprise), "Idempotency-Key": key}
        deadline = time.monotonic() + self.give_up_after_s
        attempt = 0
        while True:
            client = clients[(k + attempt) % len(clients)]
            attempt += 1
            try:
                response = client.post(f"/v1/enterprises/{enterprise}/events",
                                       json={"expected_version": None, "events": events}, headers=headers)
            except httpx.TransportError as exc:
                self._note(self.failures, f"{type(exc).__name__}")
            else:
                if response.status_code == 201:
                    body = response.json()
                    assert body["last_version"] - body["first_version"] + 1 == len(events) == len(body["positions"])
                    with self._lock:
                        self.done.append(Append(enterprise, key, len(events), body["first_version"],
                                                body["last_version"]))
                    return
                clean = (response.status_code >= 500
                         and response.headers.get("content-type", "").startswith(PROBLEM_JSON))
                self._note(self.failures if clean else self.refusals, f"{response.status_code} {response.text[:200]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"append {key} kept failing for {self.give_up_after_s:.0f}s")
            time.sleep(rng.uniform(0.05, 0.3))

    def _note(self, where: list[str], what: str) -> None:
        with self._lock:
            where.append(what)
