"""The accounting calculators, hand-worked from the published parameters (SPEC §6 "accounting").

Each expected value is computed here from the catalogue's table values written out, so that a reader
can check the arithmetic against the cited table without running anything.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon.errors import Invalid
from contracts import parse_event
from services.accounting import domain
from services.accounting.catalogue import default_catalogue
from services.accounting.domain import CalculationRequest, Output, Previous, present

CAT = default_catalogue()
D = Decimal


def calc(*activities: dict, organisation: str = "industrial", gwp: str = "AR5", edition: str = "mee-nbs"):
    return domain.calculate(CAT, CalculationRequest(organisation, list(activities), gwp, edition))  # type: ignore[arg-type]


def fuel(name: str, quantity: str, unit: str, **measured: str) -> dict:
    return {"category": "fuel_combustion", "fuel": name, "quantity": quantity, "unit": unit, **measured}


def electricity(quantity: str, unit: str = "MWh", grid: str = "510000", year: int = 2022) -> dict:
    return {"category": "purchased_electricity", "quantity": quantity, "unit": unit, "grid": grid, "year": year}


def only_line(result) -> domain.Line:
    assert len(result.lines) == 1
    return result.lines[0]


def invalid_fields(call) -> dict[str, str]:
    with pytest.raises(Invalid) as caught:
        call()
    return {e["field"]: e["message"] for e in caught.value.errors}


# ---- GB/T 32150-2015 fuel combustion: E = AD × NCV × CC × OF × 44/12 -------------------------------

def test_natural_gas_from_table_a1() -> None:
    # Table A.1, natural gas: NCV 389.31 GJ/10^4 Nm3, CC 15.3 tC/TJ = 0.0153 tC/GJ, OF 99 %.
    # 10 × 389.31 = 3893.1 GJ; × 0.0153 = 59.56443 tC; × 0.99 = 58.9687857 tC; × 44/12 = 216.2188809 tCO2.
    line = only_line(calc(fuel("natural_gas", "10", "10^4 Nm3")))
    expected = D("10") * D("389.31") * D("0.0153") * D("0.99") * 44 / 12
    assert present(expected) == "216.218881"
    assert line.tco2e == expected and present(line.tco2e) == "216.218881"
    assert (line.scope, line.gas.value, line.category) == (1, "CO2", "fuel_combustion")
    assert line.factor["ncv"] == "389.31" and line.factor["ncv_unit"] == "GJ/10^4 Nm3"
    assert line.factor["carbon_content"] == "0.0153" and line.factor["carbon_content_unit"] == "tC/GJ"
    assert line.factor["oxidation_rate"] == "0.99"
    assert "GB/T 32150-2015" in line.factor["source"] and "Table A.1" in line.factor["source"]
    assert line.formula.startswith("E = AD × NCV × CC × OF × 44/12 = 10 [10^4 Nm3] × 389.31")


@pytest.mark.parametrize(
    ("name", "ncv", "cc", "of"),
    [
        # Table A.1 rows: NCV GJ/t, CC tC/GJ (table: 10^-3 tC/GJ), OF.
        ("diesel", "42.652", "0.0202", "0.98"),
        ("gasoline", "43.070", "0.0189", "0.98"),
        ("fuel_oil", "41.816", "0.0211", "0.98"),
        ("lpg", "50.179", "0.0172", "0.98"),
        ("kerosene", "43.070", "0.0196", "0.98"),
        ("crude_oil", "41.816", "0.0201", "0.98"),
        ("coke", "28.435", "0.0295", "0.93"),
        ("raw_coal", "20.908", "0.02637", "0.94"),
    ],
)
def test_solid_and_liquid_fuels_per_tonne(name: str, ncv: str, cc: str, of: str) -> None:
    # 100 t of fuel: E = 100 × NCV × CC × OF × 44/12.
    line = only_line(calc(fuel(name, "100", "t")))
    assert line.tco2e == D(100) * D(ncv) * D(cc) * D(of) * 44 / 12


def test_diesel_worked_out() -> None:
    # 100 t × 42.652 GJ/t = 4265.2 GJ; × 0.0202 = 86.15704 tC; × 0.98 = 84.4338992 tC; × 44/12 = 309.590964 t.
    assert present(only_line(calc(fuel("diesel", "100", "t"))).tco2e) == "309.590964"


def test_measured_parameters_override_the_defaults() -> None:
    # Measured raw coal: NCV 21.5 GJ/t, CC 0.0265 tC/GJ; OF keeps the default 0.94.
    # 1000 × 21.5 = 21500 GJ; × 0.0265 = 569.75 tC; × 0.94 = 535.565 tC; × 44/12 = 1963.738333 t.
    line = only_line(calc(fuel("raw_coal", "1000", "t", ncv="21.5", carbon_content="0.0265")))
    assert present(line.tco2e) == "1963.738333"
    assert line.factor["measured"] == ["ncv", "carbon_content"]
    assert line.factor["ncv"] == "21.5" and line.factor["oxidation_rate"] == "0.94"
    all_measured = only_line(calc(fuel("raw_coal", "1000", "t", ncv="21.5", carbon_content="0.0265",
                                       oxidation_rate="0.98")))
    assert all_measured.tco2e == D(1000) * D("21.5") * D("0.0265") * D("0.98") * 44 / 12
    assert not all_measured.uncertain_ids and not all_measured.default_parameters


def test_activity_given_as_heat_needs_no_ncv() -> None:
    # 3893.1 GJ of natural gas is the same as 10 × 10^4 Nm3 at the default NCV.
    by_heat = only_line(calc(fuel("natural_gas", "3893.1", "GJ")))
    by_volume = only_line(calc(fuel("natural_gas", "10", "10^4 Nm3")))
    assert by_heat.tco2e == by_volume.tco2e and by_heat.factor["ncv"] is None


# ---- purchased electricity and heat ------------------------------------------------------------------

def test_purchased_electricity_at_the_sichuan_2022_factor() -> None:
    # MEE/NBS 2022 provincial average, Sichuan (510000): 0.1404 tCO2/MWh. 1000 MWh × 0.1404 = 140.4 t.
    line = only_line(calc(electricity("1000")))
    assert present(line.tco2e) == "140.400000" and line.scope == 2
    assert line.factor == {**line.factor, "value": "0.1404", "unit": "tCO2/MWh", "region": "510000", "year": 2022}
    assert "2022" in line.factor["source"]
    # A Chengdu (510100) address takes its province's factor.
    assert only_line(calc(electricity("1000", grid="510100"))).tco2e == line.tco2e


def test_national_factor_and_the_two_editions() -> None:
    # 800 000 kWh = 800 MWh. MEE/NBS 2022 national 0.5366 → 429.28 t; MEE reporting notice 0.5703 → 456.24 t.
    nbs = only_line(calc(electricity("800000", "kWh", "national")))
    ets = only_line(calc(electricity("800000", "kWh", "national"), edition="mee-ets"))
    assert present(nbs.tco2e) == "429.280000" and present(ets.tco2e) == "456.240000"
    assert nbs.factor["edition"] == "mee-nbs" and ets.factor["edition"] == "mee-ets"
    # 2021 national average (announcement No. 12 of 2024): 0.5568.
    assert only_line(calc(electricity("1", grid="national", year=2021))).tco2e == D("0.5568")


def test_purchased_heat_default_and_supplier_factor() -> None:
    # 500 GJ × 0.11 tCO2/GJ = 55 t; with a supplier factor of 0.095: 47.5 t.
    assert present(only_line(calc({"category": "purchased_heat", "quantity": "500", "unit": "GJ"})).tco2e) == "55.000000"
    supplier = only_line(calc({"category": "purchased_heat", "quantity": "0.5", "unit": "TJ", "factor": "0.095"}))
    assert supplier.tco2e == D("47.5") and supplier.factor["source"].startswith("supplier")


# ---- process emissions -----------------------------------------------------------------------------

def test_cement_clinker_default_and_oxide_method() -> None:
    # Default (IPCC 2006 Tier 1): 1000 t × 0.52 = 520 t.
    assert only_line(calc({"category": "process", "process": "cement_clinker", "quantity": "1000", "unit": "t"})).tco2e == 520
    # Oxide method (cement guideline): EF = (0.65 − 0) × 44/56 + (0.02 − 0) × 44/40 = 0.5107142857 + 0.022.
    line = only_line(calc({"category": "process", "process": "cement_clinker", "quantity": "1000", "unit": "t",
                           "cao_content": "0.65", "mgo_content": "0.02"}))
    assert present(line.tco2e) == "532.714286"
    assert line.tco2e == D(1000) * (D("0.65") * 44 / 56 + D("0.02") * 44 / 40)


def test_flat_glass_batch_carbonates() -> None:
    # IPCC 2006 Vol. 3 Table 2.1: soda ash 0.41492, limestone 0.43971 tCO2/t; limestone 98 % calcined.
    # 100 t soda ash → 41.492 t; 200 t limestone × 0.43971 × 0.98 = 86.18316 t.
    result = calc({"category": "process", "process": "soda_ash_use", "quantity": "100", "unit": "t"},
                  {"category": "process", "process": "limestone_calcination", "quantity": "200000", "unit": "kg",
                   "calcination_fraction": "0.98"})
    assert [line.tco2e for line in result.lines] == [D("41.492"), D("200") * D("0.43971") * D("0.98")]
    assert present(result.total) == "127.675160"


def test_lime_production() -> None:
    # IPCC 2006 Vol. 3 Table 2.4, high-calcium lime 0.75 tCO2/t: 400 t → 300 t.
    assert only_line(calc({"category": "process", "process": "lime_high_calcium", "quantity": "400", "unit": "t"})).tco2e == 300


# ---- the seven gases -------------------------------------------------------------------------------

@pytest.mark.parametrize(("species", "gas", "ar5", "ar4"),
                         [("SF6", "SF6", "23500", "22800"), ("NF3", "NF3", "16100", "17200"),
                          ("HFC-134a", "HFCs", "1300", "1430"), ("CF4", "PFCs", "6630", "7390"),
                          ("CH4", "CH4", "28", "25"), ("N2O", "N2O", "265", "298")])
def test_fugitive_releases_by_gwp_edition(species: str, gas: str, ar5: str, ar4: str) -> None:
    # 5 kg = 0.005 t released; tCO2e = 0.005 × GWP (AR5 WG1 Table 8.A.1; AR4 WG1 Table 2.14).
    activity = {"category": "fugitive", "species": species, "quantity": "5", "unit": "kg"}
    assert only_line(calc(activity)).tco2e == D("0.005") * D(ar5)
    line = only_line(calc(activity, gwp="AR4"))
    assert line.tco2e == D("0.005") * D(ar4) and line.gas.value == gas and line.factor["factor_id"] == f"gwp/AR4/{species}"


def test_non_industrial_office_and_fleet_after_ipcc_2006() -> None:
    # A bank branch: 20 000 Nm3 of natural gas in its boilers, 5 t of gasoline in its cars, 800 MWh purchased.
    result = calc({"category": "stationary_combustion", "fuel": "natural_gas", "quantity": "20000", "unit": "Nm3"},
                  {"category": "mobile_combustion", "fuel": "gasoline", "quantity": "5", "unit": "t"},
                  electricity("800", grid="national"), organisation="non_industrial")
    gas_heat = D(2) * D("389.31")  # 778.62 GJ at the GB/T 32150 NCV
    car_heat = D(5) * D("43.070")  # 215.35 GJ
    expected = {
        # IPCC 2006 Vol. 2 Table 2.4 (commercial/institutional), kg/TJ: CO2 56100, CH4 5, N2O 0.1.
        ("stationary_combustion", "CO2"): gas_heat * 56100 / 10**6,
        ("stationary_combustion", "CH4"): gas_heat * 5 / 10**6 * 28,
        ("stationary_combustion", "N2O"): gas_heat * D("0.1") / 10**6 * 265,
        # Tables 3.2.1/3.2.2, uncontrolled gasoline vehicles, kg/TJ: CO2 69300, CH4 33, N2O 3.2.
        ("mobile_combustion", "CO2"): car_heat * 69300 / 10**6,
        ("mobile_combustion", "CH4"): car_heat * 33 / 10**6 * 28,
        ("mobile_combustion", "N2O"): car_heat * D("3.2") / 10**6 * 265,
        ("purchased_electricity", "CO2"): D(800) * D("0.5366"),
    }
    assert {(line.category, line.gas.value): line.tco2e for line in result.lines} == expected
    assert present(expected[("stationary_combustion", "CO2")]) == "43.680582"
    assert present(expected[("mobile_combustion", "N2O")]) == "0.182617"
    assert result.by("scope") == {"1": present(sum(v for (c, _), v in expected.items() if c != "purchased_electricity")),
                                  "2": "429.280000"}
    assert set(result.by("gas")) == {"CO2", "CH4", "N2O"}


def test_non_industrial_measured_ncv_and_refused_carbon_content() -> None:
    # A measured NCV of 360 GJ/10^4 Nm3: CO2 = 2 × 360 × 56100 / 10^6 = 40.392 t.
    result = calc({"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "2", "unit": "10^4 Nm3",
                   "ncv": "360"}, organisation="non_industrial")
    assert result.lines[0].tco2e == D("40.392") and result.lines[0].factor["measured"] == ["ncv"]
    errors = invalid_fields(lambda: calc(fuel("natural_gas", "2", "10^4 Nm3", carbon_content="0.0153"),
                                         organisation="non_industrial"))
    assert set(errors) == {"activities[0].carbon_content"}
    errors = invalid_fields(lambda: calc({"category": "mobile_combustion", "fuel": "diesel", "quantity": "1", "unit": "t",
                                          "technology": "warp_drive"}, organisation="non_industrial"))
    assert "uncontrolled" in errors["activities[0].technology"]


# ---- deductions and totals -------------------------------------------------------------------------

def test_recovery_and_exports_are_deducted_from_the_total() -> None:
    # R = Q × PUR × 19.77 = 1 × 0.99 × 19.77 = 19.5723 t; exported heat 100 GJ × 0.11 = 11 t.
    result = calc(fuel("natural_gas", "10", "10^4 Nm3"),
                  {"category": "co2_recovery", "quantity": "10000", "unit": "Nm3", "purity": "0.99"},
                  {"category": "exported_heat", "quantity": "100", "unit": "GJ"})
    gas = D("10") * D("389.31") * D("0.0153") * D("0.99") * 44 / 12
    assert result.gross == gas and result.deductions == D("19.5723") + 11
    assert result.total == gas - D("19.5723") - 11
    assert result.by("category")["co2_recovery"] == "-19.572300"


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_activities_name_their_fields() -> None:
    errors = invalid_fields(lambda: calc(
        fuel("unobtainium", "1", "t"),
        fuel("diesel", "-1", "t"),
        electricity("1", unit="t"),
        electricity("1", year=2019),
        electricity("1", grid="990000"),
        fuel("natural_gas", "1", "m3"),
        fuel("diesel", "1", "t", oxidation_rate="98"),
        {"category": "teleportation", "quantity": "1", "unit": "t"},
        fuel("diesel", "1", "t", carbon_content="20.2"),
    ))
    assert set(errors) == {"activities[0].fuel", "activities[1].quantity", "activities[2].unit", "activities[3].year",
                           "activities[4].grid", "activities[5].unit", "activities[6].oxidation_rate",
                           "activities[7].category", "activities[8].carbon_content"}
    assert "natural_gas" in errors["activities[0].fuel"]  # the accepted values are listed
    assert "2022" in errors["activities[3].year"]
    assert "Nm3" in errors["activities[5].unit"]


def test_categories_follow_the_organisation() -> None:
    errors = invalid_fields(lambda: calc({"category": "mobile_combustion", "fuel": "diesel", "quantity": "1", "unit": "t"}))
    assert "industrial" in errors["activities[0].category"]
    errors = invalid_fields(lambda: calc({"category": "co2_recovery", "quantity": "1", "unit": "t"},
                                         organisation="non_industrial"))
    assert set(errors) == {"activities[0].category"}


# ---- properties ------------------------------------------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False)
FUELS = CAT.fuels()
TOLERANCE = D("1e-12")


def tonnes(fuel_name: str, quantity: Decimal, unit: str | None = None) -> Decimal:
    unit = unit or CAT.fuel(fuel_name).units["activity"]
    return only_line(calc(fuel(fuel_name, str(quantity), unit))).tco2e


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FUELS), quantities, quantities)
def test_fuel_emissions_are_linear_in_activity_data(fuel_name: str, a: Decimal, b: Decimal) -> None:
    assert abs(tonnes(fuel_name, a + b) - (tonnes(fuel_name, a) + tonnes(fuel_name, b))) < TOLERANCE
    assert abs(tonnes(fuel_name, a * 2) - 2 * tonnes(fuel_name, a)) < TOLERANCE


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FUELS), quantities)
def test_emissions_are_never_negative(fuel_name: str, quantity: Decimal) -> None:
    result = calc(fuel(fuel_name, str(quantity), CAT.fuel(fuel_name).units["activity"]), electricity(str(quantity)),
                  {"category": "purchased_heat", "quantity": str(quantity), "unit": "GJ"})
    assert all(line.tco2e >= 0 for line in result.lines) and result.total >= 0


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([f for f in FUELS if CAT.fuel(f).units["activity"] == "t"]), quantities)
def test_unit_invariance_mass(fuel_name: str, quantity: Decimal) -> None:
    # 1000 kg == 1 t.
    assert abs(tonnes(fuel_name, quantity, "t") - tonnes(fuel_name, quantity * 1000, "kg")) < TOLERANCE


@settings(max_examples=60, deadline=None)
@given(quantities)
def test_unit_invariance_energy_and_volume(quantity: Decimal) -> None:
    # 1 MWh == 1000 kWh; 1 × 10^4 Nm3 == 10 000 Nm3.
    mwh = only_line(calc(electricity(str(quantity)))).tco2e
    kwh = only_line(calc(electricity(str(quantity * 1000), unit="kWh"))).tco2e
    assert abs(mwh - kwh) < TOLERANCE
    assert abs(tonnes("natural_gas", quantity, "10^4 Nm3") - tonnes("natural_gas", quantity * 10000, "Nm3")) < TOLERANCE


@settings(max_examples=30, deadline=None)
@given(quantities, st.sampled_from(["AR4", "AR5"]))
def test_gwp_edition_never_changes_co2(quantity: Decimal, gwp: str) -> None:
    assert calc(fuel("diesel", str(quantity), "t"), gwp=gwp).total == calc(fuel("diesel", str(quantity), "t")).total


# ---- data-quality checks ---------------------------------------------------------------------------

def checked(result, **kwargs) -> list[str]:
    defaults = {"industry": None, "revenue_10k_cny": None, "output": None, "previous": None}
    domain.quality_checks(result, **{**defaults, **kwargs})
    return [w.code for w in result.warnings]


def cement_year(scale: int = 1):
    # A cement works of 1 Mt clinker: coal at measured parameters, clinker, Sichuan electricity.
    return calc(fuel("raw_coal", str(140000 * scale), "t", ncv="21.0", carbon_content="0.0262", oxidation_rate="0.95"),
                {"category": "process", "process": "cement_clinker", "quantity": str(1000000 * scale), "unit": "t"},
                electricity(str(100000 * scale)))


def test_clean_figures_keep_good_quality() -> None:
    result = cement_year()
    # Gross ≈ 0.52 Mt process + 0.29 Mt coal + 14 kt electricity ≈ 0.82 Mt on 60 000 (10k CNY) revenue ≈ 13.7.
    assert checked(result, industry="C3011", revenue_10k_cny=D(60000), output=Output(D(1300000), "t")) == []
    assert result.data_quality == 4  # every fuel parameter measured, no anomaly


def test_intensity_far_outside_the_industry_range() -> None:
    result = cement_year()
    codes = checked(result, industry="C3011", revenue_10k_cny=D(1000))  # ≈ 820 t per 10k CNY
    assert codes == ["intensity_out_of_range"] and result.data_quality == 3


def test_electricity_share_that_does_not_fit_the_industry() -> None:
    # A "cement works" reporting only electricity: share 100 %, typical 7-25 %.
    result = calc(electricity("100000"))
    assert checked(result, industry="C3011") == ["energy_mix_mismatch"]
    # The same figures for a bank are typical.
    assert checked(calc(electricity("100000")), industry="J6621") == []


def test_year_on_year_jump() -> None:
    result = cement_year()
    previous = Previous("2023", result.gross / 3, "calc-2023")
    assert checked(result, previous=previous) == ["year_on_year_jump"]
    assert result.data_quality == 3
    steady = cement_year()
    assert checked(steady, previous=Previous("2023", steady.gross * D("0.9"), "calc-2023")) == []
    assert domain.previous_period("2024") == "2023" and domain.previous_period("2024-Q3") == "2023-Q3"
    assert domain.previous_period("2024-07") == "2023-07"


def test_uncertain_factors_are_flagged_and_lower_quality() -> None:
    result = calc(fuel("raw_coal", "1000", "t"))  # default raw-coal row, marked uncertain in the catalogue
    assert checked(result) == ["factor_uncertain"] and result.data_quality == 2


# ---- events ----------------------------------------------------------------------------------------

def test_emission_events_group_by_scope_category_gas_and_satisfy_the_contract() -> None:
    result = calc(fuel("natural_gas", "10", "10^4 Nm3"), fuel("diesel", "100", "t"), electricity("1000"),
                  {"category": "fugitive", "species": "SF6", "quantity": "1", "unit": "kg"},
                  {"category": "exported_heat", "quantity": "1", "unit": "GJ"})
    checked(result)
    events = domain.emission_events(result, "calc-1", "2024")
    keys = [(e["data"]["scope"], e["data"]["category"], e["data"]["gas"]) for e in events]
    assert keys == [(1, "fuel_combustion", "CO2"), (2, "purchased_electricity", "CO2"), (1, "fugitive", "SF6")]
    fuel_total = D("10") * D("389.31") * D("0.0153") * D("0.99") * 44 / 12 + D(100) * D("42.652") * D("0.0202") * D("0.98") * 44 / 12
    assert events[0]["data"]["tco2e"] == present(fuel_total)
    for event in events:
        parse_event(event["type"], event["data"])  # the account's own contract accepts it
        assert event["data"]["data_quality"] == result.data_quality
        assert event["data"]["factor_ref"].startswith("catalogue 2025.1: ")


# ---- environmental benefits ------------------------------------------------------------------------

def benefits(project_type: str, **parameters):
    return domain.measure_benefits(CAT, project_type, parameters, "mee-nbs")


def test_renewable_power_grid_average_baseline() -> None:
    # 10 000 MWh in Sichuan, 2022 factor 0.1404 → 1404 t avoided; coal: 10 000 MWh × 300.7 gce/kWh = 3007 tce;
    # SO2 10 000 MWh × 0.101 g/kWh = 1.01 t; NOx × 0.152 = 1.52 t; dust × 0.022 = 0.22 t.
    result = benefits("renewable_power", annual_generation_mwh="10000", grid="510000", year=2022)
    out = result.public()
    assert (out["baseline_tco2e"], out["project_tco2e"], out["reduction_tco2e"]) == ("1404.000000", "0.000000", "1404.000000")
    values = {k: v["value"] for k, v in out["benefits"].items()}
    assert values == {"co2e_reduced_t": "1404.000000", "standard_coal_saved_t": "3007.000000", "so2_reduced_t": "1.010000",
                      "nox_reduced_t": "1.520000", "dust_reduced_t": "0.220000"}
    assert "grid_average" in out["baseline_method"] and "0.1404" in out["baseline_method"]
    parse_event("ReductionRecorded", result.event("pv-1", "2024")["data"])


def test_renewable_power_combined_margin_and_calorific_coal() -> None:
    # Wind in Sichuan (central China regional grid in the 2019 baseline edition):
    # CM = 0.75 × 0.8587 + 0.25 × 0.2854 = 0.715375; × 10 000 MWh = 7153.75 t.
    # Calorific coal equivalent: 10 000 MWh × 3.6 GJ/MWh / 29.3076 GJ/tce.
    result = benefits("renewable_power", annual_generation_mwh="10000", grid="510000", year=2022, technology="wind",
                      baseline_method="combined_margin", coal_method="calorific_equivalent", water_saved_t="25000")
    assert result.baseline == D("7153.75")
    coal = result.benefits["standard_coal_saved_t"].value
    assert coal == D(10000) * D("3.6") / D("29.3076")
    assert result.benefits["water_saved_t"].value == 25000


def test_efficiency_retrofit_before_and_after() -> None:
    # 1000 → 800 MWh national 2022 (0.5366) and 10 → 8 ×10^4 Nm3 gas:
    # reduction = 200 × 0.5366 + 2 × 389.31 × 0.0153 × 0.99 × 44/12.
    result = benefits("energy_efficiency_retrofit", grid="national", year=2022,
                      baseline_energy=[{"carrier": "electricity", "quantity": "1000", "unit": "MWh"},
                                       {"carrier": "natural_gas", "quantity": "10", "unit": "10^4 Nm3"}],
                      project_energy=[{"carrier": "electricity", "quantity": "800", "unit": "MWh"},
                                      {"carrier": "natural_gas", "quantity": "8", "unit": "10^4 Nm3"}])
    expected = D(200) * D("0.5366") + D(2) * D("389.31") * D("0.0153") * D("0.99") * 44 / 12
    assert abs(result.reduction - expected) < TOLERANCE
    # tce at calorific value: (200 MWh × 3.6 + 2 × 389.31 GJ) / 29.3076.
    assert abs(result.benefits["standard_coal_saved_t"].value - (D(720) + D("778.62")) / D("29.3076")) < TOLERANCE


def test_coal_to_gas() -> None:
    # 1000 t raw coal replaced by 50 × 10^4 Nm3 gas. Sulphur 1 %: coal SO2 = 1000 × 0.01 × 2 × 0.8 = 16 t;
    # gas SO2 upper bound = 500 000 Nm3 × 20 mg/Nm3 × 2 / 10^9 = 0.02 t.
    result = benefits("coal_to_gas", coal_quantity="1000", gas_quantity="50", coal_sulphur_content="0.01",
                      nox_reduced_t="3.5")
    coal = D(1000) * D("20.908") * D("0.02637") * D("0.94") * 44 / 12
    gas = D(50) * D("389.31") * D("0.0153") * D("0.99") * 44 / 12
    assert (result.baseline, result.project) == (coal, gas)
    assert result.benefits["so2_reduced_t"].value == D(16) - D("0.02")
    assert result.benefits["nox_reduced_t"].value == D("3.5")  # monitored
    # Standard coal saved: (20 908 GJ − 19 465.5 GJ) / 29.3076 GJ/tce = 49.219315 tce.
    saved = (D(1000) * D("20.908") - D(50) * D("389.31")) / D("29.3076")
    assert abs(result.benefits["standard_coal_saved_t"].value - saved) < TOLERANCE
    assert present(saved) == "49.219315"


def test_benefit_parameters_are_validated() -> None:
    errors = invalid_fields(lambda: benefits("renewable_power", annual_generation_mwh="-5", grid="510000", year=2022))
    assert set(errors) == {"parameters.annual_generation_mwh"}
    errors = invalid_fields(lambda: benefits("renewable_power", annual_generation_mwh="5", grid="510000", year=2019))
    assert set(errors) == {"parameters.year"}
    errors = invalid_fields(lambda: benefits("coal_to_gas", coal_quantity="1", gas_quantity="100"))
    assert set(errors) == {"parameters"}  # the gas emits more than the coal it replaces
