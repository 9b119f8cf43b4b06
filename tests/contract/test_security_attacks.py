"""Attacks on the running platform over real HTTP: forged and broken tokens, writing where one may
not, SQL injection in every kind of field, oversized bodies, and secrets leaking into logs."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.contract.test_security_stack import SECRET, SERVICES, Platform, platform_stack, uscc

FAR = 4102444800  # 2100-01-01


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    with platform_stack(tmp_path_factory.mktemp("security-attacks")) as running:
        yield running


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == status
    if reason is not None:
        assert body.get("reason") == reason, body
    return body


def activity(period: str = "2024") -> dict[str, Any]:
    return {"type": "ActivityReported",
            "data": {"period": period, "revenue_10k_cny": "1000", "output": {"quantity": "10", "unit": "t"}}}


# ---- tokens ----------------------------------------------------------------------------------

def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    with warnings.catch_warnings():  # HS512 with the suite's secret is meant to be weak and refused
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=alg)


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


GOOD = {"sub": "ops", "role": "operator", "exp": FAR}
BAD_AUTHORIZATION = {
    "missing": None,
    "bearer-without-token": "Bearer",
    "garbage": "Bearer not-a-jwt",
    "basic-scheme": "Basic b3BzOm9wcw==",
    "wrong-signature": "Bearer " + hs(GOOD, "a-wrong-secret-that-is-long-enough-for-hs256"),
    "truncated-signature": "Bearer " + hs(GOOD)[:-6],
    "alg-none": "Bearer " + unsigned(GOOD),
    "alg-None": "Bearer " + unsigned(GOOD, "None"),
    "alg-none-with-signature": "Bearer " + unsigned(GOOD) + hs(GOOD).rsplit(".", 1)[1],
    "hs512-with-the-secret": "Bearer " + hs(GOOD, alg="HS512"),
    "expired": "Bearer " + hs({**GOOD, "exp": int(time.time()) - 3600}),
    "not-yet-valid": "Bearer " + hs({**GOOD, "nbf": FAR - 1}),
    "no-exp": "Bearer " + hs({"sub": "ops", "role": "operator"}),
    "no-sub": "Bearer " + hs({"role": "operator", "exp": FAR}),
    "empty-sub": "Bearer " + hs({**GOOD, "sub": "  "}),
    "overlong-sub": "Bearer " + hs({**GOOD, "sub": "x" * 129}),
    "sub-not-a-string": "Bearer " + hs({**GOOD, "sub": 42}),
    "no-role": "Bearer " + hs({"sub": "ops", "exp": FAR}),
    "unknown-role": "Bearer " + hs({**GOOD, "role": "king"}),
    "role-list": "Bearer " + hs({**GOOD, "role": ["operator"]}),
    "role-wrong-case": "Bearer " + hs({**GOOD, "role": "OPERATOR"}),
}
# A protected read and a protected write per service; the write's body is valid so only the token decides.
PROTECTED = {
    "account": [("GET", "/v1/events", None),
                ("POST", "/v1/enterprises", {"uscc": uscc(1), "name": "n", "industry": "C3011", "region": "510100"})],
    "accounting": [("GET", "/v1/factors", None),
                   ("POST", "/v1/calculations", {"enterprise_id": uscc(1), "period": "2024", "activities": [
                       {"category": "purchased_heat", "quantity": "1", "unit": "GJ"}]})],
    "rating": [("GET", f"/v1/ratings/{uscc(1)}", None),
               ("POST", "/v1/rediscount/eligibility", {"issuer_id": uscc(1), "bills": [
                   {"bill_no": "B-1", "amount_cny": "1", "maturity": "2099-01-01"}]})],
    "disclosure": [("GET", "/v1/subscriptions", None),
                   ("POST", "/v1/subscriptions", {"callback_url": "https://partner.example.com/hook",
                                                  "event_types": ["ActivityReported"]})],
}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("kind", list(BAD_AUTHORIZATION))
def test_bad_tokens_get_401_on_every_service(platform: Platform, service: str, kind: str) -> None:
    authorization = BAD_AUTHORIZATION[kind]
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in PROTECTED[service]:
        response = platform.http[service].request(method, path, headers=headers, json=body)
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert SECRET not in response.text and "reason" not in problem


def test_the_good_token_of_the_bad_token_table_works(platform: Platform) -> None:
    """The table's tokens fail for what is wrong with them, not for something else."""
    response = platform.http["account"].get("/v1/events", headers={"Authorization": "Bearer " + hs(GOOD)})
    assert response.status_code == 200


# ---- writing where one may not ----------------------------------------------------------------

def test_an_enterprise_cannot_write_to_or_manage_another_account(platform: Platform) -> None:
    mine, theirs = uscc(201), uscc(202)
    platform.register(mine)
    platform.register(theirs)
    consent = platform.grant(theirs, "bank-a", ["rating:read"])
    before = platform.stream(theirs)

    def as_mine(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return platform.call("account", method, path, "enterprise", mine, **kwargs)

    assert_problem(as_mine("POST", f"/v1/enterprises/{theirs}/events",
                           json={"expected_version": None, "events": [activity()]}), 403, "not_owner")
    assert_problem(as_mine("POST", f"/v1/enterprises/{theirs}/consents", json={
        "grantee": mine, "scopes": ["account:read"], "purpose": "p",
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}), 403, "not_owner")
    assert_problem(as_mine("DELETE", f"/v1/enterprises/{theirs}/consents/{consent}"), 403, "not_owner")
    assert_problem(as_mine("POST", "/v1/enterprises", json={
        "uscc": uscc(203), "name": "n", "industry": "C3011", "region": "510100"}), 403, "not_owner")
    recorded = platform.call("accounting", "POST", "/v1/calculations", "enterprise", mine, json={
        "enterprise_id": theirs, "period": "2024", "record": True,
        "activities": [{"category": "purchased_heat", "quantity": "1", "unit": "GJ"}]})
    assert_problem(recorded, 403, "not_owner")
    # Consents are the owner's alone: a grantee cannot extend or revoke them either.
    assert_problem(platform.call("account", "DELETE", f"/v1/enterprises/{theirs}/consents/{consent}",
                                 "bank", "bank-a"), 403, "wrong_role")
    assert platform.stream(theirs) == before
    assert platform.call("account", "GET", f"/v1/enterprises/{uscc(203)}/events", "operator", "ops").status_code == 404


VERIFIED = {"type": "EmissionVerified", "data": {"period": "2024", "verifier": "verifier-cq",
                                                 "verified_tco2e": "10", "report_ref": "VR-1"}}
REDUCTION_VERIFIED = {"type": "ReductionVerified", "data": {
    "project_id": "P-1", "period": "2024", "verifier": "verifier-cq", "verified_reduction_tco2e": "1",
    "report_ref": "VR-2"}}
ACQUIRED = {"type": "CarbonAssetAcquired", "data": {"asset": "CCER", "batch": "B-1", "quantity_t": "100",
                                                    "source": "registry transfer"}}


def test_verifier_and_registry_events_by_anyone_else_are_refused(platform: Platform) -> None:
    enterprise = uscc(211)
    platform.register(enterprise)
    platform.append(enterprise, {"type": "EmissionRecorded", "data": {
        "calculation_id": "c-1", "period": "2024", "scope": 1, "category": "fuel_combustion", "gas": "CO2",
        "tco2e": "10", "factor_ref": "GB/T 32150-2015", "methodology": "GB/T 32150-2015", "data_quality": 2}})
    platform.append(enterprise, {"type": "ReductionRecorded", "data": {
        "project_id": "P-1", "period": "2024", "methodology": "m", "baseline_tco2e": "5", "project_tco2e": "3",
        "reduction_tco2e": "2", "benefits": {}}})
    # Even holding the consent a verifier needs does not let another role verify.
    for grantee in ("verifier-cq", enterprise, "bank-a", "sceex", "accounting", "ops", "regulator-pboc"):
        platform.grant(enterprise, grantee, ["account:verify"])
    before = platform.stream(enterprise)
    impostors = [("enterprise", enterprise), ("enterprise", uscc(212)), ("bank", "bank-a"), ("partner", "p"),
                 ("regulator", "regulator-pboc"), ("registry", "sceex"), ("service", "accounting"),
                 ("operator", "ops")]
    for role, sub in impostors:
        for event in (VERIFIED, REDUCTION_VERIFIED):
            refused = platform.call("account", "POST", f"/v1/enterprises/{enterprise}/events", role, sub,
                                    json={"expected_version": None, "events": [event]})
            assert_problem(refused, 403, "wrong_role")
    for role, sub in [("enterprise", enterprise), ("verifier", "verifier-cq"), ("service", "accounting"),
                      ("bank", "bank-a"), ("operator", "ops")]:
        refused = platform.call("account", "POST", f"/v1/enterprises/{enterprise}/events", role, sub,
                                json={"expected_version": None, "events": [ACQUIRED]})
        assert_problem(refused, 403, "wrong_role")
    # A service other than accounting records nothing, and accounting nothing but its results.
    for sub, event in (("rating", activity()), ("disclosure", before[1]), ("accounting", activity())):
        body = {"expected_version": None, "events": [{"type": event["type"], "data": event["data"]}]}
        refused = platform.call("account", "POST", f"/v1/enterprises/{enterprise}/events", "service", sub, json=body)
        assert_problem(refused, 403, "wrong_role")
    # A verifier without a live account:verify consent of its own is refused too.
    assert_problem(platform.call("account", "POST", f"/v1/enterprises/{enterprise}/events", "verifier", "other-body",
                                 json={"expected_version": None, "events": [{**VERIFIED, "data": {
                                     **VERIFIED["data"], "verifier": "other-body"}}]}), 403, "no_consent")
    # Only the disclosure service reports reads into the rating access log.
    for role, sub in (("service", "rating"), ("service", "accounting"), ("partner", "disclosure"),
                      ("enterprise", enterprise), ("operator", "ops")):
        forged = platform.call("rating", "POST", f"/v1/access-log/{enterprise}", role, sub, json={
            "party": "bank-a", "role": "bank", "what": "rating", "consent_id": None, "supervisory": False})
        assert_problem(forged, 403, "wrong_role")
    assert platform.stream(enterprise) == before


# ---- SQL injection -----------------------------------------------------------------------------

INJECTIONS = ["' OR 1=1 --", "'; DROP TABLE events; --", "1 OR 1=1", '" OR ""="', "%' OR '1'='1",
              "x'); DELETE FROM consents; --", "1; SELECT pg_sleep(5)"]


@pytest.fixture(scope="module")
def victim(platform: Platform) -> dict[str, Any]:
    """An enterprise with data, consents and a subscription that injections try to reach."""
    enterprise = uscc(221)
    platform.register(enterprise)
    platform.append(enterprise, activity())
    consent = platform.grant(enterprise, "bank-a", ["rating:read", "pricing:read", "disclosure:read",
                                                    "account:read", "events:subscribe"])
    subscription, _ = platform.subscribe("partner-sql", [enterprise])
    platform.sync()
    return {"enterprise": enterprise, "consent": consent, "subscription": subscription}


def snapshot(platform: Platform, victim: dict[str, Any]) -> tuple[Any, ...]:
    enterprise = victim["enterprise"]
    consents = platform.call("account", "GET", f"/v1/enterprises/{enterprise}/consents", "enterprise", enterprise)
    chain = platform.call("account", "GET", f"/v1/enterprises/{enterprise}/verify-chain", "operator", "ops")
    subscriptions = platform.call("disclosure", "GET", "/v1/subscriptions", "partner", "partner-sql")
    return len(platform.log()), consents.json(), chain.json(), subscriptions.json()


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_injection_in_paths_queries_and_bodies_is_refused_without_effect(
        platform: Platform, victim: dict[str, Any], payload: str) -> None:
    enterprise, consent, subscription = victim["enterprise"], victim["consent"], victim["subscription"]
    before = snapshot(platform, victim)
    started = time.monotonic()
    quoted = httpx.URL(f"/{payload}").path.lstrip("/")  # what the client sends in a path segment
    assert quoted

    def expect(status: int, service: str, method: str, path: str, role: str, sub: str, **kwargs: Any) -> None:
        response = platform.call(service, method, path, role, sub, **kwargs)
        assert response.status_code == status, \
            f"{method} {response.request.url}: {response.status_code} {response.text[:200]}"

    # enterprise ids in paths
    expect(404, "account", "GET", f"/v1/enterprises/{payload}/events", "operator", "ops")
    expect(404, "account", "GET", f"/v1/enterprises/{payload}/verify-chain", "operator", "ops")
    expect(404, "account", "GET", f"/v1/enterprises/{payload}/consents", "operator", "ops")
    expect(404, "account", "POST", f"/v1/enterprises/{payload}/events", "enterprise", payload,
           json={"expected_version": None, "events": [activity()]})
    expect(404, "rating", "GET", f"/v1/ratings/{payload}", "regulator", "pboc")
    expect(404, "rating", "GET", f"/v1/pricing/{payload}", "bank", "bank-a", params={"product": "loan"})
    expect(404, "rating", "GET", f"/v1/access-log/{payload}", "enterprise", payload)
    expect(404, "disclosure", "GET", f"/v1/disclosures/{payload}/2024", "regulator", "pboc")
    # other ids in paths
    expect(404, "account", "DELETE", f"/v1/enterprises/{enterprise}/consents/{payload}", "enterprise", enterprise)
    expect(404, "rating", "GET", f"/v1/decisions/{payload}", "regulator", "pboc")
    expect(404, "accounting", "GET", f"/v1/calculations/{payload}", "operator", "ops")
    expect(404, "disclosure", "GET", f"/v1/feeds/{payload}", "partner", "partner-sql")
    expect(404, "disclosure", "GET", f"/v1/subscriptions/{payload}/deliveries", "partner", "partner-sql")
    # cursors and numbers in queries
    expect(422, "account", "GET", "/v1/events", "operator", "ops", params={"after": payload})
    expect(422, "account", "GET", f"/v1/enterprises/{enterprise}/events", "enterprise", enterprise,
           params={"from_version": payload})
    expect(422, "disclosure", "GET", f"/v1/feeds/{subscription}", "partner", "partner-sql", params={"after": payload})
    expect(422, "rating", "GET", f"/v1/access-log/{enterprise}", "enterprise", enterprise, params={"after": payload})
    expect(422, "rating", "GET", f"/v1/ratings/{enterprise}", "enterprise", enterprise, params={"as_of": payload})
    # text filters match literally: nothing, never everything
    for name in ("kind", "fuel", "region", "edition", "gas"):
        response = platform.call("accounting", "GET", "/v1/factors", "bank", "bank-a", params={name: payload[:8]})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert response.json()["factors"] == [], (name, payload)
    deliveries = platform.call("disclosure", "GET", f"/v1/subscriptions/{subscription}/deliveries", "partner",
                               "partner-sql", params={"enterprise_id": payload})
    assert deliveries.status_code == 200 and deliveries.json()["deliveries"] == []
    # a token whose sub is the injection holds no one's consent
    for service, path, params in (("rating", f"/v1/ratings/{enterprise}", {}),
                                  ("rating", f"/v1/pricing/{enterprise}", {"product": "loan"}),
                                  ("disclosure", f"/v1/disclosures/{enterprise}/2024", {}),
                                  ("account", f"/v1/enterprises/{enterprise}/events", {})):
        refused = platform.call(service, "GET", path, "bank", payload, params=params)
        assert_problem(refused, 403, "no_consent")
    feed = platform.call("disclosure", "GET", f"/v1/feeds/{subscription}", "partner", payload)
    assert_problem(feed, 403, "not_owner")
    # body fields
    expect(422, "account", "POST", "/v1/enterprises", "operator", "ops",
           json={"uscc": payload, "name": payload, "industry": "C3011", "region": "510100"})
    expect(404, "rating", "POST", "/v1/rediscount/eligibility", "regulator", "pboc", json={
        "issuer_id": payload, "bills": [{"bill_no": "B-1", "amount_cny": "1", "maturity": "2099-01-01"}]})
    expect(422, "rating", "POST", "/v1/rediscount/claims", "regulator", "pboc", json={"decision_id": payload[:36]})
    expect(422, "accounting", "POST", "/v1/calculations", "operator", "ops", json={
        "enterprise_id": payload, "period": "2024",
        "activities": [{"category": "purchased_heat", "quantity": "1", "unit": "GJ"}]})
    expect(422, "disclosure", "POST", "/v1/subscriptions", "partner", "partner-sql", json={
        "callback_url": "https://partner.example.com/hook", "event_types": ["ActivityReported"],
        "enterprise_ids": [payload]})
    expect(422, "account", "POST", f"/v1/enterprises/{enterprise}/events", "enterprise", enterprise,
           json={"expected_version": payload, "events": [activity()]})
    expect(422, "account", "POST", f"/v1/enterprises/{enterprise}/events", "enterprise", enterprise,
           json={"expected_version": None, "events": [{"type": payload, "data": {}}]})
    expect(404, "account", "DELETE", f"/v1/enterprises/{enterprise}/consents/{consent}'--", "enterprise", enterprise)
    assert time.monotonic() - started < 30  # no injected sleep ran
    assert snapshot(platform, victim) == before


# ---- oversized bodies ---------------------------------------------------------------------------

WRITES = {"account": "/v1/enterprises", "accounting": "/v1/calculations", "rating": "/v1/rediscount/eligibility",
          "disclosure": "/v1/subscriptions"}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "no-token"])
def test_bodies_over_1_mib_get_413_on_every_service(platform: Platform, service: str, framing: str,
                                                     authenticated: bool) -> None:
    before = len(platform.log())
    body = json.dumps({"name": "x" * (1024 * 1024)}).encode()
    headers = {"Content-Type": "application/json"}
    if authenticated:
        headers.update(platform.auth("operator", "ops"))
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    content: Any = body if framing == "content-length" else iter(chunks)  # an iterator is sent chunked
    response = platform.http[service].post(WRITES[service], content=content, headers=headers)
    assert assert_problem(response, 413)["type"] == "/problems/content-too-large"
    assert len(platform.log()) == before


def test_a_body_of_exactly_1_mib_is_not_refused_for_its_size(platform: Platform) -> None:
    padding = 1024 * 1024 - len(json.dumps({"uscc": "", "name": "", "industry": "C3011", "region": "510100"}))
    body = json.dumps({"uscc": "", "name": "x" * padding, "industry": "C3011", "region": "510100"}).encode()
    assert len(body) == 1024 * 1024
    response = platform.http["account"].post("/v1/enterprises", content=body, headers={
        "Content-Type": "application/json", **platform.auth("operator", "ops")})
    assert response.status_code == 422  # judged on its content, not refused as too large


# ---- secrets in logs -----------------------------------------------------------------------------

# SQLAlchemy keeps its own loggers at WARNING unless asked (its SQL echo shows result rows by design).
LOGGERS = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "httpx", "httpcore", "carbon",
           "services", "alembic", "opentelemetry", "starlette", "fastapi"]
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger at DEBUG, including uvicorn's, which do not propagate to the root."""
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        if name and not logger.propagate:
            logger.addHandler(caplog.handler)
    with caplog.at_level(logging.DEBUG):
        yield caplog
    for logger, level in saved:
        logger.setLevel(level)
        if caplog.handler in logger.handlers:
            logger.removeHandler(caplog.handler)


def test_no_secret_or_token_reaches_the_logs(platform: Platform, all_logs: pytest.LogCaptureFixture) -> None:
    enterprise = uscc(231)
    platform.register(enterprise)
    consent = platform.grant(enterprise, "bank-log", ["rating:read", "disclosure:read", "events:subscribe"])
    platform.grant(enterprise, "partner-log", ["events:subscribe"])
    subscription, webhook_secret = platform.subscribe("partner-log", [enterprise])
    assert webhook_secret.startswith("whsec_")
    platform.append(enterprise, activity())
    recorded = platform.call("accounting", "POST", "/v1/calculations", "enterprise", enterprise, json={
        "enterprise_id": enterprise, "period": "2024", "record": True,
        "activities": [{"category": "purchased_heat", "quantity": "100", "unit": "GJ"}]})
    assert recorded.status_code == 200, recorded.text  # accounting → account with its service token
    platform.sync()
    assert platform.call("rating", "GET", f"/v1/ratings/{enterprise}", "bank", "bank-log").status_code == 200
    # disclosure → rating access log with its service token
    report = platform.call("disclosure", "GET", f"/v1/disclosures/{enterprise}/2024", "bank", "bank-log")
    assert report.status_code == 200
    deadline = time.monotonic() + 20
    while not platform.receiver.bodies:
        assert time.monotonic() < deadline, "the webhook was not delivered"
        time.sleep(0.05)
    assert platform.call("disclosure", "GET", f"/v1/feeds/{subscription}", "partner", "partner-log").status_code == 200
    # failures are logged too: refused tokens, bad input, a token smuggled into a body and a query
    token = platform.auth("bank", "bank-log")["Authorization"].removeprefix("Bearer ")
    platform.http["account"].get("/v1/events", headers={"Authorization": "Bearer " + hs(GOOD, "wrong-secret-" * 3)})
    platform.call("account", "POST", f"/v1/enterprises/{enterprise}/consents", "enterprise", enterprise,
                  json={"grantee": token, "scopes": ["nope"], "purpose": webhook_secret, "expires_at": "x"})
    platform.call("account", "GET", "/v1/events", "operator", "ops", params={"after": "x"})
    platform.call("account", "DELETE", f"/v1/enterprises/{enterprise}/consents/{consent}", "enterprise", enterprise)
    platform.sync()

    text = all_logs.text + "\n".join(str(r.__dict__) for r in all_logs.records)
    assert all_logs.records, "nothing was captured: the capture itself is broken"
    assert any(r.name.startswith("uvicorn.access") for r in all_logs.records), "uvicorn's access log was not captured"
    assert any(r.name.startswith("httpx") or r.name.startswith("httpcore") for r in all_logs.records)
    assert SECRET not in text
    assert webhook_secret not in text and webhook_secret.removeprefix("whsec_") not in text
    leaked = [t for t in platform.tokens if t in text or t.rsplit(".", 1)[-1] in text]
    assert not leaked, f"{len(leaked)} bearer tokens were logged"
    assert not JWT_PATTERN.search(text), JWT_PATTERN.search(text)


def test_database_errors_and_sql_logs_do_not_carry_bound_values(tmp_path) -> None:
    """An unexpected database error is logged with its traceback: the values must not be in it."""
    from sqlalchemy import text

    from carbon.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'e.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE s (secret TEXT UNIQUE)"))
            conn.execute(text("INSERT INTO s VALUES (:v)"), {"v": "whsec_c2VjcmV0"})
        with pytest.raises(Exception) as failed, engine.begin() as conn:
            conn.execute(text("INSERT INTO s VALUES (:v)"), {"v": "whsec_c2VjcmV0"})
        assert "UNIQUE" in str(failed.value) and "whsec_" not in str(failed.value)
    finally:
        engine.dispose()
