"""The account service over real HTTP, on SQLite and on PostgreSQL (SPEC §5, §6 "account")."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy import text

from carbon.auth import mint_token
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC
from services.account.api import create_app
from services.account.settings import AccountSettings
from tests.live import serve

SECRET = "test-secret-for-the-account-api-suite"
CEMENT = CEMENT_MAKER_USCC
POWER = POWER_PLANT_USCC
VERIFIER = "verifier-cq"


class Api:
    def __init__(self, base_url: str, app) -> None:
        self.base_url, self.app = base_url, app
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def as_(self, role: str, sub: str, **kwargs) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}", **kwargs}

    def register(self, uscc: str = CEMENT, industry: str = "C3011") -> httpx.Response:
        body = {"uscc": uscc, "name": "Sichuan Example Cement Co.", "industry": industry, "region": "510100"}
        return self.http.post("/v1/enterprises", json=body, headers=self.as_("operator", "ops"))

    def append(self, enterprise: str, events: list[dict], role: str = "enterprise", sub: str | None = None,
               expected_version: int | None = None, **headers) -> httpx.Response:
        return self.http.post(
            f"/v1/enterprises/{enterprise}/events",
            json={"expected_version": expected_version, "events": events},
            headers=self.as_(role, sub or enterprise, **headers),
        )

    def grant(self, enterprise: str, grantee: str, scopes: list[str], days: int = 30) -> httpx.Response:
        body = {"grantee": grantee, "scopes": scopes, "purpose": "loan review",
                "expires_at": (datetime.now(UTC) + timedelta(days=days)).isoformat()}
        return self.http.post(f"/v1/enterprises/{enterprise}/consents", json=body, headers=self.as_("enterprise", enterprise))


@pytest.fixture
def api(database_url: str):
    app = create_app(AccountSettings(database_url=database_url, jwt_secret=SECRET))
    with serve(app) as base_url:
        client = Api(base_url, app)
        yield client
        client.http.close()


def activity(period: str = "2024", revenue: str = "52000.5") -> dict:
    return {"type": "ActivityReported",
            "data": {"period": period, "revenue_10k_cny": revenue, "output": {"quantity": "1200000", "unit": "t"}}}


def emission(period: str = "2024", tco2e: str = "812345.123456", calc: str = "calc-1") -> dict:
    return {"type": "EmissionRecorded", "data": {
        "calculation_id": calc, "period": period, "scope": 1, "category": "fuel_combustion", "gas": "CO2",
        "tco2e": tco2e, "factor_ref": "GB/T 32150-2015 Appendix A", "methodology": "GB/T 32150-2015",
        "data_quality": 2}}


def asset(kind: str, **data) -> dict:
    return {"type": kind, "data": data}


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == status
    if reason is not None:
        assert body["reason"] == reason
    return body


# ---- registration -----------------------------------------------------------------------

def test_register_starts_the_stream_and_refuses_duplicates(api: Api) -> None:
    created = api.register()
    assert created.status_code == 201 and created.json() == {"enterprise_id": CEMENT}
    events = api.http.get(f"/v1/enterprises/{CEMENT}/events", headers=api.as_("enterprise", CEMENT)).json()
    assert [(e["type"], e["stream_version"]) for e in events["events"]] == [("EnterpriseRegistered", 1)]
    assert events["events"][0]["metadata"]["actor"] == {"sub": "ops", "role": "operator"}
    assert_problem(api.register(), 409)


def test_register_validates_and_authorises(api: Api) -> None:
    body = {"uscc": POWER, "name": "Plant", "industry": "D4411", "region": "511100"}
    own = api.http.post("/v1/enterprises", json=body, headers=api.as_("enterprise", POWER))
    assert own.status_code == 201
    other = api.http.post("/v1/enterprises", json={**body, "uscc": CEMENT}, headers=api.as_("enterprise", POWER))
    assert_problem(other, 403, "not_owner")
    bank = api.http.post("/v1/enterprises", json={**body, "uscc": CEMENT}, headers=api.as_("bank", "bank-a"))
    assert_problem(bank, 403, "wrong_role")
    bad = api.http.post("/v1/enterprises", json={**body, "uscc": CEMENT[:-1] + "0", "industry": "C9911"},
                        headers=api.as_("operator", "ops"))
    problem = assert_problem(bad, 422)
    assert {e["field"] for e in problem["errors"]} == {"uscc", "industry"}
    extra = api.http.post("/v1/enterprises", json={**body, "colour": "green"}, headers=api.as_("operator", "ops"))
    assert any(e["field"] == "colour" for e in assert_problem(extra, 422)["errors"])


# ---- authentication ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer not-a-jwt",
        "Basic b3BzOm9wcw==",
        "Bearer " + jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, "a-wrong-secret-that-is-long-enough-for-hs256", algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "ops", "role": "operator", "exp": 1000}, SECRET, algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "ops", "exp": 4102444800}, SECRET, algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "ops", "role": "king", "exp": 4102444800}, SECRET, algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "ops", "role": "operator"}, SECRET, algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, None, algorithm="none"),
    ],
    ids=["missing", "garbage", "basic", "wrong-signature", "expired", "no-role", "unknown-role", "no-exp", "alg-none"],
)
def test_bad_tokens_get_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    assert_problem(api.http.get("/v1/events", headers=headers), 401)


# ---- appending --------------------------------------------------------------------------

def test_append_conflict_and_idempotent_retry(api: Api) -> None:
    api.register()
    first = api.append(CEMENT, [activity()], expected_version=1, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.text
    assert first.json()["first_version"] == 2 and first.json()["last_version"] == 2
    retry = api.append(CEMENT, [activity()], expected_version=1, **{"Idempotency-Key": "k-1"})
    assert retry.status_code == 201 and retry.json() == first.json()
    stale = api.append(CEMENT, [activity("2023")], expected_version=1)
    assert_problem(stale, 409)
    reused = api.append(CEMENT, [activity("2022")], **{"Idempotency-Key": "k-1"})
    assert assert_problem(reused, 422)["errors"][0]["field"] == "Idempotency-Key"
    log = api.http.get(f"/v1/enterprises/{CEMENT}/events", headers=api.as_("enterprise", CEMENT)).json()["events"]
    assert [e["stream_version"] for e in log] == [1, 2]
    assert log[1]["metadata"]["idempotency_key"] == "k-1"


def test_invalid_events_name_the_field_and_write_nothing(api: Api) -> None:
    api.register()
    bad = api.append(CEMENT, [activity(), activity(revenue="-1"), {"type": "Bogus", "data": {}}])
    fields = {e["field"] for e in assert_problem(bad, 422)["errors"]}
    assert fields == {"events[1].data.revenue_10k_cny", "events[2].type"}
    unknown = api.append(CEMENT, [{"type": "ActivityReported", "data": {**activity()["data"], "colour": "x"}}])
    assert assert_problem(unknown, 422)["errors"][0] == {"field": "events[0].data.colour", "message": "unknown field 'colour'"}
    floats = api.append(CEMENT, [emission(tco2e=1.5)])
    assert assert_problem(floats, 422)["errors"][0]["field"] == "events[0].data.tco2e"
    missing_version = api.http.post(f"/v1/enterprises/{CEMENT}/events", json={"events": [activity()]},
                                    headers=api.as_("enterprise", CEMENT))
    assert assert_problem(missing_version, 422)["errors"][0]["field"] == "expected_version"
    not_json = api.http.post(f"/v1/enterprises/{CEMENT}/events", content=b"{nope",
                             headers=api.as_("enterprise", CEMENT, **{"Content-Type": "application/json"}))
    assert not_json.status_code in (400, 422) and not_json.headers["content-type"].startswith("application/problem+json")
    assert len(api.http.get(f"/v1/enterprises/{CEMENT}/events", headers=api.as_("enterprise", CEMENT)).json()["events"]) == 1


def test_writer_table(api: Api) -> None:
    api.register()
    api.register(POWER, "D4411")
    acquire = asset("CarbonAssetAcquired", asset="CCER", batch="B-1", quantity_t="100", source="registry transfer")
    assert_problem(api.append(CEMENT, [acquire]), 403, "wrong_role")  # no self-declared holdings
    assert_problem(api.append(CEMENT, [activity()], sub=POWER), 403, "not_owner")
    assert_problem(api.append(CEMENT, [emission()], role="service", sub="rating"), 403, "wrong_role")
    assert api.append(CEMENT, [emission()], role="service", sub="accounting").status_code == 201
    assert api.append(CEMENT, [acquire], role="registry", sub="sceex").status_code == 201
    consent = {"type": "ConsentGranted", "data": {"consent_id": str(uuid.uuid4()), "grantee": "x", "scopes": ["rating:read"],
                                                  "purpose": "p", "expires_at": "2999-01-01T00:00:00Z"}}
    assert_problem(api.append(CEMENT, [consent]), 403, "wrong_role")
    assert_problem(api.append("91510100MA6CN30119", [activity()], sub="91510100MA6CN30119"), 404)


def test_verifier_needs_live_consent_and_recorded_emissions(api: Api) -> None:
    api.register()
    verified = {"type": "EmissionVerified", "data": {"period": "2024", "verifier": VERIFIER,
                                                     "verified_tco2e": "810000", "report_ref": "VR-2024-001"}}
    assert_problem(api.append(CEMENT, [verified], role="verifier", sub=VERIFIER), 403, "no_consent")
    api.grant(CEMENT, VERIFIER, ["account:read"])
    assert_problem(api.append(CEMENT, [verified], role="verifier", sub=VERIFIER), 403, "scope_missing")
    consent_id = api.grant(CEMENT, VERIFIER, ["account:verify"]).json()["consent_id"]
    no_emissions = api.append(CEMENT, [verified], role="verifier", sub=VERIFIER)
    assert assert_problem(no_emissions, 422)["errors"][0]["field"] == "events[0].data.period"
    api.append(CEMENT, [emission("2024-Q1", calc="q1"), emission("2024-Q2", calc="q2")])
    impostor = {**verified, "data": {**verified["data"], "verifier": "someone-else"}}
    assert assert_problem(api.append(CEMENT, [impostor], role="verifier", sub=VERIFIER), 422)["errors"][0]["field"] == "events[0].data.verifier"
    assert api.append(CEMENT, [verified], role="verifier", sub=VERIFIER).status_code == 201
    # The consent can also lapse: seen from a later clock it is expired.
    accounts = api.app.state.accounts
    accounts.clock = lambda: datetime.now(UTC) + timedelta(days=400)
    try:
        assert_problem(api.append(CEMENT, [verified], role="verifier", sub=VERIFIER), 403, "consent_expired")
    finally:
        accounts.clock = lambda: datetime.now(UTC)
    api.http.request("DELETE", f"/v1/enterprises/{CEMENT}/consents/{consent_id}", headers=api.as_("enterprise", CEMENT))
    assert_problem(api.append(CEMENT, [verified], role="verifier", sub=VERIFIER), 403, "consent_revoked")


def test_asset_balances_are_enforced(api: Api) -> None:
    api.register()

    def registry(*events):
        return api.append(CEMENT, list(events), role="registry", sub="sceex")

    assert registry(asset("CarbonAssetAcquired", asset="CCER", batch="B-1", quantity_t="1000", source="purchase")).status_code == 201
    pledge = asset("CarbonAssetPledged", pledge_id="P-1", asset="CCER", batch="B-1", quantity_t="600", pledgee="bank-a", loan_ref="L-1")
    assert registry(pledge).status_code == 201
    retire = asset("CreditsRetired", asset="CCER", batch="B-1", quantity_t="500", period="2024", purpose="neutralisation", retirement_ref="R-1")
    assert assert_problem(registry(retire), 422)["errors"][0]["field"] == "events[0].data.quantity_t"
    transfer = asset("CarbonAssetTransferred", asset="CCER", batch="B-1", quantity_t="401", counterparty="x")
    assert_problem(registry(transfer), 422)
    release = asset("CarbonAssetReleased", pledge_id="P-1")
    # In one batch: release, then retire 500 — allowed because events apply in order.
    assert registry(release, retire).status_code == 201
    assert assert_problem(registry(release), 422)["errors"][0]["field"] == "events[0].data.pledge_id"


# ---- consents ---------------------------------------------------------------------------

def test_consent_lifecycle(api: Api) -> None:
    api.register()
    granted = api.grant(CEMENT, "bank-a", ["rating:read", "pricing:read"])
    assert granted.status_code == 201
    consent_id = granted.json()["consent_id"]
    listed = api.http.get(f"/v1/enterprises/{CEMENT}/consents", headers=api.as_("enterprise", CEMENT)).json()
    assert listed["next"] is None
    [consent] = listed["consents"]
    assert consent["status"] == "active" and consent["scopes"] == ["pricing:read", "rating:read"]
    past = api.grant(CEMENT, "bank-a", ["rating:read"], days=-1)
    assert assert_problem(past, 422)["errors"][0]["field"] == "expires_at"
    bad_scope = api.grant(CEMENT, "bank-a", ["rating:write"])
    assert assert_problem(bad_scope, 422)["errors"][0]["field"].startswith("scopes")
    assert_problem(api.http.post(f"/v1/enterprises/{CEMENT}/consents", json={}, headers=api.as_("bank", "bank-a")), 422)
    by_bank = api.http.request("DELETE", f"/v1/enterprises/{CEMENT}/consents/{consent_id}", headers=api.as_("bank", "bank-a"))
    assert_problem(by_bank, 403, "wrong_role")
    revoked = api.http.request("DELETE", f"/v1/enterprises/{CEMENT}/consents/{consent_id}", headers=api.as_("enterprise", CEMENT))
    assert revoked.status_code == 200
    again = api.http.request("DELETE", f"/v1/enterprises/{CEMENT}/consents/{consent_id}", headers=api.as_("enterprise", CEMENT))
    assert assert_problem(again, 422)["errors"][0]["field"] == "consent_id"
    unknown = api.http.request("DELETE", f"/v1/enterprises/{CEMENT}/consents/{uuid.uuid4()}", headers=api.as_("enterprise", CEMENT))
    assert_problem(unknown, 404)
    statuses = [c["status"] for c in api.http.get(f"/v1/enterprises/{CEMENT}/consents", headers=api.as_("enterprise", CEMENT)).json()["consents"]]
    assert statuses == ["revoked"]
    types = [e["type"] for e in api.http.get(f"/v1/enterprises/{CEMENT}/events", headers=api.as_("enterprise", CEMENT)).json()["events"]]
    assert types == ["EnterpriseRegistered", "ConsentGranted", "ConsentRevoked"]


# ---- reading ----------------------------------------------------------------------------

def test_stream_reads_need_ownership_or_consent(api: Api) -> None:
    api.register()
    api.append(CEMENT, [activity(str(y)) for y in range(2015, 2025)])
    path = f"/v1/enterprises/{CEMENT}/events"
    assert_problem(api.http.get(path, headers=api.as_("bank", "bank-b")), 403, "no_consent")
    assert_problem(api.http.get(path, headers=api.as_("enterprise", POWER)), 403, "not_owner")
    assert_problem(api.http.get(path, headers=api.as_("regulator", "pboc-cd")), 403, "no_consent")
    api.grant(CEMENT, "bank-a", ["account:read"])
    page = api.http.get(path, params={"limit": 4}, headers=api.as_("bank", "bank-a")).json()
    assert [e["stream_version"] for e in page["events"]] == [1, 2, 3, 4] and page["next"] == 5
    rest = api.http.get(path, params={"from_version": 5, "limit": 1000}, headers=api.as_("operator", "ops")).json()
    assert rest["events"][0]["stream_version"] == 5 and rest["next"] is None
    assert assert_problem(api.http.get(path, params={"limit": 1001}, headers=api.as_("operator", "ops")), 422)["errors"][0]["field"] == "limit"
    assert_problem(api.http.get("/v1/enterprises/91510100MA6CN30119/events", headers=api.as_("operator", "ops")), 404)


def test_global_log_for_operator_and_services(api: Api) -> None:
    api.register()
    api.register(POWER, "D4411")
    api.append(CEMENT, [activity()])
    assert_problem(api.http.get("/v1/events", headers=api.as_("enterprise", CEMENT)), 403, "wrong_role")
    # The log shows a commit once no older transaction anywhere in the cluster is still open.
    deadline = time.monotonic() + 30
    while len(api.http.get("/v1/events", headers=api.as_("operator", "ops")).json()["events"]) < 3:
        assert time.monotonic() < deadline, "committed events never became visible in the global log"
        time.sleep(0.05)
    first = api.http.get("/v1/events", params={"limit": 2}, headers=api.as_("service", "rating")).json()
    assert len(first["events"]) == 2 and first["next"] == first["events"][-1]["position"]
    rest = api.http.get("/v1/events", params={"after": first["next"]}, headers=api.as_("operator", "ops")).json()
    assert [e["type"] for e in rest["events"]] == ["ActivityReported"]
    envelope = rest["events"][0]
    assert set(envelope) == {"event_id", "type", "schema_version", "enterprise_id", "stream_version", "position",
                             "recorded_at", "data", "metadata", "prev_hash", "hash"}


def test_the_global_log_read_in_partitions_for_a_rebuild_in_parallel(api: Api) -> None:
    api.register()
    api.register(POWER, "D4411")
    api.append(CEMENT, [activity()])
    ops = api.as_("operator", "ops")
    deadline = time.monotonic() + 30
    while len(whole := api.http.get("/v1/events", headers=ops).json()["events"]) < 3:
        assert time.monotonic() < deadline, "committed events never became visible in the global log"
        time.sleep(0.05)
    shares = [api.http.get("/v1/events", params={"partition": i, "partitions": 2}, headers=ops).json()
              for i in range(2)]
    # Each stream in one partition, in log order; a page that is not full goes on to the end of the log.
    assert sorted(e["position"] for s in shares for e in s["events"]) == [e["position"] for e in whole]
    assert all({e["enterprise_id"] for e in s["events"]}.isdisjoint({e["enterprise_id"] for e in o["events"]})
               for s, o in [shares])
    assert all(s["next"] >= whole[-1]["position"] for s in shares)
    assert all(api.http.get("/v1/events", params={"partition": i, "partitions": 2, "after": s["next"]},
                            headers=ops).json()["events"] == [] for i, s in enumerate(shares))
    # A rebuild reads the log in long pages: up to 5,000 events each.
    assert api.http.get("/v1/events", params={"limit": 5000}, headers=ops).status_code == 200
    assert assert_problem(api.http.get("/v1/events", params={"limit": 5001}, headers=ops), 422)["errors"][0]["field"] == "limit"
    for params, field in (({"partition": 0}, "partitions"), ({"partitions": 2}, "partition"),
                          ({"partition": 2, "partitions": 2}, "partition"), ({"partition": 0, "partitions": 0}, "partitions"),
                          ({"partition": 0, "partitions": 65}, "partitions"), ({"partition": -1, "partitions": 2}, "partition")):
        body = assert_problem(api.http.get("/v1/events", params=params, headers=ops), 422)
        assert [e["field"] for e in body["errors"]] == [field], (params, body)


def test_fifty_concurrent_unchecked_appends_get_versions_2_to_51(api: Api) -> None:
    api.register()
    statuses, versions, lock = [], [], threading.Lock()

    def append(i: int) -> None:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            response = client.post(f"/v1/enterprises/{CEMENT}/events",
                                   json={"expected_version": None, "events": [activity(f"2024-{(i % 12) + 1:02d}")]},
                                   headers=api.as_("enterprise", CEMENT))
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 201:
                versions.append(response.json()["first_version"])

    threads = [threading.Thread(target=append, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 50
    assert sorted(versions) == list(range(2, 52))
    chain = api.http.get(f"/v1/enterprises/{CEMENT}/verify-chain", headers=api.as_("enterprise", CEMENT)).json()
    assert chain["ok"] and chain["events_checked"] == 51


def test_tampering_is_reported_at_the_first_bad_version(api: Api) -> None:
    api.register()
    api.append(CEMENT, [activity("2022"), activity("2023"), activity("2024")])
    path = f"/v1/enterprises/{CEMENT}/verify-chain"
    assert api.http.get(path, headers=api.as_("operator", "ops")).json()["ok"] is True
    engine = api.app.state.accounts.store.engine
    with engine.begin() as conn:
        row = conn.execute(text("SELECT data FROM events WHERE stream_id = :s AND stream_version = 3"), {"s": CEMENT}).scalar_one()
        row = row if isinstance(row, dict) else __import__("json").loads(row)
        row["revenue_10k_cny"] = "1"
        conn.execute(text("UPDATE events SET data = :d WHERE stream_id = :s AND stream_version = 3"),
                     {"d": __import__("json").dumps(row), "s": CEMENT})
    report = api.http.get(path, headers=api.as_("enterprise", CEMENT)).json()
    assert report == {**report, "ok": False, "first_bad_version": 3}
    assert_problem(api.http.get(path, headers=api.as_("bank", "bank-b")), 403, "no_consent")


def test_oversized_bodies_get_413(api: Api) -> None:
    api.register()
    huge = {"expected_version": None, "events": [activity()], "padding": "x" * (1024 * 1024 + 10)}
    response = api.http.post(f"/v1/enterprises/{CEMENT}/events", json=huge, headers=api.as_("enterprise", CEMENT))
    assert_problem(response, 413)


def test_health_readiness_metrics_and_openapi(api: Api) -> None:
    api.register()
    assert "carbon_events_appended" in api.http.get("/metrics").text
    assert api.http.get("/healthz").json() == {"status": "ok"}
    assert api.http.get("/readyz").json() == {"status": "ready"}
    spec = api.http.get("/openapi.json").json()
    assert "/v1/enterprises/{enterprise_id}/events" in spec["paths"]
