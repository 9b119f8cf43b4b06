"""Every HTTP API fuzzed against its own OpenAPI document, as each kind of caller (SPEC §5, §6).

The four services run together on real ports (store transport, one JWT secret) with a little seeded
data, so generated requests reach real enterprises, consents, subscriptions, deliveries, decisions and
calculations as well as the refusals. Each service's schema is loaded from its live ``/openapi.json``
and every operation is exercised with schemathesis — the documented examples, then generated valid
and invalid requests — as the enterprise itself, a consented bank, the regulator, the operator, a
platform service and a subscribed partner. Every answer must be no server error, conform to the
documented status codes, content types and response schemas and, when it is an error, be
problem+json as SPEC §5 describes.

The default run (SQLite, a few examples per operation and caller) is sized for ``make test``;
``make fuzz`` sets ``CARBON_FUZZ_DEEP=1``: more examples, the coverage phase (boundary and
type-mutated values), stateful sequences along the links inferred between operations, and the
services on PostgreSQL as well. ``CARBON_FUZZ_EXAMPLES`` and ``CARBON_FUZZ_SEED`` override.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from carbon.auth import mint_token
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC, VERIFIER_USCC
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app as create_accounting_app
from services.accounting.settings import AccountingSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.callbacks import CallbackRefused
from services.disclosure.settings import DisclosureSettings
from services.rating.api import create_app as create_rating_app
from services.rating.settings import RatingSettings
from tests.contract.test_rating_stack import activity, emission, emission_verified, reduction, reduction_verified
from tests.live import serve

pytestmark = [
    pytest.mark.slow,
    # Raised from inside schemathesis' own strategies, not from anything here.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

DEEP = os.environ.get("CARBON_FUZZ_DEEP", "") not in ("", "0", "false")
EXAMPLES = int(os.environ.get("CARBON_FUZZ_EXAMPLES", "60" if DEEP else "15"))
SEED = int(os.environ.get("CARBON_FUZZ_SEED", "20240601"))
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)] if DEEP else ["sqlite"]

SECRET = "fuzz-suite-secret-long-enough-for-hs256-keys"
ENTERPRISE, OTHER = CEMENT_MAKER_USCC, POWER_PLANT_USCC
BANK, PARTNER, REGULATOR = "bank-a", "tianfu-credit", "pboc-chengdu"
PROJECT = "waste-heat-power-1"
CALLBACK_HOST = "partner.example.com"
# A public address for the partner's host while seeding; never contacted (see Resolver).
PUBLIC_ADDRESS = "93.184.215.14"

SERVICES = ("account", "accounting", "rating", "disclosure")
# role and token subject of each caller; the service caller is the one each service trusts for its
# service-only writes (the account takes accounting's records, the rating log takes disclosure's reads).
CALLERS = {
    "owner": ("enterprise", ENTERPRISE),
    "bank": ("bank", BANK),
    "regulator": ("regulator", REGULATOR),
    "operator": ("operator", "ops"),
    "service": ("service", None),
    "partner": ("partner", PARTNER),
}
SERVICE_SUB = {"account": "accounting", "accounting": "accounting", "rating": "disclosure", "disclosure": "disclosure"}
RUNS = [(service, caller) for service in SERVICES for caller in CALLERS]

# (base URL, operation, status) of every answer, to check the fuzzing got past the refusals.
ANSWERS: Counter[tuple[str, str, int]] = Counter()
FINISHED: set[tuple[str, str, str]] = set()


def bearer(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role, ttl=timedelta(hours=6))}"}


class Resolver:
    """Resolves the partner's host while the seed subscribes, and nothing afterwards: every delivery
    attempt re-resolves and fails, so nothing leaves the machine and the deliveries dead-letter."""

    def __init__(self) -> None:
        self.open = True

    def __call__(self, host: str, port: int) -> list[str]:
        if self.open and host == CALLBACK_HOST:
            return [PUBLIC_ADDRESS]
        raise CallbackRefused(f"the host {host!r} cannot be resolved")


@dataclass
class Platform:
    backend: str
    urls: dict[str, str]
    apps: dict[str, Any]
    # Identifiers that exist, per path parameter. DELETE operations get spares of their own, so a fuzzed
    # revocation or deletion never takes away what the other operations read.
    known: dict[str, list[Any]] = field(default_factory=dict)
    known_for_delete: dict[str, list[Any]] = field(default_factory=dict)


def _wait(predicate, what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _seed(platform: Platform, resolver: Resolver) -> None:
    """Two enterprises, consents for a bank, a partner and a verifier, a year of recorded and verified
    data, two subscriptions with a queued delivery, an eligibility decision and a calculation."""
    with httpx.Client(timeout=30) as http:
        def call(method: str, service: str, path: str, role: str, sub: str, expect: int = 201, **kwargs) -> Any:
            response = http.request(method, platform.urls[service] + path, headers=bearer(role, sub), **kwargs)
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
            return response.json()

        for uscc, industry in ((ENTERPRISE, "C3011"), (OTHER, "D4411")):
            call("POST", "account", "/v1/enterprises", "operator", "ops",
                 json={"uscc": uscc, "name": "Sichuan Example Co.", "industry": industry, "region": "510100"})
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()

        def grant(grantee: str, scopes: list[str]) -> str:
            body = {"grantee": grantee, "scopes": scopes, "purpose": "loan review", "expires_at": expires}
            return call("POST", "account", f"/v1/enterprises/{ENTERPRISE}/consents", "enterprise", ENTERPRISE,
                        json=body)["consent_id"]

        grant(BANK, ["rating:read", "pricing:read", "disclosure:read", "account:read"])
        grant(PARTNER, ["events:subscribe", "disclosure:read"])
        grant(VERIFIER_USCC, ["account:verify"])
        spare_consent = grant("bank-b", ["rating:read"])
        events = [activity("2023"), activity("2024"), emission("2023", "900000", calc="c-2023"),
                  emission("2024", "812345.5", calc="c-2024"), reduction(PROJECT, "2024", "50000", "20000")]
        call("POST", "account", f"/v1/enterprises/{ENTERPRISE}/events", "enterprise", ENTERPRISE,
             json={"expected_version": None, "events": events})

        # Subscribed before any verification exists, so nothing is queued while the host still resolves.
        subscription = {"callback_url": f"https://{CALLBACK_HOST}/carbon", "event_types": ["EmissionVerified"]}
        subscription_id, spare_subscription = (
            call("POST", "disclosure", "/v1/subscriptions", "partner", PARTNER, json=subscription)["subscription_id"]
            for _ in range(2))
        resolver.open = False
        verified = call("POST", "account", f"/v1/enterprises/{ENTERPRISE}/events", "verifier", VERIFIER_USCC,
                        json={"expected_version": None, "events": [
                            emission_verified("2024", "810000", VERIFIER_USCC),
                            reduction_verified(PROJECT, "2024", "30000", VERIFIER_USCC)]})

        # The read models follow the account asynchronously.
        for name in ("rating", "disclosure"):
            projector = platform.apps[name].state.projector
            _wait(lambda: (projector.position() or -1) >= verified["positions"][-1], f"the {name} projection")
        deliveries = _wait(lambda: call("GET", "disclosure", f"/v1/subscriptions/{subscription_id}/deliveries",
                                        "partner", PARTNER, expect=200)["deliveries"], "a queued delivery")
        decision_id = call("POST", "rating", "/v1/rediscount/eligibility", "regulator", REGULATOR, expect=200, json={
            "issuer_id": ENTERPRISE,
            "bills": [{"bill_no": "B-1", "amount_cny": "1000000", "maturity": "2099-01-01", "project_id": PROJECT}],
        })["decision_id"]
        calculation_id = call("POST", "accounting", "/v1/calculations", "enterprise", ENTERPRISE, expect=200, json={
            "enterprise_id": ENTERPRISE, "period": "2024",
            "activities": [{"category": "purchased_electricity", "quantity": "1000", "unit": "MWh",
                            "grid": "510000", "year": 2022}],
        })["calculation_id"]

    platform.known = {
        "enterprise_id": [ENTERPRISE, OTHER], "year": [2023, 2024], "subscription_id": [subscription_id],
        "delivery_id": [deliveries[0]["delivery_id"]], "decision_id": [decision_id],
        "calculation_id": [calculation_id],
    }
    platform.known_for_delete = {**platform.known, "consent_id": [spare_consent],
                                 "subscription_id": [spare_subscription]}


@pytest.fixture(scope="module", params=BACKENDS)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("fuzz")
    resolver = Resolver()
    with ExitStack() as stack:
        def settings(name: str) -> dict[str, Any]:
            if request.param == "sqlite":
                url = f"sqlite:///{tmp / f'{name}.db'}"
            else:
                from tests import infra

                url = stack.enter_context(infra.fresh_database(request.getfixturevalue("postgres_server")))
            return {"database_url": url, "jwt_secret": SECRET, "data_dir": tmp, "transport": "store",
                    "webhook_allow_private": False}

        apps: dict[str, Any] = {"account": create_account_app(AccountSettings(**settings("account")))}
        urls = {"account": stack.enter_context(serve(apps["account"]))}
        apps["rating"] = create_rating_app(RatingSettings(**settings("rating"), account_url=urls["account"]))
        urls["rating"] = stack.enter_context(serve(apps["rating"]))
        apps["accounting"] = create_accounting_app(AccountingSettings(**settings("accounting"),
                                                                      account_url=urls["account"]))
        urls["accounting"] = stack.enter_context(serve(apps["accounting"]))
        apps["disclosure"] = create_disclosure_app(DisclosureSettings(
            **settings("disclosure"), account_url=urls["account"], rating_url=urls["rating"],
            webhook_max_attempts=2, webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.1,
            webhook_poll_interval_s=0.05), resolve=resolver)
        urls["disclosure"] = stack.enter_context(serve(apps["disclosure"]))
        platform = Platform(request.param, urls, apps)
        _seed(platform, resolver)
        yield platform


# ---- what every answer must satisfy --------------------------------------------------------------

@schemathesis.check
def errors_are_problem_details(ctx, response, case) -> bool | None:
    """SPEC §5: every error is problem+json with type, title, status and detail; a 403 names its
    reason, a 422 lists its errors as {field, message}."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.split(";")[0].strip() == "application/problem+json", (
        f"a {response.status_code} answer is {content_type!r}, not application/problem+json")
    body = response.json()
    assert isinstance(body, dict), "a problem is a JSON object"
    missing = {"type", "title", "status", "detail"} - body.keys()
    assert not missing, f"the problem lacks {sorted(missing)}"
    assert body["status"] == response.status_code, f"the problem says {body['status']}, the answer {response.status_code}"
    if response.status_code == 403:
        assert isinstance(body.get("reason"), str) and body["reason"], "a 403 problem names its reason"
    if response.status_code == 422:
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, "a 422 problem lists its errors"
        for error in errors:
            assert isinstance(error, dict) and isinstance(error.get("field"), str) \
                and isinstance(error.get("message"), str), f"a 422 error is {{field, message}}, not {error!r}"
    return True


CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_are_problem_details,
]


# ---- one schema per (service, caller) -----------------------------------------------------------

def _steer(platform: Platform):
    """Half the generated path parameters become identifiers that exist, so each operation's own code
    runs as well as its refusals."""

    def flatmap_path_parameters(context, path_parameters: dict[str, Any]):
        if not path_parameters:
            return st.just(path_parameters)
        known = platform.known_for_delete if context.operation.method.upper() == "DELETE" else platform.known
        existing = {name: st.sampled_from(known[name]) if name in known else st.just(value)
                    for name, value in path_parameters.items()}
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries(existing))

    return flatmap_path_parameters


def load_schema(platform: Platform, service: str, caller: str):
    role, sub = CALLERS[caller]
    base_url = platform.urls[service]
    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "headers": bearer(role, sub or SERVICE_SUB[service]),
        "request-timeout": 60,
        "cache": {"enabled": False},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"examples": {"enabled": True}, "fuzzing": {"enabled": True},
                   "coverage": {"enabled": DEEP}, "stateful": {"enabled": DEEP}},
    })
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    schema.hooks.register_hook_with_name(_steer(platform), "flatmap_path_parameters")
    return schema


@pytest.fixture(params=RUNS, ids=[f"{s}-as-{c}" for s, c in RUNS])
def api_schema(request: pytest.FixtureRequest, platform: Platform):
    # schemathesis' fixture loader still reads the node id attribute that pytest 9.2 renamed.
    request.node._nodeid = request.node.nodeid
    service, caller = request.param
    request.addfinalizer(lambda: FINISHED.add((platform.backend, service, caller)))
    return load_schema(platform, service, caller)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_answers_as_documented(case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    ANSWERS[(case.operation.base_url, case.operation.label, response.status_code)] += 1


def test_fuzzing_got_past_the_refusals(platform: Platform) -> None:
    """Guards the seed: every read operation answered 2xx to some caller, so fuzzing ran its real code."""
    # Judged over the services fuzzed as every caller in this process (all of them in a full run).
    complete = [s for s in SERVICES if all((platform.backend, s, c) in FINISHED for s2, c in RUNS if s2 == s)]
    assert complete, "no service was fuzzed as every caller before this check"
    for service in complete:
        base_url = platform.urls[service]
        reads = {op for (url, op, _) in ANSWERS if url == base_url and op.startswith("GET ")}
        succeeded = {op for (url, op, status) in ANSWERS if url == base_url and 200 <= status < 300}
        assert reads <= succeeded, f"{service}: no 2xx answer from {sorted(reads - succeeded)}"


# Stateful sequences are the deep run's (`make fuzz`); the bounded run in `make test` does not collect them.
@pytest.mark.parametrize(("service", "caller"), [pytest.param(s, c, id=f"{s}-as-{c}") for s, c in RUNS])
def test_sequences_of_operations_answer_as_documented(platform: Platform, service: str, caller: str) -> None:
    """Chains operations along the links schemathesis infers (a created subscription read, listed,
    deleted; a calculation read back …), checking every answer as above."""
    base = load_schema(platform, service, caller).as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(settings=hypothesis.settings(max_examples=max(EXAMPLES // 3, 5), stateful_step_count=6,
                                             derandomize=True, deadline=None, database=None,
                                             suppress_health_check=list(hypothesis.HealthCheck)))


if not DEEP:  # not collected at all outside `make fuzz` (rather than reported as skipped)
    del test_sequences_of_operations_answer_as_documented
