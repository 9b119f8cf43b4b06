"""The accounting service over real HTTP, recording on a live account service (SPEC §5, §6 "accounting").

The accounting database runs on SQLite and on PostgreSQL (the `database_url` fixture); the account
service beside it keeps its own SQLite file.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from carbon.auth import mint_token
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC, VERIFIER_USCC
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app
from services.accounting.settings import AccountingSettings
from tests.live import free_port, serve

SECRET = "test-secret-for-the-accounting-api-suite"
CEMENT = CEMENT_MAKER_USCC
POWER = POWER_PLANT_USCC
UNREGISTERED = VERIFIER_USCC  # a valid USCC the account has not registered


def token(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub=sub, role=role)}"}


OPERATOR = token("operator", "ops")


class Stack:
    def __init__(self, accounting: str, account: str) -> None:
        self.http = httpx.Client(base_url=accounting, timeout=30)
        self.account = httpx.Client(base_url=account, timeout=30)

    def calculate(self, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.http.post("/v1/calculations", json=body, headers=headers or token("enterprise", body["enterprise_id"]))

    def benefits(self, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.http.post("/v1/benefits", json=body, headers=headers or token("enterprise", body["enterprise_id"]))

    def stream(self, enterprise: str) -> list[dict]:
        response = self.account.get(f"/v1/enterprises/{enterprise}/events", params={"limit": 1000},
                                    headers=token("enterprise", enterprise))
        assert response.status_code == 200, response.text
        return response.json()["events"]


@pytest.fixture
def account_url(tmp_path):
    app = create_account_app(AccountSettings(database_url=f"sqlite:///{tmp_path / 'account.db'}", jwt_secret=SECRET))
    with serve(app) as base_url:
        for uscc, industry in ((CEMENT, "C3011"), (POWER, "D4411")):
            registered = httpx.post(f"{base_url}/v1/enterprises", headers=OPERATOR, json={
                "uscc": uscc, "name": "Sichuan example", "industry": industry, "region": "510100"})
            assert registered.status_code == 201, registered.text
        yield base_url


@pytest.fixture
def stack(database_url: str, account_url: str):
    app = create_app(AccountingSettings(database_url=database_url, jwt_secret=SECRET, account_url=account_url))
    with serve(app) as base_url:
        client = Stack(base_url, account_url)
        yield client
        client.http.close()
        client.account.close()


def cement_year(**extra) -> dict:
    """The cement maker's year (SPEC §8 step 2): coal, natural gas, process CO2, Sichuan electricity."""
    return {
        "enterprise_id": CEMENT,
        "period": "2024",
        "industry": "C3011",
        "revenue_10k_cny": "60000",
        "activities": [
            {"category": "fuel_combustion", "fuel": "raw_coal", "quantity": "140000", "unit": "t",
             "ncv": "21.0", "carbon_content": "0.0262", "oxidation_rate": "0.95"},
            {"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "10", "unit": "10^4 Nm3"},
            {"category": "process", "process": "cement_clinker", "quantity": "1000000", "unit": "t"},
            {"category": "purchased_electricity", "quantity": "100000", "unit": "MWh", "grid": "510000", "year": 2022},
        ],
        **extra,
    }


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    if reason is not None:
        assert body["reason"] == reason
    return body


# ---- factors --------------------------------------------------------------------------------------

def test_factors_are_open_to_any_authenticated_role_and_filterable(stack: Stack) -> None:
    everything = stack.http.get("/v1/factors", headers=token("bank", "bank-a"))
    assert everything.status_code == 200
    body = everything.json()
    assert body["catalogue_version"] and body["next"] is None and len(body["factors"]) > 50
    assert all(f["source"]["standard"] and f["citation"] for f in body["factors"])
    gas = stack.http.get("/v1/factors", params={"kind": "fuel", "fuel": "natural_gas"}, headers=token("partner", "p")).json()
    assert [f["values"] for f in gas["factors"]] == [{"ncv": "389.31", "carbon_content": "0.0153", "oxidation_rate": "0.99"}]
    sichuan = stack.http.get("/v1/factors", params={"kind": "grid", "region": "510100", "year": 2022}, headers=OPERATOR).json()
    assert [(f["region"], f["values"]["value"]) for f in sichuan["factors"]] == [("510000", "0.1404")]
    ar4 = stack.http.get("/v1/factors", params={"kind": "gwp", "edition": "AR4", "gas": "CH4"}, headers=OPERATOR).json()
    assert [f["values"]["value"] for f in ar4["factors"]] == ["25"]
    bad = stack.http.get("/v1/factors", params={"kind": "magic", "edition": "nope"}, headers=OPERATOR)
    assert {e["field"] for e in assert_problem(bad, 422)["errors"]} == {"kind", "edition"}
    assert_problem(stack.http.get("/v1/factors"), 401)


# ---- calculations ---------------------------------------------------------------------------------

def test_calculation_result_has_the_specified_shape(stack: Stack) -> None:
    response = stack.calculate(cement_year())
    assert response.status_code == 200, response.text
    result = response.json()
    assert uuid.UUID(result["calculation_id"]) and result["recorded"] is False
    assert {"calculation_id", "lines", "total_tco2e", "by_scope", "by_gas", "warnings"} <= result.keys()
    coal, gas, clinker, power = result["lines"]
    assert set(coal["factor"]) >= {"ncv", "ncv_unit", "carbon_content", "carbon_content_unit", "oxidation_rate", "source"}
    assert (gas["factor"]["ncv"], gas["factor"]["carbon_content"], gas["factor"]["oxidation_rate"]) == ("389.31", "0.0153", "0.99")
    assert coal["factor"]["measured"] == ["ncv", "carbon_content", "oxidation_rate"]
    assert {power["factor"]["value"], power["factor"]["unit"]} == {"0.1404", "tCO2/MWh"}
    assert "MEE & NBS" in power["factor"]["source"]
    assert all(isinstance(line["tco2e"], str) and line["formula"].startswith(("E =", "R =")) for line in result["lines"])
    # Hand-worked: coal 140 000 × 21.0 × 0.0262 × 0.95 × 44/12; gas 10 × 389.31 × 0.0153 × 0.99 × 44/12;
    # clinker 1 000 000 × 0.52; electricity 100 000 × 0.1404.
    coal_t = Decimal(140000) * Decimal("21.0") * Decimal("0.0262") * Decimal("0.95") * 44 / 12
    gas_t = Decimal(10) * Decimal("389.31") * Decimal("0.0153") * Decimal("0.99") * 44 / 12
    total = coal_t + gas_t + Decimal(520000) + Decimal(14040)
    assert result["total_tco2e"] == format(total.quantize(Decimal("0.000001")), "f")
    assert result["by_scope"] == {"1": format((total - 14040).quantize(Decimal("0.000001")), "f"), "2": "14040.000000"}
    assert result["by_gas"] == {"CO2": result["total_tco2e"]}
    assert [w["code"] for w in result["warnings"]] == ["grid_factor_year"]  # 2022 factor for a 2024 period
    assert result["data_quality"] == 3  # natural gas at default parameters


def test_record_true_twice_records_once(stack: Stack) -> None:
    body = cement_year(record=True, calculation_id="cement-2024-v1")
    first = stack.calculate(body)
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] is True and first.json()["record"]["events"] == 3
    again = stack.calculate(body)
    operator_replay = stack.calculate(body, headers=OPERATOR)
    assert again.json() == first.json() == operator_replay.json()
    recorded = [e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded"]
    assert len(recorded) == 3  # one per (scope, category, gas): fuel_combustion, process, purchased_electricity
    assert {e["data"]["calculation_id"] for e in recorded} == {"cement-2024-v1"}
    assert {e["metadata"]["idempotency_key"] for e in recorded} == {"calculation:cement-2024-v1"}
    assert {e["metadata"]["actor"]["sub"] for e in recorded} == {"accounting"}
    assert sum(Decimal(e["data"]["tco2e"]) for e in recorded) == Decimal(first.json()["total_tco2e"])
    # The same id with different content is refused, and nothing more is recorded.
    changed = stack.calculate({**body, "revenue_10k_cny": "1"})
    assert_problem(changed, 409)
    assert len([e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded"]) == 3


def test_compute_first_then_record_the_same_calculation(stack: Stack) -> None:
    computed = stack.calculate(cement_year(calculation_id="two-step")).json()
    assert computed["recorded"] is False and not [e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded"]
    recorded = stack.calculate(cement_year(calculation_id="two-step", record=True)).json()
    assert recorded["recorded"] is True and recorded["lines"] == computed["lines"]
    stored = stack.http.get("/v1/calculations/two-step", headers=token("enterprise", CEMENT))
    assert stored.status_code == 200 and stored.json() == recorded
    assert_problem(stack.http.get("/v1/calculations/two-step", headers=token("enterprise", POWER)), 403, "not_owner")
    assert_problem(stack.http.get("/v1/calculations/nope", headers=OPERATOR), 404)


def test_year_on_year_jump_lowers_the_recorded_data_quality(stack: Stack) -> None:
    small = cement_year(period="2023", record=True, activities=cement_year()["activities"][2:3])  # clinker only
    assert stack.calculate(small).status_code == 200
    result = stack.calculate(cement_year(record=True)).json()
    codes = [w["code"] for w in result["warnings"]]
    assert "year_on_year_jump" in codes and result["data_quality"] == 2
    latest = [e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded" and e["data"]["period"] == "2024"]
    assert {e["data"]["data_quality"] for e in latest} == {2}


@pytest.mark.parametrize(
    ("activity", "field", "hint"),
    [
        ({"category": "fuel_combustion", "fuel": "unobtainium", "quantity": "1", "unit": "t"}, "activities[1].fuel", "natural_gas"),
        ({"category": "fuel_combustion", "fuel": "diesel", "quantity": "1", "unit": "MWh", "x": 1}, "activities[1].x", "unknown"),
        ({"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "1", "unit": "m3"}, "activities[1].unit", "Nm3"),
        ({"category": "fuel_combustion", "fuel": "diesel", "quantity": "1", "unit": "kWh/t"}, "activities[1].unit", "t"),
        ({"category": "fuel_combustion", "fuel": "diesel", "quantity": "-3", "unit": "t"}, "activities[1].quantity", "negative"),
        ({"category": "fuel_combustion", "fuel": "diesel", "quantity": 3.5, "unit": "t"}, "activities[1].quantity", "string"),
        ({"category": "purchased_electricity", "quantity": "1", "unit": "MWh", "grid": "510000", "year": 2019},
         "activities[1].year", "2022"),
        ({"category": "purchased_electricity", "quantity": "1", "unit": "MWh", "grid": "atlantis", "year": 2022},
         "activities[1].grid", "national"),
        ({"category": "purchased_electricity", "quantity": "1", "unit": "GJ/t", "grid": "national", "year": 2022},
         "activities[1].unit", "MWh"),
        ({"category": "process", "process": "alchemy", "quantity": "1", "unit": "t"}, "activities[1].process", "cement_clinker"),
        ({"category": "fugitive", "species": "HFC-999", "quantity": "1", "unit": "kg"}, "activities[1].species", "HFC-134a"),
        ({"category": "levitation", "quantity": "1", "unit": "t"}, "activities[1].category", "fuel_combustion"),
        ({"category": "fuel_combustion", "fuel": "diesel", "quantity": "1", "unit": "t", "oxidation_rate": "98"},
         "activities[1].oxidation_rate", "fraction"),
    ],
    ids=["unknown-fuel", "unknown-field", "actual-m3", "bad-unit", "negative", "float", "no-factor-year",
         "unknown-grid", "electricity-unit", "unknown-process", "unknown-species", "unknown-category", "percent-not-fraction"],
)
def test_bad_input_names_the_field(stack: Stack, activity: dict, field: str, hint: str) -> None:
    good = {"category": "fuel_combustion", "fuel": "diesel", "quantity": "1", "unit": "t"}
    body = {"enterprise_id": CEMENT, "period": "2024", "activities": [good, activity], "record": True}
    errors = assert_problem(stack.calculate(body), 422)["errors"]
    assert [e["field"] for e in errors] == [field]
    assert hint in errors[0]["message"]
    assert not [e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded"]


def test_bad_request_fields(stack: Stack) -> None:
    body = cement_year(period="2024-13", gwp="AR6", factor_edition="made-up", enterprise_id=CEMENT[:-1] + "0")
    errors = assert_problem(stack.calculate(body, headers=OPERATOR), 422)["errors"]
    assert {"period", "enterprise_id"} <= {e["field"] for e in errors}
    errors = assert_problem(stack.calculate(cement_year(gwp="AR6")), 422)["errors"]
    assert errors[0]["field"] == "gwp" and "AR4" in errors[0]["message"]
    errors = assert_problem(stack.calculate(cement_year(factor_edition="made-up")), 422)["errors"]
    assert errors[0]["field"] == "factor_edition" and "mee-ets" in errors[0]["message"]
    assert_problem(stack.calculate(cement_year(activities=[])), 422)


def test_who_may_calculate(stack: Stack) -> None:
    assert_problem(stack.http.post("/v1/calculations", json=cement_year()), 401)
    assert_problem(stack.http.post("/v1/calculations", json=cement_year(), headers={"Authorization": "Bearer nope"}), 401)
    assert_problem(stack.calculate(cement_year(), headers=token("enterprise", POWER)), 403, "not_owner")
    for role in ("bank", "verifier", "regulator", "partner", "registry", "service"):
        assert_problem(stack.calculate(cement_year(record=True), headers=token(role, "someone")), 403, "wrong_role")
    assert_problem(stack.benefits(pv_project(), headers=token("bank", "bank-a")), 403, "wrong_role")
    assert stack.calculate(cement_year(), headers=OPERATOR).status_code == 200
    assert not [e for e in stack.stream(CEMENT) if e["type"] == "EmissionRecorded"]


def test_unregistered_enterprise_is_not_found_when_recording(stack: Stack) -> None:
    assert_problem(stack.calculate(cement_year(enterprise_id=UNREGISTERED, record=True)), 404)


def test_reused_id_refused_by_the_account_is_a_conflict(database_url: str, account_url: str, tmp_path, stack: Stack) -> None:
    assert stack.calculate(cement_year(record=True, calculation_id="shared-id")).status_code == 200
    # A second accounting deployment (its own, empty database) reuses the id for other figures: the account
    # answers 422 on the Idempotency-Key, which is a conflict for the caller.
    other = create_app(AccountingSettings(database_url=f"sqlite:///{tmp_path / 'other.db'}", jwt_secret=SECRET,
                                          account_url=account_url))
    with serve(other) as base_url:
        response = httpx.post(f"{base_url}/v1/calculations", json=cement_year(record=True, calculation_id="shared-id",
                                                                              revenue_10k_cny="1"),
                              headers=token("enterprise", CEMENT), timeout=30)
    assert_problem(response, 409)


def test_account_unavailable_is_503_and_a_retry_records(database_url: str, tmp_path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    app = create_app(AccountingSettings(database_url=database_url, jwt_secret=SECRET, account_url=down,
                                        account_timeout=2))
    with serve(app) as base_url:
        response = httpx.post(f"{base_url}/v1/calculations", json=cement_year(record=True, calculation_id="retry-me"),
                              headers=token("enterprise", CEMENT), timeout=30)
        problem = assert_problem(response, 503)
        assert "retry" in problem["detail"]
        stored = httpx.get(f"{base_url}/v1/calculations/retry-me", headers=OPERATOR, timeout=30).json()
        assert stored["recorded"] is False


# ---- benefits -------------------------------------------------------------------------------------

def pv_project(**extra) -> dict:
    return {"enterprise_id": POWER, "project_id": "pv-leshan-1", "project_type": "renewable_power", "period": "2024",
            "parameters": {"annual_generation_mwh": "10000", "grid": "510000", "year": 2022}, **extra}


def test_benefits_record_one_reduction(stack: Stack) -> None:
    body = pv_project(record=True, calculation_id="pv-2024")
    first = stack.benefits(body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert (result["baseline_tco2e"], result["project_tco2e"], result["reduction_tco2e"]) == (
        "1404.000000", "0.000000", "1404.000000")  # 10 000 MWh × 0.1404 tCO2/MWh
    assert result["benefits"]["standard_coal_saved_t"]["unit"] == "tce"
    assert "grid_average" in result["baseline_method"]
    assert stack.benefits(body).json() == result
    reductions = [e for e in stack.stream(POWER) if e["type"] == "ReductionRecorded"]
    assert len(reductions) == 1
    data = reductions[0]["data"]
    assert (data["project_id"], data["reduction_tco2e"]) == ("pv-leshan-1", "1404.000000")
    assert data["benefits"]["standard_coal_saved_t"] == result["benefits"]["standard_coal_saved_t"]["value"]
    assert reductions[0]["metadata"]["idempotency_key"] == "calculation:pv-2024"


def test_benefit_types_and_bad_parameters(stack: Stack) -> None:
    retrofit = stack.benefits({**pv_project(), "project_type": "energy_efficiency_retrofit", "parameters": {
        "grid": "national", "year": 2022,
        "baseline_energy": [{"carrier": "electricity", "quantity": "1000", "unit": "MWh"}],
        "project_energy": [{"carrier": "electricity", "quantity": "800", "unit": "MWh"}]}})
    assert retrofit.status_code == 200 and retrofit.json()["reduction_tco2e"] == "107.320000"  # 200 MWh × 0.5366
    switch = stack.benefits({**pv_project(), "project_type": "coal_to_gas", "parameters": {
        "coal_quantity": "1000", "gas_quantity": "50", "coal_sulphur_content": "0.01"}})
    assert switch.status_code == 200 and switch.json()["benefits"]["so2_reduced_t"]["value"] == "15.980000"
    bad = stack.benefits({**pv_project(), "parameters": {"annual_generation_mwh": "-1", "grid": "510000", "year": 2022}})
    assert [e["field"] for e in assert_problem(bad, 422)["errors"]] == ["parameters.annual_generation_mwh"]
    unknown_type = stack.benefits({**pv_project(), "project_type": "perpetual_motion"})
    assert [e["field"] for e in assert_problem(unknown_type, 422)["errors"]] == ["project_type"]


def test_health_and_openapi(stack: Stack) -> None:
    assert stack.http.get("/readyz").status_code == 200
    paths = stack.http.get("/openapi.json").json()["paths"]
    assert {"/v1/factors", "/v1/calculations", "/v1/benefits"} <= paths.keys()
