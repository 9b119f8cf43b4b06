"""The emission-factor catalogue and the shared industry benchmarks: every number has a source, and
one calculation never mixes two editions of a kind of factor."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from carbon.reference import benchmark_for, industry_benchmarks
from services.accounting import domain
from services.accounting.catalogue import DATA_DIR, CatalogueError, default_catalogue, load
from services.accounting.domain import CalculationRequest
from services.accounting.units import UnitError, convert

CAT = default_catalogue()


def test_every_factor_cites_its_source() -> None:
    assert len(CAT.factors) > 50
    for factor in CAT.factors:
        source = factor.source
        assert source.standard.strip() and source.table.strip() and source.edition.strip(), factor.id
        assert factor.units, factor.id
        if factor.uncertain:
            assert factor.note and len(factor.note) > 20, f"{factor.id} is uncertain without saying why"


def test_every_edition_is_declared_and_each_kind_has_one_default() -> None:
    declared = {(e.kind, e.id) for e in CAT.editions}
    assert {(f.kind, f.edition) for f in CAT.factors} == declared
    for kind in {e.kind for e in CAT.editions}:
        assert len([e for e in CAT.editions if e.kind == kind and e.default]) == 1
    assert CAT.selectable("gwp") == ["AR5", "AR4"]
    assert CAT.selectable("factor_edition") == ["mee-nbs", "mee-ets"]


def test_the_fuels_the_specification_names() -> None:
    for name in ("raw_coal", "washed_coal", "coke", "crude_oil", "fuel_oil", "gasoline", "diesel", "kerosene", "lpg",
                 "natural_gas", "coke_oven_gas"):
        factor = CAT.fuel(name)
        assert factor.source.standard.startswith("GB/T 32150-2015") and "Table A.1" in factor.source.table
    gas = CAT.fuel("natural_gas")
    assert gas.values == {"ncv": Decimal("389.31"), "carbon_content": Decimal("0.0153"), "oxidation_rate": Decimal("0.99")}
    assert gas.units["activity"] == "10^4 Nm3"


def test_both_gwp_editions_cover_the_same_species_and_the_seven_gases() -> None:
    assert CAT.species("AR5") == CAT.species("AR4")
    assert {f.gas.value for f in CAT.filter(kind="gwp", edition="AR5") if f.gas} == {
        "CO2", "CH4", "N2O", "HFCs", "PFCs", "SF6", "NF3"}
    assert (CAT.gwp("AR5", "CH4").value(), CAT.gwp("AR4", "CH4").value()) == (28, 25)
    assert (CAT.gwp("AR5", "N2O").value(), CAT.gwp("AR4", "N2O").value()) == (265, 298)


def test_disagreeing_editions_are_both_kept() -> None:
    # 2022 national grid: the MEE/NBS statistical average and the MEE reporting factor differ.
    assert CAT.grid("mee-nbs", "national", 2022).value() == Decimal("0.5366")
    assert CAT.grid("mee-ets", "national", 2022).value() == Decimal("0.5703")


@pytest.mark.parametrize(("gwp", "edition"), [("AR5", "mee-nbs"), ("AR4", "mee-ets"), ("AR4", "mee-nbs")])
def test_a_calculation_never_mixes_editions(gwp: str, edition: str) -> None:
    result = domain.calculate(CAT, CalculationRequest("non_industrial", [
        {"category": "stationary_combustion", "fuel": "diesel", "quantity": "3", "unit": "t"},
        {"category": "fugitive", "species": "HFC-32", "quantity": "2", "unit": "kg"},
        {"category": "purchased_electricity", "quantity": "10", "unit": "MWh", "grid": "national", "year": 2022},
        {"category": "purchased_electricity", "quantity": "10", "unit": "MWh", "grid": "national", "year": 2021},
    ], gwp, edition))
    ids = [fid for line in result.lines for fid in line.factor_ids]
    gwp_editions = {fid.split("/")[1] for fid in ids if fid.startswith("gwp/")}
    grid_editions = {fid.split("/")[1] for fid in ids if fid.startswith("grid/")}
    assert gwp_editions == {gwp} and grid_editions == {edition}


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA_DIR, target)
    return target


def test_the_loader_refuses_floats(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    heat = data / "heat.yaml"
    heat.write_text(heat.read_text().replace('{value: "0.11"}', "{value: 0.11}"))
    with pytest.raises(CatalogueError, match="quoted decimal"):
        load(data)


def test_the_loader_refuses_an_undeclared_edition(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    (data / "grid_extra.yaml").write_text(
        'kind: grid\nedition: someone-else\nsource: {standard: "x standard", table: "t table", edition: "1"}\n'
        'units: {value: "tCO2/MWh"}\nentries:\n  - {key: national, region: national, year: 2022, values: {value: "0.6"}}\n')
    with pytest.raises(CatalogueError, match="not declared"):
        load(data)


def test_the_loader_refuses_a_factor_without_a_source(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    heat = data / "heat.yaml"
    text = heat.read_text()
    heat.write_text(text[: text.index("source:")] + text[text.index("units:"):])
    with pytest.raises(CatalogueError, match="source"):
        load(data)


def test_the_loader_refuses_duplicates_and_unexplained_uncertainty(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    grid = data / "grid_mee_nbs_2021.yaml"
    grid.write_text(grid.read_text() + '  - {key: national, region: national, values: {value: "0.5"}}\n')
    with pytest.raises(CatalogueError, match="twice"):
        load(data)
    data = _copy(tmp_path / "again")
    constants = data / "constants.yaml"
    constants.write_text(constants.read_text() + '  - {key: extra, units: {value: "t"}, values: {value: "1"}, uncertain: true}\n')
    with pytest.raises(CatalogueError, match="uncertain"):
        load(data)


def test_units() -> None:
    assert convert(Decimal("1000"), "kg", "t") == 1
    assert convert(Decimal("1000"), "kWh", "MWh") == 1
    assert convert(Decimal("30000"), "Nm3", "10^4 Nm3") == 3
    assert convert(Decimal("1"), "tce", "GJ") == Decimal("29.3076")
    assert convert(Decimal("1"), "TJ", "GJ") == 1000
    for unit, target in (("m3", "10^4 Nm3"), ("t", "MWh"), ("furlong", "t"), ("10^99 t", "t"), ("__import__('os')", "t")):
        with pytest.raises(UnitError):
            convert(Decimal(1), unit, target)


def test_industry_benchmarks_are_sourced_and_found_by_prefix() -> None:
    table = industry_benchmarks()
    assert {"C3011", "D4411", "J66"} <= table.keys()
    for benchmark in table.values():
        assert benchmark.sources and benchmark.derivation
        assert benchmark.revenue_intensity or benchmark.output_intensity
    assert benchmark_for("C3011").code == "C3011"
    assert benchmark_for("C3012").code == "C30"  # the division's envelope
    assert benchmark_for("J6621").code == "J66"
    assert benchmark_for("A0111") is None
