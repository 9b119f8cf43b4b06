"""Who may read what (SPEC §1, §5, §6): every read endpoint of every service, for every role, under
every consent state, over real HTTP with the four services running.

Each third party has one identity per consent state, and for each scope there is one enterprise
whose consents set those states up: none, granted with the scope the endpoint needs, granted with
another scope only, granted then revoked, and granted with an expiry that has passed. The owner is
the enterprise itself, for which consent does not apply.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.contract.test_security_stack import Platform, platform_stack, uscc

THIRD_PARTIES = ("other", "bank", "partner", "regulator", "verifier", "registry", "service", "operator")
ROLES = ("owner", *THIRD_PARTIES)
STATES = ("none", "right", "other_scope", "revoked", "expired")
STATE_REASON = {"none": "no_consent", "other_scope": "scope_missing", "revoked": "consent_revoked",
                "expired": "consent_expired"}
OTHER_SCOPE = "account:verify"  # never what a read needs
EXPIRES_AFTER_S = 4.0

# ok: 200 · owner: 403 not_owner · role: 403 wrong_role · consent: 200 with the right scope, else 403
# with the consent state's reason · feed: 200, carrying the enterprise's events only with the right scope
TABLE = """
endpoint             scope             owner    other    bank     partner  regulator verifier registry service  operator
rating               rating:read       ok       owner    consent  consent  ok        role     role     role     role
rating-as-of         rating:read       ok       owner    consent  consent  ok        role     role     role     role
rating-history       rating:read       ok       owner    consent  consent  ok        role     role     role     role
pricing              pricing:read      ok       owner    consent  consent  role      role     role     role     role
eligibility          rating:read       role     role     consent  role     ok        role     role     role     role
decision             rating:read       ok       owner    role     role     ok        role     role     role     role
access-log           rating:read       ok       owner    role     role     role      role     role     role     role
disclosure           disclosure:read   ok       consent  consent  consent  ok        consent  consent  consent  consent
disclosure-html      disclosure:read   ok       consent  consent  consent  ok        consent  consent  consent  consent
feed                 events:subscribe  role     role     role     feed     role      role     role     role     role
feed-foreign         events:subscribe  role     role     role     owner    role      role     role     role     role
subscriptions        events:subscribe  role     role     role     ok       role      role     role     role     role
deliveries           events:subscribe  role     role     role     ok       role      role     role     role     role
account-stream       account:read      ok       owner    consent  consent  consent   consent  consent  consent  ok
account-consents     account:read      ok       owner    role     role     role      role     role     role     ok
verify-chain         account:read      ok       owner    consent  consent  consent   consent  consent  consent  ok
global-log           account:read      role     role     role     role     role      role     role     ok       ok
factors              account:read      ok       ok       ok       ok       ok        ok       ok       ok       ok
calculation          account:read      ok       owner    role     role     role      role     role     role     ok
"""


def parse_table() -> dict[str, tuple[str, dict[str, str]]]:
    header, *rows = [line.split() for line in TABLE.strip().splitlines()]
    assert header[2:] == list(ROLES)
    return {row[0]: (row[1], dict(zip(ROLES, row[2:], strict=True))) for row in rows}


RULES = parse_table()
ENTERPRISE_OF_SCOPE = {scope: uscc(100 + i) for i, scope in enumerate(sorted({s for s, _ in RULES.values()}))}


def identity(role: str, state: str, enterprise: str) -> tuple[str, str]:
    """(JWT role, sub) of a party; each third party has one sub per consent state."""
    if role == "owner":
        return "enterprise", enterprise
    if role == "other":
        return "enterprise", uscc(500 + STATES.index(state))
    return role, f"{role}-{state}"


@dataclass
class World:
    platform: Platform
    subscriptions: dict[str, str] = field(default_factory=dict)  # partner sub -> its subscription
    foreign_subscription: str = ""
    decision_id: str = ""
    calculation_id: str = ""


def build_world(platform: Platform) -> World:
    world = World(platform)
    last_expiry = datetime.now(UTC)
    for scope, enterprise in ENTERPRISE_OF_SCOPE.items():
        platform.register(enterprise)
        for role in THIRD_PARTIES:
            for state in STATES:
                _, sub = identity(role, state, enterprise)
                if state == "right":
                    platform.grant(enterprise, sub, [scope])
                elif state == "other_scope":
                    platform.grant(enterprise, sub, [OTHER_SCOPE])
                elif state == "revoked":
                    platform.revoke(enterprise, platform.grant(enterprise, sub, [scope]))
                elif state == "expired":
                    last_expiry = datetime.now(UTC) + timedelta(seconds=EXPIRES_AFTER_S)
                    platform.grant(enterprise, sub, [scope], expires_at=last_expiry)
    feed_enterprise = ENTERPRISE_OF_SCOPE["events:subscribe"]
    for state in STATES:
        world.subscriptions[f"partner-{state}"] = platform.subscribe(f"partner-{state}", [feed_enterprise])[0]
    world.foreign_subscription = platform.subscribe("partner-elsewhere", [feed_enterprise])[0]
    platform.append(feed_enterprise, {"type": "ActivityReported", "data": {
        "period": "2024", "revenue_10k_cny": "1000", "output": {"quantity": "10", "unit": "t"}}})
    rated = ENTERPRISE_OF_SCOPE["rating:read"]
    platform.sync()
    decision = platform.call("rating", "GET", f"/v1/ratings/{rated}", "enterprise", rated)
    assert decision.status_code == 200, decision.text
    world.decision_id = decision.json()["decision_id"]
    account_owner = ENTERPRISE_OF_SCOPE["account:read"]
    calculation = platform.call("accounting", "POST", "/v1/calculations", "enterprise", account_owner, json={
        "enterprise_id": account_owner, "period": "2024", "record": False,
        "activities": [{"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "10", "unit": "10^4 Nm3"}]})
    assert calculation.status_code == 200, calculation.text
    world.calculation_id = calculation.json()["calculation_id"]
    # Every "expired" consent has lapsed before the first read.
    time.sleep(max(0.0, (last_expiry - datetime.now(UTC)).total_seconds() + 0.2))
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with platform_stack(tmp_path_factory.mktemp("security-matrix")) as platform:
        yield build_world(platform)


def request_for(endpoint: str, world: World, enterprise: str, sub: str) -> tuple[str, str, str, dict[str, Any]]:
    """(service, method, path, httpx kwargs) of one read."""
    in_90_days = (date.today() + timedelta(days=90)).isoformat()
    match endpoint:
        case "rating":
            return "rating", "GET", f"/v1/ratings/{enterprise}", {}
        case "rating-as-of":
            return "rating", "GET", f"/v1/ratings/{enterprise}", {"params": {"as_of": "2024-06-30"}}
        case "rating-history":
            return "rating", "GET", f"/v1/ratings/{enterprise}/history", {}
        case "pricing":
            return "rating", "GET", f"/v1/pricing/{enterprise}", {"params": {"product": "bill_discount"}}
        case "eligibility":
            return "rating", "POST", "/v1/rediscount/eligibility", {"json": {"issuer_id": enterprise, "bills": [
                {"bill_no": "B-1", "amount_cny": "1000000", "maturity": in_90_days}]}}
        case "decision":
            return "rating", "GET", f"/v1/decisions/{world.decision_id}", {}
        case "access-log":
            return "rating", "GET", f"/v1/access-log/{enterprise}", {}
        case "disclosure":
            return "disclosure", "GET", f"/v1/disclosures/{enterprise}/2024", {}
        case "disclosure-html":
            return "disclosure", "GET", f"/v1/disclosures/{enterprise}/2024", {"params": {"format": "html"}}
        case "feed":
            own = world.subscriptions.get(sub, world.subscriptions["partner-right"])
            return "disclosure", "GET", f"/v1/feeds/{own}", {}
        case "feed-foreign":
            return "disclosure", "GET", f"/v1/feeds/{world.foreign_subscription}", {}
        case "subscriptions":
            return "disclosure", "GET", "/v1/subscriptions", {}
        case "deliveries":
            own = world.subscriptions.get(sub, world.subscriptions["partner-right"])
            return "disclosure", "GET", f"/v1/subscriptions/{own}/deliveries", {}
        case "account-stream":
            return "account", "GET", f"/v1/enterprises/{enterprise}/events", {}
        case "account-consents":
            return "account", "GET", f"/v1/enterprises/{enterprise}/consents", {}
        case "verify-chain":
            return "account", "GET", f"/v1/enterprises/{enterprise}/verify-chain", {}
        case "global-log":
            return "account", "GET", "/v1/events", {}
        case "factors":
            return "accounting", "GET", "/v1/factors", {"params": {"kind": "fuel"}}
        case "calculation":
            return "accounting", "GET", f"/v1/calculations/{world.calculation_id}", {}
    raise AssertionError(endpoint)


def cases() -> Iterator[Any]:
    for endpoint in RULES:
        for role in ROLES:
            for state in (("none",) if role == "owner" else STATES):
                yield pytest.param(endpoint, role, state, id=f"{endpoint}-{role}-{state}")


@pytest.mark.parametrize(("endpoint", "role", "state"), list(cases()))
def test_read_access(world: World, endpoint: str, role: str, state: str) -> None:
    scope, by_role = RULES[endpoint]
    rule = by_role[role]
    enterprise = ENTERPRISE_OF_SCOPE[scope]
    jwt_role, sub = identity(role, state, enterprise)
    service, method, path, kwargs = request_for(endpoint, world, enterprise, sub)
    response = world.platform.call(service, method, path, jwt_role, sub, **kwargs)
    expected_reason = {"owner": "not_owner", "role": "wrong_role"}.get(rule)
    if rule == "consent" and state != "right":
        expected_reason = STATE_REASON[state]
    what = f"{method} {path} as {jwt_role}/{sub}"
    if expected_reason is None:
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
        if rule == "feed":
            events = response.json()["events"]
            assert bool(events) == (state == "right"), f"{what}: {len(events)} events"
            assert all(e["data"]["enterprise_id"] == enterprise for e in events)
    else:
        assert response.status_code == 403, f"{what}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["reason"] == expected_reason, f"{what}: {body}"
        assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == 403


def test_served_third_party_reads_are_logged_and_refused_ones_are_not(world: World) -> None:
    platform = world.platform
    for scope, what in (("rating:read", "rating"), ("pricing:read", "pricing"), ("disclosure:read", "disclosure")):
        enterprise = ENTERPRISE_OF_SCOPE[scope]

        def reads(after: int | None = None) -> list[dict[str, Any]]:
            params = {"limit": 1000} | ({"after": after} if after is not None else {})
            response = platform.call("rating", "GET", f"/v1/access-log/{enterprise}", "enterprise", enterprise,
                                     params=params)
            assert response.status_code == 200, response.text
            return response.json()["reads"]

        before = reads()
        mark = before[-1]["read_id"] if before else None
        for role in THIRD_PARTIES:
            for state in STATES:
                jwt_role, sub = identity(role, state, enterprise)
                service, method, path, kwargs = request_for(what, world, enterprise, sub)
                platform.call(service, method, path, jwt_role, sub, **kwargs)
        logged = {(r["party"], r["role"], r["supervisory"]) for r in reads(mark)}
        expected = {("bank-right", "bank", False), ("partner-right", "partner", False)}
        if scope != "pricing:read":
            expected |= {(f"regulator-{state}", "regulator", True) for state in STATES}
        if scope == "disclosure:read":
            expected |= {(identity(role, "right", enterprise)[1], identity(role, "right", enterprise)[0], False)
                         for role in THIRD_PARTIES if role not in ("regulator",)}
        assert logged == expected
