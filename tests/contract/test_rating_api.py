"""The rating service over real HTTP beside a live account service (SPEC §5, §6 "rating", §8 steps 5, 7, 8).

The rating database runs on SQLite and on PostgreSQL; each test waits (bounded) for the projection.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from carbon.cli import app as cli
from contracts.envelope import format_time
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC
from services.rating.schema import ratings
from tests.contract.test_rating_stack import (
    SECRET,
    VERIFIER,
    Stack,
    acquired,
    activity,
    emission,
    emission_verified,
    headers,
    rating_stack,
    reduction,
    reduction_verified,
    retired,
)

CEMENT, POWER = CEMENT_MAKER_USCC, POWER_PLANT_USCC
YEAR = datetime.now(UTC).year - 1  # the latest complete calendar year
PREV = YEAR - 1


@pytest.fixture
def stack(database_url: str, tmp_path):
    with rating_stack(database_url, tmp_path) as running:
        yield running


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    if reason is not None:
        assert body["reason"] == reason, body
    return body


def cement(stack: Stack, *, verify: bool = True) -> None:
    """A cement maker: 0.45 t/t in YEAR (verified 0.44), 0.48 t/t the year before."""
    stack.register(CEMENT, "C3011")
    stack.grant(CEMENT, VERIFIER, ["account:verify"], timedelta(days=400))
    stack.append(CEMENT, [activity(str(PREV)), emission(str(PREV), "480000"),
                          activity(str(YEAR)), emission(str(YEAR), "450000")])
    if verify:
        stack.append(CEMENT, [emission_verified(str(YEAR), "440000")], role="verifier", sub=VERIFIER)


def power_plant(stack: Stack) -> None:
    """A thermal power plant with a verified solar project: rated BBB, account current."""
    stack.register(POWER, "D4411")
    stack.grant(POWER, VERIFIER, ["account:verify"], timedelta(days=400))
    stack.append(POWER, [
        activity(str(PREV), "200000", "5000000", "MWh"), emission(str(PREV), "4200000"),
        activity(str(YEAR), "200000", "5000000", "MWh"), emission(str(YEAR), "3900000"),
        reduction("pv-1", str(YEAR), "50000", "0"), reduction("wind-2", str(YEAR), "9000", "1000"),
    ])
    stack.append(POWER, [emission_verified(str(YEAR), "3900000"), reduction_verified("pv-1", str(YEAR), "48000")],
                 role="verifier", sub=VERIFIER)


def comparable(answer: dict) -> dict:
    """An answer without what differs between two reads of the same knowledge."""
    return {k: v for k, v in answer.items() if k not in ("decision_id", "as_of")}


# ---- ratings ------------------------------------------------------------------------------------

def test_a_registered_account_without_data_is_not_rated_and_says_what_is_missing(stack: Stack) -> None:
    stack.register(CEMENT)
    stack.sync()
    body = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT).json()
    assert body["status"] == "not_rated" and body["grade"] is None and body["score"] is None
    assert [m["code"] for m in body["missing"]] == ["emissions"]
    assert body["decision_id"] and body["methodology_version"] == "1.0"
    assert_problem(stack.get(f"/v1/ratings/{POWER}", "regulator", "pbc-chengdu"), 404)


def test_the_rating_explains_each_factor_and_as_of_answers_from_past_knowledge(stack: Stack) -> None:
    cement(stack, verify=False)
    stack.sync()
    before = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT).json()
    assert before["status"] == "rated" and before["period"] == str(YEAR)
    factors = {f["name"]: f for f in before["factors"]}
    assert list(factors) == ["carbon_efficiency", "trend", "data_quality", "neutralisation", "verified_reductions"]
    assert factors["carbon_efficiency"]["value"] == "0.450000" and factors["carbon_efficiency"]["detail"]["ratio"] == "0.7500"
    assert factors["data_quality"]["value"] == "2"  # reported, unverified
    assert before["score"] == sum(f["points"] for f in factors.values()) == 36 + 15 + 14
    assert before["grade"] == "BBB"
    assert all(f["explanation"] for f in factors.values())
    moment = stack.clock()

    stack.append(CEMENT, [emission_verified(str(YEAR), "440000")], role="verifier", sub=VERIFIER)
    stack.sync()
    after = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT).json()
    assert after["grade"] == "A" and after["score"] == 36 + 15 + 20
    assert after["position"] > before["position"]
    then = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT, as_of=format_time(moment)).json()
    assert comparable(then) == comparable(before) and then["as_of"] == format_time(moment)
    by_date = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT, as_of=(moment - timedelta(days=1)).date().isoformat())
    assert by_date.json()["missing"][0]["code"] == "account"  # the account did not exist yet

    # A later correction makes the verification stale today, but never rewrites the past answer.
    verified_moment = stack.clock()
    log = stack.account.get(f"/v1/enterprises/{CEMENT}/events", params={"limit": 1000},
                            headers=headers("enterprise", CEMENT)).json()["events"]
    line = next(e for e in log if e["type"] == "EmissionRecorded" and e["data"]["period"] == str(YEAR))
    stack.append(CEMENT, [emission(str(YEAR), "470000", supersedes=line["event_id"])])
    stack.sync()
    corrected = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT).json()
    quality = next(f for f in corrected["factors"] if f["name"] == "data_quality")
    assert quality["detail"]["stale_verification"] is True and quality["value"] == "2"
    past = stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT, as_of=format_time(verified_moment)).json()
    assert comparable(past) == comparable(after)
    history = stack.get(f"/v1/ratings/{CEMENT}/history", "enterprise", CEMENT).json()
    assert [h["grade"] for h in history["ratings"]][-3:] == ["BBB", "A", corrected["grade"]]
    assert [h["position"] for h in history["ratings"]] == sorted(h["position"] for h in history["ratings"])


def test_bad_as_of_and_unknown_product_are_422(stack: Stack) -> None:
    stack.register(CEMENT)
    stack.sync()
    problem = assert_problem(stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT, as_of="yesterday"), 422)
    assert problem["errors"][0]["field"] == "as_of"
    assert_problem(stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT, as_of="2025-01-01T00:00:00"), 422)
    problem = assert_problem(stack.get(f"/v1/pricing/{CEMENT}", "enterprise", CEMENT, product="mortgage"), 422)
    assert problem["errors"][0]["field"] == "product"
    assert_problem(stack.rating.get(f"/v1/ratings/{CEMENT}"), 401)


# ---- the consent matrix -------------------------------------------------------------------------

READS = [  # (path, params, scope that opens it to a bank or partner)
    ("/v1/ratings/{id}", {}, "rating:read"),
    ("/v1/ratings/{id}/history", {}, "rating:read"),
    ("/v1/pricing/{id}", {"product": "bill_discount"}, "pricing:read"),
]


def test_consent_matrix_over_http(stack: Stack) -> None:
    cement(stack)
    stack.register(POWER, "D4411")
    stack.sync()

    def status(role: str, sub: str) -> list[tuple[int, str | None]]:
        out = []
        for path, params, _ in READS:
            response = stack.get(path.format(id=CEMENT), role, sub, **params)
            out.append((response.status_code, response.json().get("reason")))
        return out

    ok = [(200, None)] * 3
    # The enterprise itself; another enterprise; roles that never read ratings.
    assert status("enterprise", CEMENT) == ok
    assert status("enterprise", POWER) == [(403, "not_owner")] * 3
    for role in ("verifier", "registry", "operator", "service"):
        assert status(role, "someone") == [(403, "wrong_role")] * 3, role
    # The regulator: supervisory rating reads, no pricing.
    assert status("regulator", "pbc-chengdu") == [(200, None), (200, None), (403, "wrong_role")]

    for role in ("bank", "partner"):
        sub = f"{role}-a"
        assert status(role, sub) == [(403, "no_consent")] * 3
        rating_only = stack.grant(CEMENT, sub, ["rating:read"])
        stack.sync()
        assert status(role, sub) == [(200, None), (200, None), (403, "scope_missing")]
        stack.revoke(CEMENT, rating_only)
        stack.sync()
        assert status(role, sub) == [(403, "consent_revoked"), (403, "consent_revoked"), (403, "no_consent")]
        both = stack.grant(CEMENT, sub, ["rating:read", "pricing:read"], timedelta(days=2))
        stack.sync()
        assert status(role, sub) == ok
        stack.clock.advance(timedelta(days=3))
        try:
            assert status(role, sub) == [(403, "consent_expired")] * 3
        finally:
            stack.clock.advance(timedelta(days=-3))
        stack.revoke(CEMENT, both)
        stack.sync()
        assert status(role, sub) == [(403, "consent_revoked")] * 3
        # Consent is per grantee: another bank's grant opens nothing for this one.
    stack.grant(CEMENT, "bank-b", ["rating:read", "pricing:read"])
    stack.sync()
    assert status("bank", "bank-c") == [(403, "no_consent")] * 3
    assert status("bank", "bank-b") == ok


def test_pricing_follows_the_grade_and_the_table(stack: Stack) -> None:
    cement(stack)
    stack.grant(CEMENT, "bank-a", ["rating:read", "pricing:read"])
    stack.sync()
    bill = stack.get(f"/v1/pricing/{CEMENT}", "bank", "bank-a", product="bill_discount").json()
    assert (bill["grade"], bill["tier"], bill["adjustment_bp"]) == ("A", "T3", -130)
    assert datetime.fromisoformat(bill["valid_until"]) > datetime.now(UTC) + timedelta(days=29)
    loan = stack.get(f"/v1/pricing/{CEMENT}", "bank", "bank-a", product="loan").json()
    assert (loan["tier"], loan["adjustment_bp"]) == ("T3", -15)
    stack.register(POWER, "D4411")
    stack.sync()
    unrated = stack.get(f"/v1/pricing/{POWER}", "enterprise", POWER, product="bill_discount").json()
    assert unrated["grade"] is None and unrated["adjustment_bp"] == 0 and unrated["status"] == "not_rated"


# ---- decisions and the access log -----------------------------------------------------------------

def test_every_answer_is_kept_under_its_decision_id(stack: Stack) -> None:
    cement(stack)
    stack.grant(CEMENT, "bank-a", ["rating:read", "pricing:read"])
    stack.sync()
    answer = stack.get(f"/v1/pricing/{CEMENT}", "bank", "bank-a", product="loan")
    decision_id = answer.json()["decision_id"]
    for role, sub in (("bank", "bank-a"), ("enterprise", CEMENT), ("regulator", "pbc-chengdu")):
        kept = stack.get(f"/v1/decisions/{decision_id}", role, sub)
        assert kept.status_code == 200 and kept.content == answer.content
    assert_problem(stack.get(f"/v1/decisions/{decision_id}", "bank", "bank-b"), 403, "wrong_role")
    assert_problem(stack.get(f"/v1/decisions/{decision_id}", "enterprise", POWER), 403, "not_owner")
    assert_problem(stack.get("/v1/decisions/00000000-0000-0000-0000-000000000000", "regulator", "pbc"), 404)


def test_access_log_lists_every_third_party_read(stack: Stack) -> None:
    cement(stack)
    consent = stack.grant(CEMENT, "bank-a", ["rating:read", "pricing:read"])
    stack.sync()
    assert stack.get(f"/v1/ratings/{CEMENT}", "enterprise", CEMENT).status_code == 200  # its own: not logged
    rating = stack.get(f"/v1/ratings/{CEMENT}", "bank", "bank-a").json()
    stack.get(f"/v1/pricing/{CEMENT}", "bank", "bank-a", product="bill_discount")
    stack.get(f"/v1/ratings/{CEMENT}", "regulator", "pbc-chengdu")
    assert stack.get(f"/v1/ratings/{CEMENT}", "bank", "bank-b").status_code == 403  # refused: nothing was read
    reported = stack.post(f"/v1/access-log/{CEMENT}", {"party": "partner-tf", "role": "partner",
                                                      "what": f"disclosure {YEAR}", "consent_id": "c-1",
                                                      "supervisory": False}, "service", "disclosure")
    assert reported.status_code == 201, reported.text

    reads = stack.get(f"/v1/access-log/{CEMENT}", "enterprise", CEMENT).json()["reads"]
    assert [(r["party"], r["role"], r["what"], r["consent_id"], r["supervisory"]) for r in reads] == [
        ("bank-a", "bank", "rating", consent, False),
        ("bank-a", "bank", "pricing (bill_discount)", consent, False),
        ("pbc-chengdu", "regulator", "rating", None, True),
        ("partner-tf", "partner", f"disclosure {YEAR}", "c-1", False),
    ]
    assert reads[0]["decision_id"] == rating["decision_id"]
    assert all(datetime.fromisoformat(r["at"]).tzinfo is not None for r in reads)
    page = stack.get(f"/v1/access-log/{CEMENT}", "enterprise", CEMENT, limit=3).json()
    assert len(page["reads"]) == 3 and page["next"] is not None
    rest = stack.get(f"/v1/access-log/{CEMENT}", "enterprise", CEMENT, after=page["next"]).json()
    assert len(rest["reads"]) == 1 and rest["next"] is None

    assert_problem(stack.get(f"/v1/access-log/{CEMENT}", "enterprise", POWER), 403, "not_owner")
    assert_problem(stack.get(f"/v1/access-log/{CEMENT}", "bank", "bank-a"), 403, "wrong_role")
    assert_problem(stack.get(f"/v1/access-log/{CEMENT}", "regulator", "pbc-chengdu"), 403, "wrong_role")
    entry = {"party": "x", "role": "bank", "what": "y", "consent_id": None, "supervisory": False}
    assert_problem(stack.post(f"/v1/access-log/{CEMENT}", entry, "service", "accounting"), 403, "wrong_role")
    assert_problem(stack.post(f"/v1/access-log/{CEMENT}", entry, "bank", "bank-a"), 403, "wrong_role")
    assert_problem(stack.post(f"/v1/access-log/{CEMENT}", {**entry, "role": "king"}, "service", "disclosure"), 422)


# ---- re-discount eligibility and claims -----------------------------------------------------------

def bills(*specs: tuple[str, str | None, int]) -> list[dict]:
    today = datetime.now(UTC).date()
    return [{"bill_no": no, "amount_cny": "1000000", "maturity": (today + timedelta(days=days)).isoformat(),
             "project_id": project} for no, project, days in specs]


def test_eligibility_gives_reasons_and_a_claim_reserves_the_tonnes_once(stack: Stack) -> None:
    power_plant(stack)
    stack.sync()
    rating = stack.get(f"/v1/ratings/{POWER}", "enterprise", POWER).json()
    assert rating["grade"] == "BBB", rating

    check = stack.post("/v1/rediscount/eligibility", {"issuer_id": POWER, "bills": bills(("B-1", "pv-1", 90))},
                       "regulator", "pbc-chengdu")
    assert check.status_code == 200, check.text
    answer = check.json()
    assert answer["eligible"] is True and answer["grade"] == "BBB"
    assert [(r["code"], r["met"]) for r in answer["reasons"]] == [
        ("grade_threshold", True), ("account_current", True), ("bill_unmatured", True),
        ("reduction_recorded", True), ("reduction_verified", True), ("reduction_unclaimed", True)]
    assert answer["estimated_reduction_tco2e"] == "48000" and answer["rediscount_rate"] == "0.020"

    # Each condition unmet: a matured bill, no project, a recorded but unverified project.
    mixed = stack.post("/v1/rediscount/eligibility", {"issuer_id": POWER, "bills": bills(
        ("B-2", "pv-1", 0), ("B-3", None, 90), ("B-4", "wind-2", 90), ("B-5", "hydro-9", 90))},
        "regulator", "pbc-chengdu").json()
    unmet = {(r.get("bill_no"), r["code"]) for r in mixed["reasons"] if not r["met"]}
    assert mixed["eligible"] is False
    assert unmet == {("B-2", "bill_unmatured"), ("B-3", "reduction_recorded"), ("B-4", "reduction_verified"),
                     ("B-4", "reduction_unclaimed"), ("B-5", "reduction_recorded"), ("B-5", "reduction_verified"),
                     ("B-5", "reduction_unclaimed")}
    not_eligible = stack.post("/v1/rediscount/claims", {"decision_id": mixed["decision_id"]}, "regulator", "pbc-chengdu")
    assert assert_problem(not_eligible, 422)["errors"][0]["field"] == "decision_id"

    claim = stack.post("/v1/rediscount/claims", {"decision_id": answer["decision_id"]}, "regulator", "pbc-chengdu")
    assert claim.status_code == 201, claim.text
    assert claim.json()["claim_id"] and claim.json()["reserved_tco2e"] == "48000"
    assert_problem(stack.post("/v1/rediscount/claims", {"decision_id": answer["decision_id"]}, "regulator", "pbc"), 409)
    again = stack.post("/v1/rediscount/eligibility", {"issuer_id": POWER, "bills": bills(("B-6", "pv-1", 90))},
                       "regulator", "pbc-chengdu").json()
    assert again["eligible"] is False
    assert {r["code"]: r["met"] for r in again["reasons"]}["reduction_unclaimed"] is False

    # Who may ask: a bank with rating:read pre-checks; claims are the regulator's.
    body = {"issuer_id": POWER, "bills": bills(("B-7", "pv-1", 90))}
    assert_problem(stack.post("/v1/rediscount/eligibility", body, "bank", "bank-a"), 403, "no_consent")
    stack.grant(POWER, "bank-a", ["rating:read"])
    stack.sync()
    pre_check = stack.post("/v1/rediscount/eligibility", body, "bank", "bank-a")
    assert pre_check.status_code == 200
    refused = stack.post("/v1/rediscount/claims", {"decision_id": pre_check.json()["decision_id"]}, "regulator", "pbc")
    assert "pre-check" in assert_problem(refused, 422)["errors"][0]["message"]
    assert_problem(stack.post("/v1/rediscount/eligibility", body, "enterprise", POWER), 403, "wrong_role")
    assert_problem(stack.post("/v1/rediscount/claims", {"decision_id": again["decision_id"]}, "bank", "bank-a"),
                   403, "wrong_role")
    assert_problem(stack.post("/v1/rediscount/eligibility", {**body, "issuer_id": CEMENT}, "regulator", "pbc"), 404)
    reads = stack.get(f"/v1/access-log/{POWER}", "enterprise", POWER).json()["reads"]
    assert {(r["role"], r["what"], r["supervisory"]) for r in reads} == {
        ("regulator", "re-discount eligibility", True), ("bank", "re-discount eligibility", False)}


def test_eligibility_validates_the_request(stack: Stack) -> None:
    power_plant(stack)
    stack.sync()
    bad = {"issuer_id": POWER, "bills": [{"bill_no": "B-1", "amount_cny": "0", "maturity": "not-a-date"},
                                         {"bill_no": "B-1", "amount_cny": "5", "maturity": "2030-01-01"}]}
    problem = assert_problem(stack.post("/v1/rediscount/eligibility", bad, "regulator", "pbc"), 422)
    assert {"bills[0].amount_cny", "bills[0].maturity"} <= {e["field"] for e in problem["errors"]}
    empty = assert_problem(stack.post("/v1/rediscount/eligibility", {"issuer_id": POWER, "bills": []}, "regulator", "pbc"), 422)
    assert empty["errors"][0]["field"] == "bills"


def test_concurrent_claims_on_the_same_tonnes_reserve_them_once(stack: Stack) -> None:
    power_plant(stack)
    stack.sync()
    decisions = [stack.post("/v1/rediscount/eligibility", {"issuer_id": POWER, "bills": bills((f"B-{i}", "pv-1", 90))},
                            "regulator", "pbc-chengdu").json()["decision_id"] for i in range(6)]
    barrier = threading.Barrier(len(decisions))
    statuses: list[int] = []

    def claim(decision_id: str) -> None:
        with httpx.Client(base_url=str(stack.rating.base_url), timeout=60) as http:
            barrier.wait()
            statuses.append(http.post("/v1/rediscount/claims", json={"decision_id": decision_id},
                                      headers=headers("regulator", "pbc-chengdu")).status_code)

    threads = [threading.Thread(target=claim, args=(d,)) for d in decisions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [201] + [409] * (len(decisions) - 1)


# ---- replay ------------------------------------------------------------------------------------

def test_a_replayed_projection_gives_identical_ratings(stack: Stack, database_url: str, monkeypatch) -> None:
    cement(stack, verify=False)
    stack.append(CEMENT, [emission_verified(str(YEAR), "440000")], role="verifier", sub=VERIFIER)
    stack.append(CEMENT, [acquired("B-1", "10000")], role="registry", sub="sc-exchange")
    stack.append(CEMENT, [retired("B-1", "5000", str(YEAR))], role="registry", sub="sc-exchange")
    stack.grant(CEMENT, "bank-a", ["rating:read"])
    power_plant(stack)
    stack.sync()
    engine = stack.app.state.projector.engine

    def snapshot() -> list[tuple]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(ratings).order_by(ratings.c.enterprise_id, ratings.c.seq))]

    before = snapshot()
    assert len(before) >= 6
    stack.app.state.projector.stop()  # the rebuild replaces the read model: stop following first
    monkeypatch.setenv("CARBON_ACCOUNT_URL", str(stack.account.base_url).rstrip("/"))
    monkeypatch.setenv("CARBON_JWT_SECRET", SECRET)
    result = CliRunner().invoke(cli, ["replay", "rating", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "rating rebuilt" in result.output
    assert snapshot() == before
    # In processes of their own, each paging one partition of the log over HTTP: the same ratings.
    result = CliRunner().invoke(cli, ["replay", "rating", "--database-url", database_url, "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert "in 2 processes" in result.output and "rating rebuilt" in result.output
    assert snapshot() == before
    reread = json.loads(before[-1][-1])
    assert reread["methodology_version"] == "1.0"


def test_methodology_is_published(stack: Stack) -> None:
    body = stack.rating.get("/v1/methodology").json()
    assert body["version"] == "1.0"
    assert [b["grade"] for b in body["grade_bands"]] == ["AAA", "AA", "A", "BBB", "BB", "B", "CCC", "CC", "C"]
    assert sum(f["max_points"] for f in body["factors"]) == 100
    assert [b["rule"] for b in body["factors"][0]["bands"]] == ["K ≤ 0.6", "K ≤ 0.8", "K ≤ 1.2", "K ≤ 2.0", "otherwise"]
    assert body["rediscount"]["rediscount_rate"] == "0.020"
    assert all(b["sources"] for b in body["benchmarks"]["benchmarks"])
    assert stack.rating.get("/readyz").status_code == 200
