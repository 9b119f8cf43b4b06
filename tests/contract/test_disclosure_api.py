"""The disclosure service over real HTTP next to a live account service (SPEC §6 "disclosure").

The disclosure database runs on SQLite and on PostgreSQL; the account service on SQLite. A stand-in
for the rating service's access log records what the disclosure service reports to it.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pypdf
import pytest
from cloudevents.core.formats.json import JSONFormat
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook

from carbon.account_client import AccountClient
from carbon.auth import decode_token, mint_token
from contracts.types import uscc_check_character
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.settings import DisclosureSettings
from tests.live import free_port, serve

SECRET = "disclosure-suite-secret-long-enough-for-hs256"
PARTNER = "tianfu-credit"
OTHER_PARTNER = "other-platform"
VERIFIER = "verifier-cq"
REGISTRY = "sceex"


def uscc(n: int) -> str:
    first17 = f"9151010{n:010d}"
    return first17 + uscc_check_character(first17)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- a partner's webhook receiver: plain http.server on loopback ------------------------------

@dataclass
class Attempt:
    body: bytes
    headers: dict[str, str]
    status: int
    at: float

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)["data"]


@dataclass
class Receiver:
    """Answers each request with ``respond(envelope, attempt_number) -> (status, delay_s)``."""

    respond: Callable[[dict[str, Any], int], tuple[int, float]] = lambda envelope, n: (200, 0.0)
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def delivered(self, enterprise_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [a.envelope for a in self.attempts if 200 <= a.status < 300
                    and (enterprise_id is None or a.envelope["enterprise_id"] == enterprise_id)]

    def tried(self, event_id: str) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if a.envelope["event_id"] == event_id)

    def all(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)


def start_receiver(stack: ExitStack, receiver: Receiver) -> Receiver:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            envelope = json.loads(body)["data"]
            with receiver.lock:
                n = 1 + sum(1 for a in receiver.attempts if a.envelope["event_id"] == envelope["event_id"])
            status, delay = receiver.respond(envelope, n)
            if delay:
                time.sleep(delay)
            with receiver.lock:
                receiver.attempts.append(Attempt(body, {k.lower(): v for k, v in self.headers.items()}, status,
                                                 time.monotonic()))
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stack.callback(thread.join, 5)
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/carbon"
    return receiver


def verify(attempt: Attempt, secret: str) -> dict[str, Any]:
    """What a partner does: check the signature, then read the CloudEvent; returns its envelope."""
    Webhook(secret).verify(attempt.body, attempt.headers)
    event = JSONFormat().read(None, attempt.body)
    envelope = event.get_data()
    assert event.get_id() == envelope["event_id"] == attempt.headers["webhook-id"]
    assert event.get_type() == envelope["type"]
    assert event.get_source() == f"/enterprises/{envelope['enterprise_id']}"
    assert attempt.headers["content-type"] == "application/cloudevents+json"
    return envelope


# ---- the rating service's access log, as the disclosure service sees it ------------------------

def rating_stub(entries: list[dict[str, Any]], answer: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/access-log/{enterprise_id}")
    async def record(enterprise_id: str, request: Request) -> JSONResponse:
        principal = decode_token(SECRET, request.headers["authorization"].removeprefix("Bearer "))
        assert (principal.role.value, principal.sub) == ("service", "disclosure")
        if answer["status"] < 300:
            entries.append({"enterprise_id": enterprise_id, **(await request.json())})
        return JSONResponse({}, status_code=answer["status"])

    return app


# ---- the platform under test -------------------------------------------------------------------

class Platform:
    def __init__(self, account_url: str, disclosure_url: str, disclosure_app: FastAPI,
                 access_log: list[dict[str, Any]], rating_answer: dict[str, int], stack: ExitStack) -> None:
        self.account = httpx.Client(base_url=account_url, timeout=30)
        self.disclosure = httpx.Client(base_url=disclosure_url, timeout=60)
        self.app, self.access_log, self.rating_answer, self.stack = disclosure_app, access_log, rating_answer, stack
        self.log_client = AccountClient(account_url, jwt_secret=SECRET, service_name="tests")
        self._head: int | None = None
        self._next_uscc = 0

    def close(self) -> None:
        self.account.close()
        self.disclosure.close()
        self.log_client.close()

    @staticmethod
    def auth(role: str, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}"}

    # account side
    def register(self, name: str = "Sichuan Example Cement Co., Ltd.") -> str:
        self._next_uscc += 1
        enterprise = uscc(self._next_uscc)
        body = {"uscc": enterprise, "name": name, "industry": "C3011", "region": "510100"}
        response = self.account.post("/v1/enterprises", json=body, headers=self.auth("operator", "ops"))
        assert response.status_code == 201, response.text
        return enterprise

    def append(self, enterprise: str, *events: dict, role: str = "enterprise", sub: str | None = None) -> dict:
        response = self.account.post(f"/v1/enterprises/{enterprise}/events",
                                     json={"expected_version": None, "events": list(events)},
                                     headers=self.auth(role, sub or enterprise))
        assert response.status_code == 201, response.text
        return response.json()

    def activity(self, enterprise: str, n: int = 1, period: str = "2024") -> None:
        for i in range(n):
            self.append(enterprise, {"type": "ActivityReported", "data": {
                "period": period, "revenue_10k_cny": str(1000 + i), "output": {"quantity": "10", "unit": "t"}}})

    def grant(self, enterprise: str, grantee: str, scopes: list[str]) -> str:
        body = {"grantee": grantee, "scopes": scopes, "purpose": "green supply-chain programme",
                "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()}
        response = self.account.post(f"/v1/enterprises/{enterprise}/consents", json=body,
                                     headers=self.auth("enterprise", enterprise))
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    def revoke(self, enterprise: str, consent_id: str) -> None:
        response = self.account.request("DELETE", f"/v1/enterprises/{enterprise}/consents/{consent_id}",
                                        headers=self.auth("enterprise", enterprise))
        assert response.status_code == 200, response.text

    def stream(self, enterprise: str) -> list[dict]:
        response = self.account.get(f"/v1/enterprises/{enterprise}/events", params={"limit": 1000},
                                    headers=self.auth("enterprise", enterprise))
        return response.json()["events"]

    def log(self) -> list[dict]:
        out, after = [], None
        while page := self.log_client.read_log(after):
            out.extend(page)
            after = page[-1]["position"]
        return out

    def head(self) -> int | None:
        while page := self.log_client.read_log(self._head):
            self._head = page[-1]["position"]
        return self._head

    def caught_up(self, timeout_s: float = 20) -> None:
        """Wait (bounded) until the disclosure projection has applied everything the account holds."""
        head = self.head()
        projector = self.app.state.projector
        wait_for(lambda: (projector.position() or 0) >= (head or 0), timeout_s, "the disclosure projection")

    # disclosure side
    def subscribe(self, callback_url: str, event_types: list[str] | None = None, enterprise_ids: list[str] | None = None,
                  partner: str = PARTNER) -> tuple[str, str]:
        body: dict[str, Any] = {"callback_url": callback_url,
                                "event_types": event_types or ["ActivityReported", "EmissionRecorded", "ConsentGranted"]}
        if enterprise_ids is not None:
            body["enterprise_ids"] = enterprise_ids
        response = self.disclosure.post("/v1/subscriptions", json=body, headers=self.auth("partner", partner))
        assert response.status_code == 201, response.text
        created = response.json()
        return created["subscription_id"], created["secret"]

    def deliveries(self, subscription_id: str, partner: str = PARTNER, **params) -> list[dict]:
        out, after = [], None
        while True:
            query = {"limit": 500, **params, **({"after": after} if after is not None else {})}
            response = self.disclosure.get(f"/v1/subscriptions/{subscription_id}/deliveries", params=query,
                                           headers=self.auth("partner", partner))
            assert response.status_code == 200, response.text
            page = response.json()
            out.extend(page["deliveries"])
            if page["next"] is None:
                return out
            after = page["next"]

    def feed(self, subscription_id: str, after: int | None = None, limit: int = 500,
             partner: str = PARTNER) -> httpx.Response:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self.disclosure.get(f"/v1/feeds/{subscription_id}", params=params, headers=self.auth("partner", partner))


def launch(stack: ExitStack, database_url: str, tmp_path, **overrides) -> Platform:
    account_app = create_account_app(AccountSettings(database_url=f"sqlite:///{tmp_path / 'account.db'}",
                                                     jwt_secret=SECRET))
    account_url = stack.enter_context(serve(account_app))
    entries: list[dict[str, Any]] = []
    answer = {"status": 201}
    rating_url = stack.enter_context(serve(rating_stub(entries, answer)))
    settings = {
        "database_url": database_url, "jwt_secret": SECRET, "account_url": account_url, "rating_url": rating_url,
        "webhook_allow_private": True, "webhook_backoff_base_s": 0.05, "webhook_backoff_max_s": 0.2,
        "webhook_max_attempts": 4, "webhook_timeout_s": 2.0, "webhook_poll_interval_s": 0.05, "webhook_workers": 4,
        **overrides,
    }
    resolve = settings.pop("resolve", None)
    kwargs = {"resolve": resolve} if resolve else {}
    disclosure_app = create_disclosure_app(DisclosureSettings(**settings), **kwargs)
    disclosure_url = stack.enter_context(serve(disclosure_app))
    platform = Platform(account_url, disclosure_url, disclosure_app, entries, answer, stack)
    stack.callback(platform.close)
    return platform


@pytest.fixture
def launcher(database_url: str, tmp_path) -> Iterator[Callable[..., Platform]]:
    with ExitStack() as stack:
        yield lambda **overrides: launch(stack, database_url, tmp_path, **overrides)


@pytest.fixture
def platform(launcher) -> Platform:
    return launcher()


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    if reason is not None:
        assert body["reason"] == reason
    return body


# ---- subscriptions -----------------------------------------------------------------------------

def test_subscriptions_are_for_partners_with_valid_input(platform: Platform) -> None:
    url = "http://127.0.0.1:9/hook"
    body = {"callback_url": url, "event_types": ["EmissionRecorded"]}
    assert_problem(platform.disclosure.post("/v1/subscriptions", json=body), 401)
    assert_problem(platform.disclosure.post("/v1/subscriptions", json=body, headers=platform.auth("bank", "bank-a")),
                   403, "wrong_role")
    bad = platform.disclosure.post("/v1/subscriptions", headers=platform.auth("partner", PARTNER), json={
        "callback_url": url, "event_types": ["EmissionRecorded", "NoSuchEvent"], "enterprise_ids": ["123"]})
    assert {e["field"] for e in assert_problem(bad, 422)["errors"]} == {"event_types", "enterprise_ids[0]"}
    for refused, why in (("ftp://127.0.0.1/hook", "https"), ("http://user:pw@127.0.0.1/hook", "credentials")):
        response = platform.disclosure.post("/v1/subscriptions", json={**body, "callback_url": refused},
                                            headers=platform.auth("partner", PARTNER))
        errors = assert_problem(response, 422)["errors"]
        assert errors[0]["field"] == "callback_url" and why in errors[0]["message"]

    subscription_id, secret = platform.subscribe(url, ["EmissionRecorded"])
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*", secret)
    mine = platform.disclosure.get(f"/v1/subscriptions/{subscription_id}", headers=platform.auth("partner", PARTNER))
    assert mine.status_code == 200 and "secret" not in mine.json()
    assert mine.json()["status"] == "active" and mine.json()["enterprise_ids"] is None
    listed = platform.disclosure.get("/v1/subscriptions", headers=platform.auth("partner", PARTNER)).json()
    assert [s["subscription_id"] for s in listed["subscriptions"]] == [subscription_id]
    for path in (f"/v1/subscriptions/{subscription_id}", f"/v1/subscriptions/{subscription_id}/deliveries",
                 f"/v1/feeds/{subscription_id}"):
        assert_problem(platform.disclosure.get(path, headers=platform.auth("partner", OTHER_PARTNER)), 403, "not_owner")
    assert_problem(platform.disclosure.get(f"/v1/subscriptions/{uuid.uuid4()}",
                                           headers=platform.auth("partner", PARTNER)), 404)
    deleted = platform.disclosure.delete(f"/v1/subscriptions/{subscription_id}", headers=platform.auth("partner", PARTNER))
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"


PRIVATE_CALLBACKS = [
    "https://127.0.0.1/hook", "https://localhost/hook", "https://[::1]/hook", "https://10.1.2.3/hook",
    "https://172.16.5.4/hook", "https://192.168.0.10/hook", "https://169.254.169.254/latest/meta-data/",
    "https://[fc00::1]/hook", "https://[::ffff:127.0.0.1]/hook", "http://93.184.215.14/hook",
]


def test_private_callbacks_are_refused_without_the_flag(launcher) -> None:
    platform = launcher(webhook_allow_private=False)
    for url in PRIVATE_CALLBACKS:
        response = platform.disclosure.post("/v1/subscriptions", json={"callback_url": url, "event_types": ["EmissionRecorded"]},
                                            headers=platform.auth("partner", PARTNER))
        assert assert_problem(response, 422)["errors"][0]["field"] == "callback_url", url


# ---- pull feed ---------------------------------------------------------------------------------

def test_pull_feed_carries_only_consented_events(platform: Platform) -> None:
    consenting, silent, elsewhere = platform.register(), platform.register(), platform.register()
    platform.activity(consenting, 2)  # before the grant: never leaves
    consent_id = platform.grant(consenting, PARTNER, ["events:subscribe"])
    platform.grant(elsewhere, OTHER_PARTNER, ["events:subscribe"])
    platform.grant(silent, PARTNER, ["rating:read"])  # consent, but not to subscribe
    for enterprise in (consenting, silent, elsewhere):
        platform.activity(enterprise, 3)
        platform.append(enterprise, {"type": "EmissionRecorded", "data": {
            "calculation_id": f"c-{enterprise}", "period": "2024", "scope": 1, "category": "fuel_combustion",
            "gas": "CO2", "tco2e": "10.5", "factor_ref": "GB/T 32150-2015", "methodology": "GB/T 32150-2015",
            "data_quality": 2}})
    platform.caught_up()
    subscription_id, _ = platform.subscribe("http://127.0.0.1:9/unused", ["ActivityReported"])
    only_emissions, _ = platform.subscribe("http://127.0.0.1:9/unused", ["EmissionRecorded"], enterprise_ids=[consenting])
    others, _ = platform.subscribe("http://127.0.0.1:9/unused", ["ActivityReported"], enterprise_ids=[silent])

    expected = [e for e in platform.stream(consenting) if e["type"] == "ActivityReported"][2:]
    page = platform.feed(subscription_id).json()
    assert [e["id"] for e in page["events"]] == [e["event_id"] for e in expected]
    first = page["events"][0]
    assert (first["specversion"], first["type"], first["source"]) == ("1.0", "ActivityReported", f"/enterprises/{consenting}")
    assert first["data"] == expected[0]
    assert JSONFormat().read(None, json.dumps(first).encode()).get_data() == expected[0]

    # Paging: the cursor resumes after the last event read.
    one = platform.feed(subscription_id, limit=1).json()
    two = platform.feed(subscription_id, after=one["next"], limit=5).json()
    assert [e["id"] for e in one["events"] + two["events"]] == [e["event_id"] for e in expected]
    assert platform.feed(subscription_id, after=two["next"]).json()["events"] == []

    emissions = platform.feed(only_emissions).json()["events"]
    assert [(e["type"], e["source"]) for e in emissions] == [("EmissionRecorded", f"/enterprises/{consenting}")]
    assert platform.feed(others).json()["events"] == []

    # After the revocation the feed stops, history included.
    platform.revoke(consenting, consent_id)
    platform.caught_up()
    assert platform.feed(subscription_id).json()["events"] == []
    assert platform.feed(only_emissions).json()["events"] == []


# ---- disclosure reports ------------------------------------------------------------------------

def emission(calc: str, tco2e: str, scope: int = 1, category: str = "fuel_combustion", gas: str = "CO2",
             period: str = "2024", quality: int = 2, factor: str = "GB/T 32150-2015 Appendix A",
             supersedes: str | None = None) -> dict:
    data = {"calculation_id": calc, "period": period, "scope": scope, "category": category, "gas": gas,
            "tco2e": tco2e, "factor_ref": factor, "methodology": "GB/T 32150-2015", "data_quality": quality}
    if supersedes:
        data["supersedes"] = supersedes
    return {"type": "EmissionRecorded", "data": data}


def story(platform: Platform) -> str:
    """A cement maker's year: activity, emissions (one corrected), verification, a project, assets."""
    cement = platform.register()
    platform.append(cement, {"type": "ActivityReported", "data": {
        "period": "2024", "revenue_10k_cny": "52000.5", "output": {"quantity": "1200000", "unit": "t"}}})
    first = platform.append(cement, emission("coal", "600000.123456"), emission("gas", "15.5", gas="CH4"),
                            emission("clinker", "999", category="process", quality=4),
                            emission("grid", "85000.75", scope=2, category="purchased_electricity", quality=1,
                                     factor="Sichuan grid 2022"),
                            emission("c2023", "700000", period="2023", quality=3))
    clinker_id = platform.stream(cement)[first["first_version"] + 1]["event_id"]  # versions are 1-based
    platform.append(cement, emission("clinker-fix", "300000.25", category="process", quality=4, supersedes=clinker_id))
    platform.grant(cement, VERIFIER, ["account:verify"])
    platform.append(cement, {"type": "EmissionVerified", "data": {
        "period": "2024", "verifier": VERIFIER, "verified_tco2e": "985016.623456", "report_ref": "VR-2025-0031"}},
        role="verifier", sub=VERIFIER)
    platform.append(cement, {"type": "ReductionRecorded", "data": {
        "project_id": "whr-1", "period": "2024", "methodology": "CCER-14-001-V01", "baseline_tco2e": "52000",
        "project_tco2e": "4000.5", "reduction_tco2e": "47999.5", "benefits": {"standard_coal_saved_t": "18250"}}})
    platform.append(cement, {"type": "ReductionVerified", "data": {
        "project_id": "whr-1", "period": "2024", "verifier": VERIFIER, "verified_reduction_tco2e": "47000",
        "report_ref": "VR-2025-0032"}}, role="verifier", sub=VERIFIER)
    platform.append(cement,
                    {"type": "CarbonAssetAcquired", "data": {"asset": "CCER", "batch": "B-1", "quantity_t": "20000",
                                                             "source": "issuance"}},
                    {"type": "CarbonAssetPledged", "data": {"pledge_id": "PL-7", "asset": "CCER", "batch": "B-1",
                                                            "quantity_t": "8000", "pledgee": "bank-a",
                                                            "loan_ref": "LOAN-118"}},
                    {"type": "CreditsRetired", "data": {"asset": "CCER", "batch": "B-1", "quantity_t": "500",
                                                        "period": "2024", "purpose": "neutralise travel",
                                                        "retirement_ref": "RET-42"}},
                    role="registry", sub=REGISTRY)
    platform.caught_up()
    return cement


def test_report_matches_the_account_field_by_field(platform: Platform) -> None:
    cement = story(platform)
    response = platform.disclosure.get(f"/v1/disclosures/{cement}/2024", headers=platform.auth("enterprise", cement))
    assert response.status_code == 200, response.text
    r = response.json()
    events = platform.stream(cement)
    lines = {e["event_id"]: e["data"] for e in events if e["type"] == "EmissionRecorded"}
    superseded = {d["supersedes"] for d in lines.values() if d.get("supersedes")}
    current = [d for i, d in lines.items() if i not in superseded and d["period"] == "2024"]

    def total(**match) -> str:
        s = sum((Decimal(d["tco2e"]) for d in current if all(d[k] == v for k, v in match.items())), Decimal(0))
        return format(s.normalize(), "f")

    g = r["ghg_emissions"]
    assert g["scope1"]["total_tco2e"] == total(scope=1) == "900015.873456"
    assert g["scope2"]["total_tco2e"] == total(scope=2) == "85000.75"
    assert g["scope1"]["by_gas"] == {"CH4": total(scope=1, gas="CH4"), "CO2": total(scope=1, gas="CO2")}
    assert g["scope1"]["by_category"] == {"fuel_combustion": total(scope=1, category="fuel_combustion"),
                                          "process": total(scope=1, category="process")}
    assert g["scope1_2_tco2e"] == r["overview"]["scope1_2_tco2e"] == "985016.623456"
    assert g["scope3"] is None
    assert r["overview"]["name"] == "Sichuan Example Cement Co., Ltd." and r["enterprise_id"] == cement
    assert r["intensity"]["revenue_10k_cny"] == "52000.5"
    assert r["intensity"]["tco2e_per_10k_cny_revenue"] == str((Decimal("985016.623456") / Decimal("52000.5")).quantize(Decimal("0.000001")))
    assert r["intensity"]["output"][0]["tco2e_per_unit"] == "0.820847"
    assert [(y["year"], y["scope1_tco2e"], y["scope2_tco2e"]) for y in r["trend"]["years"]] == [
        (2023, "700000", "0"), (2024, "900015.873456", "85000.75")]
    verified = next(e for e in events if e["type"] == "EmissionVerified")
    v = r["verification"]
    assert (v["status"], v["verifier"], v["verified_tco2e"], v["report_ref"]) == (
        "verified", VERIFIER, "985016.623456", "VR-2025-0031")
    assert parse_time(v["verified_at"]) == parse_time(verified["recorded_at"])
    assert v["reported_minus_verified_tco2e"] == "0"
    [project] = r["reductions"]["projects"]
    assert (project["reduction_tco2e"], project["verified_reduction_tco2e"], project["verifiers"]) == ("47999.5", "47000", [VERIFIER])
    assert r["reductions"]["benefits"] == {"standard_coal_saved_t": "18250"}
    assert r["neutralisation"]["retired_t"] == "500"
    assert r["neutralisation"]["net_scope1_2_tco2e"] == "984516.623456"
    assert r["carbon_assets"]["holdings"] == [{"asset": "CCER", "batch": "B-1", "held_t": "19500", "pledged_t": "8000",
                                               "free_t": "11500"}]
    assert [(p["pledge_id"], p["pledgee"], p["loan_ref"], p["quantity_t"]) for p in r["carbon_assets"]["pledges"]] == [
        ("PL-7", "bank-a", "LOAN-118", "8000")]
    assert r["data_quality"]["by_level"] == {"1": "85000.75", "2": "600015.623456", "4": "300000.25"}
    # (85000.75 × 1 + 600015.623456 × 2 + 300000.25 × 4) / 985016.623456 = 2.52 → level 3
    assert (r["data_quality"]["weighted_average"], r["data_quality"]["level"], r["data_quality"]["worst"],
            r["data_quality"]["best"]) == ("2.52", 3, 1, 4)
    assert {f["factor_ref"] for f in r["methodology"]["factor_sources"]} == {"GB/T 32150-2015 Appendix A", "Sichuan grid 2022"}
    assert [s["key"] for s in r["sections"]] == ["overview", "ghg_emissions", "intensity", "trend", "verification",
                                                 "reductions", "neutralisation", "carbon_assets", "data_quality",
                                                 "methodology"]
    assert isinstance(r["position"], int)
    assert platform.access_log == []  # the enterprise reading its own disclosure is not a third-party read


def test_html_and_pdf_carry_the_same_figures(platform: Platform) -> None:
    cement = story(platform)
    owner = platform.auth("enterprise", cement)
    html = platform.disclosure.get(f"/v1/disclosures/{cement}/2024", params={"format": "html"}, headers=owner)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text and "<script" not in html.text
    pdf = platform.disclosure.get(f"/v1/disclosures/{cement}/2024", params={"format": "pdf"}, headers=owner)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.content)).pages).replace("\n", " ")
    kpis = re.findall(r'id="kpi-(scope1|scope2|scope12)">([^<]+)<', html.text)
    assert dict(kpis) == {"scope1": "900,015.873456", "scope2": "85,000.75", "scope12": "985,016.623456"}
    intensity = str((Decimal("985016.623456") / Decimal("52000.5")).quantize(Decimal("0.000001")))
    for figure in [v for _, v in kpis] + ["984,516.623456", "47,999.5", intensity, "VR-2025-0031", "PL-7", "LOAN-118",
                                          "Environmental information disclosure 2024", cement]:
        assert figure in html.text and figure in text, figure


def test_third_party_reads_need_consent_and_are_logged(platform: Platform) -> None:
    cement = story(platform)
    path = f"/v1/disclosures/{cement}/2024"
    assert_problem(platform.disclosure.get(path, headers=platform.auth("bank", "bank-b")), 403, "no_consent")
    assert_problem(platform.disclosure.get(f"/v1/disclosures/{uscc(999)}/2024", headers=platform.auth("regulator", "pboc-cd")), 404)
    assert_problem(platform.disclosure.get(f"/v1/disclosures/{cement}/1800", headers=platform.auth("enterprise", cement)), 422)
    wrong_scope = platform.grant(cement, "bank-a", ["rating:read"])
    platform.caught_up()
    assert_problem(platform.disclosure.get(path, headers=platform.auth("bank", "bank-a")), 403, "scope_missing")
    consent_id = platform.grant(cement, "bank-a", ["disclosure:read"])
    platform.caught_up()
    assert platform.disclosure.get(path, headers=platform.auth("bank", "bank-a")).status_code == 200
    assert platform.disclosure.get(path, params={"format": "html"}, headers=platform.auth("regulator", "pboc-cd")).status_code == 200
    assert platform.access_log == [
        {"enterprise_id": cement, "party": "bank-a", "role": "bank", "what": "disclosure:2024", "consent_id": consent_id,
         "supervisory": False},
        {"enterprise_id": cement, "party": "pboc-cd", "role": "regulator", "what": "disclosure:2024", "consent_id": None,
         "supervisory": True},
    ]
    # When the read cannot be logged, a third party is refused; the enterprise still reads its own.
    platform.rating_answer["status"] = 500
    problem = assert_problem(platform.disclosure.get(path, headers=platform.auth("bank", "bank-a")), 503)
    assert "logged" in problem["detail"]
    assert_problem(platform.disclosure.get(path, headers=platform.auth("regulator", "pboc-cd")), 503)
    assert platform.disclosure.get(path, headers=platform.auth("enterprise", cement)).status_code == 200
    platform.rating_answer["status"] = 201
    platform.revoke(cement, consent_id)
    platform.revoke(cement, wrong_scope)
    platform.caught_up()
    assert_problem(platform.disclosure.get(path, headers=platform.auth("bank", "bank-a")), 403, "consent_revoked")
    assert len(platform.access_log) == 2


def test_reads_are_refused_when_the_access_log_is_unreachable(launcher) -> None:
    platform = launcher(rating_url=f"http://127.0.0.1:{free_port()}")
    cement = story(platform)
    platform.grant(cement, "bank-a", ["disclosure:read"])
    platform.caught_up()
    path = f"/v1/disclosures/{cement}/2024"
    assert_problem(platform.disclosure.get(path, headers=platform.auth("bank", "bank-a")), 503)
    assert platform.disclosure.get(path, headers=platform.auth("enterprise", cement)).status_code == 200
