"""``carbon demo``: the end-to-end story of SPEC §8, played over HTTP against a running platform.

Each step prints what each party sees and checks the outcome the story expects; the first
deviation ends the run with a non-zero exit, so the demo doubles as the acceptance test.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from carbon.auth import mint_token
from contracts import Role
from contracts.types import USCC_CHARSET, uscc_check_character

OPERATOR, VERIFIER, REGISTRY = "platform-ops", "sc-verification-centre", "sceex-registry"
BANK_A, BANK_B, PARTNER, REGULATOR = "bank-a", "bank-b", "tianfu-credit", "pbc-chengdu"


def fresh_uscc(region: str) -> str:
    """A valid USCC (GB 32100-2015) unique to this run, so the story can be played on any platform."""
    serial = "".join(secrets.choice(USCC_CHARSET) for _ in range(9))
    first17 = f"91{region}{serial}"
    return first17 + uscc_check_character(first17)


# Made once per process: every step of one run speaks of the same two enterprises.
CEMENT, POWER = fresh_uscc("510100"), fresh_uscc("511100")


class StoryDeviation(Exception):
    """The platform did not do what the story expects."""


@dataclass
class Endpoints:
    account: str = "http://127.0.0.1:8001"
    accounting: str = "http://127.0.0.1:8002"
    rating: str = "http://127.0.0.1:8003"
    disclosure: str = "http://127.0.0.1:8004"


@dataclass
class WebhookReceiver:
    """The partner platform's endpoint: verifies each delivery's Standard Webhooks signature."""

    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    secret: str | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                from standardwebhooks.webhooks import Webhook

                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    Webhook(receiver.secret).verify(body, dict(self.headers))
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                except Exception:  # noqa: BLE001 - an unsigned or forged delivery
                    receiver.rejected += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/carbon-events"

    def stop(self) -> None:
        self.server.shutdown()


class Story:
    def __init__(self, endpoints: Endpoints, jwt_secret: str, console: Console | None = None) -> None:
        self.urls, self.secret = endpoints, jwt_secret
        self.console = console or Console()
        self.http = httpx.Client(timeout=30)
        self.today = datetime.now(UTC).date()
        self.year = self.today.year - 1  # the latest complete calendar year
        self.receiver = WebhookReceiver()
        self.notes: dict[str, Any] = {}

    # ---- plumbing ------------------------------------------------------------------------

    def token(self, role: Role | str, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.secret, sub=sub, role=role)}"}

    def call(self, method: str, url: str, who: tuple[str, str], expect: int | tuple[int, ...] = (200, 201),
             **kwargs) -> httpx.Response:
        response = self.http.request(method, url, headers={**self.token(*who), **kwargs.pop("headers", {})}, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in wanted:
            raise StoryDeviation(f"{method} {url} as {who[0]} {who[1]} answered {response.status_code} "
                                 f"(expected {wanted}): {response.text[:400]}")
        return response

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise StoryDeviation(message)

    def wait_for(self, what: str, probe: Callable[[], Any], timeout_s: float = 45.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise StoryDeviation(f"timed out waiting for {what}")
            time.sleep(0.2)

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[str(v) for v in row])
        self.console.print(table)

    def step(self, number: int, title: str) -> None:
        self.console.rule(f"[bold]{number}. {title}")

    def append(self, enterprise: str, who: tuple[str, str], *events: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"{self.urls.account}/v1/enterprises/{enterprise}/events", who,
                         json={"expected_version": None, "events": list(events)}).json()

    def rating(self, enterprise: str, who: tuple[str, str], **params) -> dict[str, Any]:
        return self.call("GET", f"{self.urls.rating}/v1/ratings/{enterprise}", who, params=params).json()

    def rating_once_known(self, enterprise: str) -> dict[str, Any]:
        """The enterprise's own rating, or {} while the rating projection has not seen it yet."""
        response = self.http.get(f"{self.urls.rating}/v1/ratings/{enterprise}", headers=self.token("enterprise", enterprise))
        if response.status_code == 404:
            return {}
        if response.status_code != 200:
            raise StoryDeviation(f"the rating service answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def rated_at_position(self, enterprise: str, position: int) -> Callable[[], dict | None]:
        def probe() -> dict | None:
            answer = self.rating_once_known(enterprise)
            return answer if (answer.get("position") or 0) >= position else None

        return probe

    # ---- the story -----------------------------------------------------------------------

    def run(self) -> None:
        self.wait_ready()
        self.register()
        self.cement_reports_and_is_verified()
        self.registry_records_assets()
        self.consents_and_subscription()
        self.bank_reads()
        self.partner_webhooks()
        self.regulator_rediscount()
        self.audit()
        self.console.rule("[bold green]the story holds")

    def wait_ready(self) -> None:
        for name, base in vars(self.urls).items():
            self.wait_for(f"{name} at {base}", lambda b=base: _ready(self.http, b), timeout_s=60)

    def register(self) -> None:
        self.step(1, "The operator registers a cement maker and a thermal power plant in Sichuan")
        ops = ("operator", OPERATOR)
        rows = []
        for uscc, name, industry, region in [
            (CEMENT, "Sichuan Emei Cement Co., Ltd.", "C3011", "510100"),
            (POWER, "Leshan Thermal Power Co., Ltd.", "D4411", "511100"),
        ]:
            response = self.call("POST", f"{self.urls.account}/v1/enterprises", ops, expect=201,
                                 json={"uscc": uscc, "name": name, "industry": industry, "region": region})
            rows.append([uscc, name, industry, region, response.status_code])
        self.table("account: registrations", ["USCC", "name", "GB/T 4754", "GB/T 2260", "HTTP"], rows)

    def _accounting(self, year: int, coal_t: str, clinker_t: str, electricity_mwh: str) -> dict[str, Any]:
        body = {
            "enterprise_id": CEMENT, "period": str(year), "record": True, "calculation_id": f"cement-{year}",
            "industry": "C3011", "output": {"quantity": "1000000", "unit": "t"},
            "activities": [
                {"category": "fuel_combustion", "fuel": "raw_coal", "quantity": coal_t, "unit": "t"},
                {"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "100", "unit": "10^4 Nm3"},
                {"category": "process", "process": "cement_clinker", "quantity": clinker_t, "unit": "t"},
                {"category": "purchased_electricity", "quantity": electricity_mwh, "unit": "MWh",
                 "grid": "510000", "year": 2022},
            ],
        }
        return self.call("POST", f"{self.urls.accounting}/v1/calculations", ("enterprise", CEMENT), json=body).json()

    def cement_reports_and_is_verified(self) -> None:
        self.step(2, "The cement maker reports activity and its accounting; a verifier verifies the year")
        owner = ("enterprise", CEMENT)
        for year, revenue in [(self.year - 1, "46500"), (self.year, "47200")]:
            self.append(CEMENT, owner, {"type": "ActivityReported", "data": {
                "period": str(year), "revenue_10k_cny": revenue, "output": {"quantity": "1000000", "unit": "t"}}})
        previous = self._accounting(self.year - 1, "64000", "640000", "62000")
        current = self._accounting(self.year, "60000", "600000", "60000")
        self.table(f"accounting: {self.year} (GB/T 32150-2015, recorded as EmissionRecorded)",
                   ["activity", "scope", "gas", "formula", "tCO2e"],
                   [[line["activity"].get("fuel") or line["activity"].get("process") or line["activity"]["category"],
                     line["scope"], line["gas"], line["formula"][:70], line["tco2e"]] for line in current["lines"]])
        self.console.print(f"total {current['total_tco2e']} tCO2e ({self.year - 1}: {previous['total_tco2e']}); "
                           f"warnings: {[w['code'] if isinstance(w, dict) else w for w in current['warnings']]}")
        again = self._accounting(self.year, "60000", "600000", "60000")
        self.check(again["total_tco2e"] == current["total_tco2e"], "a retried calculation changed its result")
        log = self.call("GET", f"{self.urls.account}/v1/enterprises/{CEMENT}/events", owner,
                        params={"limit": 1000}).json()["events"]
        recorded = [e for e in log if e["type"] == "EmissionRecorded" and e["data"]["period"] == str(self.year)]
        self.check(len(recorded) == len({(e["data"]["scope"], e["data"]["category"], e["data"]["gas"]) for e in recorded}),
                   "the retried calculation recorded its emissions twice")

        before = self.wait_for("the unverified rating", lambda: _rated(self.rating_once_known(CEMENT)))
        self.notes["before_verification"] = before
        time.sleep(0.05)  # a distinct moment between the unverified and the verified rating
        self.notes["moment_before"] = datetime.now(UTC)
        self.call("POST", f"{self.urls.account}/v1/enterprises/{CEMENT}/consents", owner, json={
            "grantee": VERIFIER, "scopes": ["account:verify", "account:read"], "purpose": "annual GHG verification",
            "expires_at": (datetime.now(UTC) + timedelta(days=90)).isoformat()})
        total = Decimal(current["total_tco2e"])
        verified = self.append(CEMENT, ("verifier", VERIFIER), {"type": "EmissionVerified", "data": {
            "period": str(self.year), "verifier": VERIFIER, "verified_tco2e": str(total),
            "report_ref": f"SCVC-{self.year}-0412"}})
        after = self.wait_for("the verified rating", self.rated_at_position(CEMENT, verified["positions"][-1]))
        self.table("rating seen by the cement maker", ["", "grade", "score", "data quality factor"], [
            ["before verification", before["grade"], before["score"], _factor(before, "data_quality")],
            ["after verification", after["grade"], after["score"], _factor(after, "data_quality")],
        ])
        self.check(after["score"] > before["score"], "verification did not improve the rating")

    def registry_records_assets(self) -> None:
        self.step(3, "The registry records a CCER holding, pledges part to Bank A, retires some")
        registry = ("registry", REGISTRY)
        self.append(CEMENT, registry,
                    {"type": "CarbonAssetAcquired", "data": {"asset": "CCER", "batch": "CCER-SC-2024-017",
                                                             "quantity_t": "120000", "source": "purchase on SCEEX"}},
                    {"type": "CarbonAssetPledged", "data": {"pledge_id": "PL-2026-0031", "asset": "CCER",
                                                            "batch": "CCER-SC-2024-017", "quantity_t": "80000",
                                                            "pledgee": BANK_A, "loan_ref": "碳汇贷-2026-118"}})
        over = self.call("POST", f"{self.urls.account}/v1/enterprises/{CEMENT}/events", registry, expect=422,
                         json={"expected_version": None, "events": [{"type": "CreditsRetired", "data": {
                             "asset": "CCER", "batch": "CCER-SC-2024-017", "quantity_t": "50000",
                             "period": str(self.year), "purpose": "neutralisation", "retirement_ref": "R-X"}}]})
        retired = self.append(CEMENT, registry, {"type": "CreditsRetired", "data": {
            "asset": "CCER", "batch": "CCER-SC-2024-017", "quantity_t": "30000", "period": str(self.year),
            "purpose": f"neutralisation of {self.year} emissions", "retirement_ref": "SCEEX-RET-2026-0907"}})
        self.notes["last_cement_position"] = retired["positions"][-1]
        self.table("account: carbon assets", ["event", "t", "outcome"], [
            ["acquired CCER", "120,000", "201"], ["pledged to Bank A", "80,000", "201"],
            ["retire beyond the free balance", "50,000", f"422 {over.json()['errors'][0]['field']}"],
            ["retired (neutralisation)", "30,000", "201"]])

    def consents_and_subscription(self) -> None:
        self.step(4, "The cement maker grants Bank A rating and pricing reads, and the partner its events")
        owner = ("enterprise", CEMENT)
        self.receiver.secret = None
        callback = self.receiver.start()
        subscription = self.call("POST", f"{self.urls.disclosure}/v1/subscriptions", ("partner", PARTNER), json={
            "callback_url": callback, "event_types": ["ActivityReported", "EmissionRecorded", "EmissionVerified"],
            "enterprise_ids": [CEMENT]}).json()
        self.receiver.secret = subscription["secret"]
        self.notes["subscription"] = subscription["subscription_id"]
        until = (datetime.now(UTC) + timedelta(days=365)).isoformat()
        bank = self.call("POST", f"{self.urls.account}/v1/enterprises/{CEMENT}/consents", owner, json={
            "grantee": BANK_A, "scopes": ["rating:read", "pricing:read"], "purpose": "绿色碳链通 bill discounting",
            "expires_at": until}).json()
        partner = self.call("POST", f"{self.urls.account}/v1/enterprises/{CEMENT}/consents", owner, json={
            "grantee": PARTNER, "scopes": ["events:subscribe"], "purpose": "天府信用通 credit profile",
            "expires_at": until}).json()
        self.notes["partner_consent"] = partner["consent_id"]
        consents = self.call("GET", f"{self.urls.account}/v1/enterprises/{CEMENT}/consents", owner).json()["consents"]
        self.table("account: the cement maker's consents", ["grantee", "scopes", "status"],
                   [[c["grantee"], ", ".join(c["scopes"]), c["status"]] for c in consents])
        self.check(bank["consent_id"] != partner["consent_id"], "two grants share a consent id")

    def bank_reads(self) -> None:
        self.step(5, "Bank A reads the rating and the bill-discount tier; Bank B is refused")
        bank_a = ("bank", BANK_A)
        rating = self.wait_for("Bank A's consent to reach the rating service",
                               lambda: _ok_json(self.http.get(f"{self.urls.rating}/v1/ratings/{CEMENT}",
                                                              headers=self.token(*bank_a))))
        pricing = self.call("GET", f"{self.urls.rating}/v1/pricing/{CEMENT}", bank_a,
                            params={"product": "bill_discount"}).json()
        refused = self.call("GET", f"{self.urls.rating}/v1/ratings/{CEMENT}", ("bank", BANK_B), expect=403).json()
        self.table("what the banks see", ["party", "grade", "score", "tier", "adjustment", "decision"], [
            ["Bank A", rating["grade"], rating["score"], pricing["tier"], f"{pricing['adjustment_bp']} bp",
             pricing["decision_id"]],
            ["Bank B", "—", "—", "—", f"403 {refused['reason']}", "—"]])
        self.table("rating factors (Bank A's view)", ["factor", "value", "benchmark", "points", "explanation"],
                   [[f["name"], f["value"], f["benchmark"], f"{f['points']}/{f['max_points']}", f["explanation"][:80]]
                    for f in rating["factors"]])
        self.check(rating["grade"] in ("AAA", "AA", "A"), f"the verified cement maker is graded {rating['grade']}")
        self.check(-150 <= pricing["adjustment_bp"] <= -130, f"bill-discount adjustment {pricing['adjustment_bp']} bp")
        self.check(refused["reason"] == "no_consent", "Bank B was not refused for want of consent")

    def partner_webhooks(self) -> None:
        self.step(6, "The partner receives the cement maker's events by signed webhook; after revocation, none")
        owner = ("enterprise", CEMENT)
        month = f"{self.today.year}-{self.today.month:02d}" if self.today.month > 1 else f"{self.today.year}-01"
        shared = self.append(CEMENT, owner, {"type": "ActivityReported", "data": {
            "period": month, "revenue_10k_cny": "3900", "output": {"quantity": "82000", "unit": "t"}}})
        event_ids = self.wait_for("the signed webhook", lambda: [
            d["id"] for d in self.receiver.received if d["data"]["position"] == shared["positions"][0]])
        self.call("DELETE", f"{self.urls.account}/v1/enterprises/{CEMENT}/consents/{self.notes['partner_consent']}",
                  owner, json={"reason": "credit review finished"})
        after = self.append(CEMENT, owner, {"type": "ActivityReported", "data": {
            "period": month, "revenue_10k_cny": "3950", "output": {"quantity": "83000", "unit": "t"}}})
        # Wait past the projection lag bound (SPEC §2: 2 s) so a wrong delivery would have happened.
        time.sleep(3)
        leaked = [d for d in self.receiver.received if d["data"]["position"] >= after["positions"][0]]
        feed = self.call("GET", f"{self.urls.disclosure}/v1/feeds/{self.notes['subscription']}", ("partner", PARTNER),
                         params={}, expect=(200, 403))
        deliveries = self.call("GET", f"{self.urls.disclosure}/v1/subscriptions/{self.notes['subscription']}/deliveries",
                               ("partner", PARTNER)).json()["deliveries"]
        self.table("what the partner received", ["delivery", "type", "signed", "position"], [
            [d["id"], d["type"], "verified", d["data"]["position"]] for d in self.receiver.received])
        self.console.print(f"deliveries logged: {len(deliveries)}; forged or unsigned: {self.receiver.rejected}; "
                           f"pull feed after revocation: HTTP {feed.status_code}")
        self.check(bool(event_ids), "the partner did not receive the shared event")
        self.check(not leaked, "an event after the revocation reached the partner")
        self.check(self.receiver.rejected == 0, "a delivery failed signature verification")
        if feed.status_code == 200:
            self.check(all(e["data"]["position"] < after["positions"][0] for e in feed.json()["events"]),
                       "the pull feed served an event after the revocation")

    def regulator_rediscount(self) -> None:
        self.step(7, "The regulator checks re-discount eligibility for the power plant's bills")
        plant, verifier = ("enterprise", POWER), ("verifier", VERIFIER)
        for year, tonnes in [(self.year - 1, "4300000"), (self.year, "4000000")]:
            self.append(POWER, plant,
                        {"type": "ActivityReported", "data": {"period": str(year), "revenue_10k_cny": "225000",
                                                              "output": {"quantity": "5000000", "unit": "MWh"}}},
                        {"type": "EmissionRecorded", "data": {
                            "calculation_id": f"plant-{year}", "period": str(year), "scope": 1,
                            "category": "fuel_combustion", "gas": "CO2", "tco2e": tonnes,
                            "factor_ref": "GB/T 32150-2015 Table A.1 (measured NCV)",
                            "methodology": "GB/T 32151.1-2015", "data_quality": 4}})
        benefit = self.call("POST", f"{self.urls.accounting}/v1/benefits", plant, json={
            "enterprise_id": POWER, "project_id": "PV-LESHAN-01", "project_type": "renewable_power",
            "period": str(self.year), "record": True, "calculation_id": f"pv-leshan-{self.year}",
            "parameters": {"annual_generation_mwh": "500000", "grid": "510000", "year": 2022,
                           "technology": "solar"}}).json()
        reduction = _reduction(benefit)
        self.call("POST", f"{self.urls.account}/v1/enterprises/{POWER}/consents", plant, json={
            "grantee": VERIFIER, "scopes": ["account:verify"], "purpose": "verification",
            "expires_at": (datetime.now(UTC) + timedelta(days=90)).isoformat()})
        last = self.append(POWER, verifier,
                           {"type": "EmissionVerified", "data": {"period": str(self.year), "verifier": VERIFIER,
                                                                 "verified_tco2e": "4000000", "report_ref": "SCVC-PP-1"}},
                           {"type": "ReductionVerified", "data": {"project_id": "PV-LESHAN-01", "period": str(self.year),
                                                                  "verifier": VERIFIER,
                                                                  "verified_reduction_tco2e": str(reduction),
                                                                  "report_ref": "SCVC-PV-1"}})
        self.wait_for("the power plant's rating", self.rated_at_position(POWER, last["positions"][-1]))
        regulator = ("regulator", REGULATOR)
        bills = [{"bill_no": "CRB-2026-0001", "amount_cny": "50000000",
                  "maturity": (self.today + timedelta(days=120)).isoformat(), "project_id": "PV-LESHAN-01"}]
        answer = self.call("POST", f"{self.urls.rating}/v1/rediscount/eligibility", regulator,
                           json={"issuer_id": POWER, "bills": bills}).json()
        self.table(f"eligibility (grade {answer['grade']}, {answer['estimated_reduction_tco2e']} tCO2e, "
                   f"rate {answer['rediscount_rate']})", ["reason", "met", "detail"],
                   [[r["code"], "✓" if r["met"] else "✗", r["detail"][:90]] for r in answer["reasons"]])
        self.check(answer["eligible"], "the power plant's bills were not eligible")
        claim = self.call("POST", f"{self.urls.rating}/v1/rediscount/claims", regulator, expect=201,
                          json={"decision_id": answer["decision_id"], "reference": "PBC-CD-RD-2026-044"}).json()
        second = self.call("POST", f"{self.urls.rating}/v1/rediscount/claims", regulator, expect=409,
                           json={"decision_id": answer["decision_id"], "reference": "PBC-CD-RD-2026-045"})
        recheck = self.call("POST", f"{self.urls.rating}/v1/rediscount/eligibility", regulator,
                            json={"issuer_id": POWER, "bills": [{**bills[0], "bill_no": "CRB-2026-0002"}]}).json()
        self.table("claims", ["claim", "outcome"], [
            [claim["claim_id"], "201 recorded"], ["the same tonnes again", f"409 {second.json()['detail'][:80]}"],
            ["a new bill on the same project", "eligible" if recheck["eligible"] else "not eligible"]])
        self.check(not recheck["eligible"], "already claimed tonnes backed a second bill")

    def audit(self) -> None:
        self.step(8, "Knowledge time, the access log, the hash chain, and a replay")
        owner = ("enterprise", CEMENT)
        then = self.rating(CEMENT, owner, as_of=self.notes["moment_before"].isoformat())
        now = self.rating(CEMENT, owner)
        log = self.call("GET", f"{self.urls.rating}/v1/access-log/{CEMENT}", owner).json()["reads"]
        chains = {e: self.call("GET", f"{self.urls.account}/v1/enterprises/{e}/verify-chain", ("operator", OPERATOR)).json()
                  for e in (CEMENT, POWER)}
        self.table("the rating then and now", ["as of", "grade", "score"], [
            [self.notes["moment_before"].isoformat(timespec="seconds"), then["grade"], then["score"]],
            ["now", now["grade"], now["score"]]])
        self.table("who read the cement maker's data", ["at", "party", "role", "what", "basis"],
                   [[r["at"], r["party"], r["role"], r["what"], r.get("consent_id") or "supervisory"] for r in log])
        self.table("hash chains", ["enterprise", "ok", "events", "head"],
                   [[e, c["ok"], c["events_checked"], (c["head_hash"] or "")[:16]] for e, c in chains.items()])
        self.check(then["score"] != now["score"], "the rating before the verification equals today's")
        self.check(any(r["party"] == BANK_A for r in log), "Bank A's read is missing from the access log")
        self.check(all(c["ok"] for c in chains.values()), "a hash chain does not verify")
        replayed = self.replayed_ratings()
        live = {e: self.call("GET", f"{self.urls.rating}/v1/ratings/{e}/history", ("enterprise", e)).json()["ratings"]
                for e in (CEMENT, POWER)}
        self.check(_comparable(replayed) == _comparable(live), "a replayed projection rated differently")
        self.console.print(f"replayed rating history identical: {sum(len(v) for v in live.values())} ratings")

    def replayed_ratings(self) -> dict[str, list[dict[str, Any]]]:
        """Rebuild the rating projection from the log into a scratch database and read its histories."""
        from carbon.account_client import AccountClient
        from carbon.identity import Principal
        from carbon.projection_runtime import replay
        from services.rating.projection import create_projector
        from services.rating.service import RatingService
        from services.rating.settings import RatingSettings

        with tempfile.TemporaryDirectory() as scratch:
            projector = create_projector(f"sqlite:///{Path(scratch) / 'rating.db'}")
            client = AccountClient(self.urls.account, jwt_secret=self.secret, service_name="rating")
            try:
                replay(projector, client)
                service = RatingService(projector.engine, RatingSettings().reference_data())
                return {e: json.loads(service.history(Principal(e, Role.ENTERPRISE), e))["ratings"]
                        for e in (CEMENT, POWER)}
            finally:
                client.close()
                projector.engine.dispose()


def _ready(http: httpx.Client, base: str) -> bool:
    try:
        return http.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ok_json(response: httpx.Response) -> dict | None:
    return response.json() if response.status_code == 200 else None


def _rated(answer: dict[str, Any]) -> dict | None:
    return answer if answer.get("status") == "rated" else None


def _factor(rating: dict[str, Any], name: str) -> str:
    for factor in rating.get("factors", []):
        if factor["name"] == name:
            return f"{factor['points']}/{factor['max_points']}"
    return "—"


def _reduction(benefit: dict[str, Any]) -> Decimal:
    for key in ("reduction_tco2e", "co2e_reduced_tco2e"):
        if key in benefit:
            return Decimal(str(benefit[key]))
    raise StoryDeviation(f"the benefit answer names no reduction: {sorted(benefit)}")


def _comparable(histories: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple]]:
    return {e: [(r.get("grade"), r.get("score"), r.get("position"), r.get("recorded_at")) for r in rows]
            for e, rows in histories.items()}


def run_demo(endpoints: Endpoints, jwt_secret: str, console: Console | None = None) -> None:
    story = Story(endpoints, jwt_secret, console)
    try:
        story.run()
    finally:
        story.http.close()
        if getattr(story.receiver, "server", None):
            story.receiver.stop()


__all__ = ["Endpoints", "Story", "StoryDeviation", "run_demo"]
