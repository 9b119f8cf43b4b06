"""Regressions for what fuzzing the HTTP APIs found (``test_fuzz_api.py``), over real HTTP on SQLite
and PostgreSQL: each test names the request and the answer it used to get."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from carbon.auth import mint_token
from contracts.examples import CEMENT_MAKER_USCC
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app as create_accounting_app
from services.accounting.settings import AccountingSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.settings import DisclosureSettings
from services.rating.api import create_app as create_rating_app
from services.rating.settings import RatingSettings
from tests.live import serve

SECRET = "fuzz-findings-secret-long-enough-for-hs256"
ENTERPRISE = CEMENT_MAKER_USCC
BEYOND_INTEGER = 2**31  # one past the largest value of an INTEGER column (stream versions)
BEYOND_BIGINT = 2**63  # one past the largest value of a BIGINT column (positions, cursors)


@dataclass
class Services:
    account: httpx.Client
    accounting: httpx.Client
    rating: httpx.Client
    disclosure: httpx.Client


def auth(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}"}


OWNER = auth("enterprise", ENTERPRISE)
OPERATOR = auth("operator", "ops")
REGULATOR = auth("regulator", "pboc-chengdu")
PARTNER = auth("partner", "tianfu-credit")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("findings")
    with ExitStack() as stack:
        def common(name: str) -> dict[str, Any]:
            if request.param == "sqlite":
                url = f"sqlite:///{tmp / f'{name}.db'}"
            else:
                from tests import infra

                url = stack.enter_context(infra.fresh_database(request.getfixturevalue("postgres_server")))
            return {"database_url": url, "jwt_secret": SECRET, "data_dir": tmp}

        account = stack.enter_context(serve(create_account_app(AccountSettings(**common("account")))))
        rating = stack.enter_context(serve(create_rating_app(RatingSettings(**common("rating"), account_url=account))))
        accounting = stack.enter_context(serve(create_accounting_app(AccountingSettings(**common("accounting"),
                                                                                        account_url=account))))
        disclosure = stack.enter_context(serve(create_disclosure_app(DisclosureSettings(
            **common("disclosure"), account_url=account, rating_url=rating))))
        clients = Services(*(stack.enter_context(httpx.Client(base_url=url, timeout=30))
                             for url in (account, accounting, rating, disclosure)))
        registered = clients.account.post("/v1/enterprises", headers=OPERATOR, json={
            "uscc": ENTERPRISE, "name": "Sichuan Example Cement Co.", "industry": "C3011", "region": "510100"})
        assert registered.status_code == 201, registered.text
        yield clients


def assert_invalid(response: httpx.Response, *fields: str) -> None:
    """A 422 problem naming exactly ``fields``."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in response.json()["errors"]} == set(fields), response.text


def test_error_answers_are_documented_as_problem_json(services: Services) -> None:
    """Each document declared FastAPI's default 422 (``application/json`` HTTPValidationError, not what is
    served) and no 401, 403, 404, 409 or 413 at all, so every refusal broke the document."""
    for client in (services.account, services.accounting, services.rating, services.disclosure):
        document = client.get("/openapi.json").json()
        assert "HTTPValidationError" not in document["components"]["schemas"]
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                if not path.startswith("/v1/"):
                    continue
                for status, answer in operation["responses"].items():
                    if int(status) >= 400:
                        assert list(answer["content"]) == ["application/problem+json"], (method, path, status)
                if path != "/v1/methodology":  # public
                    assert {"401", "403", "422"} <= operation["responses"].keys(), (method, path)
    register = services.account.get("/openapi.json").json()["paths"]["/v1/enterprises"]["post"]["responses"]
    assert {"400", "409", "413"} <= register.keys()
    assert register["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/ValidationProblem")
    assert register["403"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/ForbiddenProblem")


def test_numbers_beyond_the_database_columns_are_422_not_500(services: Services) -> None:
    """``GET /v1/events?after=2**63`` (and the other cursors), ``from_version=2**31`` on PostgreSQL and an
    ``expected_version`` of 2**63 reached the database driver, which cannot bind them: 500."""
    assert_invalid(services.account.get("/v1/events", params={"after": BEYOND_BIGINT}, headers=OPERATOR), "after")
    for version in (BEYOND_INTEGER, BEYOND_BIGINT):
        assert_invalid(services.account.get(f"/v1/enterprises/{ENTERPRISE}/events",
                                            params={"from_version": version}, headers=OWNER), "from_version")
        append = services.account.post(f"/v1/enterprises/{ENTERPRISE}/events", headers=OWNER, json={
            "expected_version": version, "events": [{"type": "ActivityReported", "data": {
                "period": "2024", "revenue_10k_cny": "1", "output": {"quantity": "1", "unit": "t"}}}]})
        assert_invalid(append, "expected_version")
    assert_invalid(services.rating.get(f"/v1/access-log/{ENTERPRISE}", params={"after": BEYOND_BIGINT},
                                       headers=OWNER), "after")
    for path in ("/v1/subscriptions/any/deliveries", "/v1/feeds/any"):
        assert_invalid(services.disclosure.get(path, params={"after": BEYOND_BIGINT}, headers=PARTNER), "after")
    # The largest bigint itself is an ordinary, empty page.
    last = services.account.get("/v1/events", params={"after": BEYOND_BIGINT - 1}, headers=OPERATOR)
    assert last.status_code == 200 and last.json()["events"] == []


def test_times_that_overflow_in_utc_are_422_not_500(services: Services) -> None:
    """``9999-12-31T23:59:59-14:00`` is a valid RFC 3339 time past the last one Python holds in UTC: the
    conversion raised OverflowError, a 500, for a consent's ``expires_at`` and for ``as_of``."""
    for moment in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        consent = services.account.post(f"/v1/enterprises/{ENTERPRISE}/consents", headers=OWNER, json={
            "grantee": "bank-a", "scopes": ["rating:read"], "purpose": "loan review", "expires_at": moment})
        assert_invalid(consent, "expires_at")
        assert_invalid(services.rating.get(f"/v1/ratings/{ENTERPRISE}", params={"as_of": moment}, headers=OWNER),
                       "as_of")


def test_an_unparseable_callback_url_is_422_not_500(services: Services) -> None:
    """``https://[::1/hook`` (an unclosed IPv6 bracket) made ``urlsplit`` raise ValueError: 500."""
    response = services.disclosure.post("/v1/subscriptions", headers=PARTNER, json={
        "callback_url": "https://[::1/hook", "event_types": ["EmissionVerified"]})
    assert_invalid(response, "callback_url")


def test_accounting_refuses_what_it_cannot_fingerprint(services: Services) -> None:
    """The request is fingerprinted (RFC 8785) before the domain reads it: an integer beyond ±(2**53 - 1)
    anywhere in ``activities`` or ``parameters``, or nesting deeper than the serialiser's limit, was a 500."""
    calculation = {"enterprise_id": ENTERPRISE, "period": "2024", "activities": [
        {"category": "purchased_electricity", "quantity": "10", "unit": "MWh", "grid": "510000", "year": 2**64}]}
    assert_invalid(services.accounting.post("/v1/calculations", headers=OWNER, json=calculation), "activities[0]")
    nested: Any = "x"
    for _ in range(300):
        nested = [nested]
    calculation["activities"] = [{"category": "purchased_heat", "quantity": "1", "unit": "GJ", "note": nested}]
    assert_invalid(services.accounting.post("/v1/calculations", headers=OWNER, json=calculation), "activities[0]")
    benefit = {"enterprise_id": ENTERPRISE, "project_id": "pv-1", "project_type": "renewable_power", "period": "2024",
               "parameters": {"annual_generation_mwh": "10", "grid": "510000", "year": 2**64}}
    assert_invalid(services.accounting.post("/v1/benefits", headers=OWNER, json=benefit), "parameters.year")


def test_control_characters_in_identifiers_are_422_not_500(services: Services) -> None:
    """PostgreSQL text cannot hold NUL: an identifier with ``%00`` in a path, query or body reached the
    driver and failed with DataError, a 500 (SQLite merely found nothing)."""
    checks = [
        (services.account.get("/v1/enterprises/%00/events", headers=OWNER), "enterprise_id"),
        (services.account.delete(f"/v1/enterprises/{ENTERPRISE}/consents/%00", headers=OWNER), "consent_id"),
        (services.accounting.get("/v1/calculations/%00", headers=OWNER), "calculation_id"),
        (services.rating.get("/v1/ratings/%00", headers=REGULATOR), "enterprise_id"),
        (services.rating.get("/v1/decisions/%00", headers=REGULATOR), "decision_id"),
        (services.rating.post("/v1/rediscount/claims", headers=REGULATOR, json={"decision_id": "\x00"}),
         "decision_id"),
        (services.rating.post(f"/v1/access-log/{ENTERPRISE}", headers=auth("service", "disclosure"),
                              json={"party": "bank\x00", "role": "bank", "what": "rating"}), "party"),
        (services.disclosure.get("/v1/subscriptions/%00", headers=PARTNER), "subscription_id"),
        (services.disclosure.get("/v1/feeds/%00", headers=PARTNER), "subscription_id"),
        (services.disclosure.get("/v1/disclosures/%00/2024", headers=REGULATOR), "enterprise_id"),
    ]
    for response, field in checks:
        assert_invalid(response, field)
