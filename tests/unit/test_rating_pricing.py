"""Pricing tables and the other reference data: validated at load, monotonic, never rewarding missing data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.rating import domain
from services.rating.config import (
    GRADES,
    PRODUCTS,
    PricingTable,
    ProductPricing,
    ReferenceDataError,
    load_reference_data,
)

DEFAULT = load_reference_data()


@pytest.mark.parametrize("product", PRODUCTS)
def test_the_shipped_table_never_charges_a_better_grade_more(product: str) -> None:
    table = DEFAULT.pricing.products[product]
    adjustments = [table.price(g)[1] for g in GRADES]
    assert adjustments == sorted(adjustments)
    assert table.price(None)[1] >= adjustments[-1]


def test_the_shipped_bill_discount_example_gives_well_rated_suppliers_130_to_150_bp() -> None:
    table = DEFAULT.pricing.products["bill_discount"]
    assert [table.price(g) for g in ("AAA", "AA", "A")] == [("T1", -150), ("T2", -140), ("T3", -130)]
    assert table.price("C") == ("T6", 0) and table.price(None) == ("T6", 0)


adjustment_lists = st.lists(st.integers(-300, 300), min_size=len(GRADES), max_size=len(GRADES))


def table_from(adjustments: list[int], not_rated: int) -> dict:
    tiers = {f"T{i}": bp for i, bp in enumerate(adjustments, start=1)} | {"NR": not_rated}
    return {"tiers": tiers, "grades": {g: f"T{i}" for i, g in enumerate(GRADES, start=1)}, "not_rated": "NR"}


@given(adjustment_lists, st.integers(0, 300))
def test_any_monotonic_table_is_accepted_and_prices_monotonically(adjustments: list[int], extra: int) -> None:
    adjustments = sorted(adjustments)
    table = ProductPricing.model_validate(table_from(adjustments, adjustments[-1] + extra))
    for better, worse in zip(GRADES, GRADES[1:]):
        assert table.price(better)[1] <= table.price(worse)[1]
    assert table.price(None)[1] >= table.price("C")[1]


@given(adjustment_lists)
def test_a_table_where_a_better_grade_pays_more_is_refused(adjustments: list[int]) -> None:
    if adjustments == sorted(adjustments):
        adjustments = [adjustments[0] + 1, *adjustments[1:]] if adjustments[0] >= adjustments[1] else \
            [adjustments[1], adjustments[0], *adjustments[2:]]
    if adjustments == sorted(adjustments):  # all equal: make the best grade pay more
        adjustments = [adjustments[0] + 1, *adjustments[1:]]
    with pytest.raises(ValueError, match="would pay more"):
        ProductPricing.model_validate(table_from(adjustments, max(adjustments)))


def test_withholding_data_never_pays() -> None:
    with pytest.raises(ValueError, match="not-rated tier"):
        ProductPricing.model_validate(table_from([-100] * len(GRADES), -101))


@pytest.mark.parametrize("change, message", [
    (lambda t: t["products"]["loan"]["grades"].pop("BB"), "every grade"),
    (lambda t: t["products"]["loan"].update(not_rated="T9"), "not defined"),
    (lambda t: t["products"].pop("loan"), "exactly these products"),
    (lambda t: t["products"]["loan"]["tiers"].update(T1=-5000), "1000 bp"),
])
def test_broken_pricing_tables_are_refused(change, message: str) -> None:
    raw = DEFAULT.pricing.model_dump(mode="json")
    change(raw)
    with pytest.raises(ValueError, match=message):
        PricingTable.model_validate(raw)


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_a_bad_file_stops_the_start_and_names_itself(tmp_path: Path) -> None:
    benchmarks = DEFAULT.benchmarks.model_dump(mode="json")
    benchmarks["benchmarks"].append(dict(benchmarks["benchmarks"][0]))
    path = write(tmp_path, "benchmarks.json", benchmarks)
    with pytest.raises(ReferenceDataError, match="(?s)benchmarks.json.*two benchmarks"):
        load_reference_data(benchmarks=path)
    no_source = DEFAULT.benchmarks.model_dump(mode="json")
    no_source["benchmarks"][0]["sources"] = []
    with pytest.raises(ReferenceDataError, match="sources"):
        load_reference_data(benchmarks=write(tmp_path, "b2.json", no_source))
    lonely = DEFAULT.benchmarks.model_dump(mode="json")
    del lonely["benchmarks"][0]["output_unit"]
    with pytest.raises(ReferenceDataError, match="go together"):
        load_reference_data(benchmarks=write(tmp_path, "b3.json", lonely))
    floats = DEFAULT.benchmarks.model_dump(mode="json")
    floats["benchmarks"][0]["per_output"] = 0.6
    with pytest.raises(ReferenceDataError, match="strings"):
        load_reference_data(benchmarks=write(tmp_path, "b4.json", floats))
    terms = DEFAULT.rediscount.model_dump(mode="json") | {"threshold_grade": "B+"}
    with pytest.raises(ReferenceDataError, match="threshold_grade"):
        load_reference_data(rediscount=write(tmp_path, "r.json", terms))
    with pytest.raises(ReferenceDataError, match="missing.json"):
        load_reference_data(pricing=tmp_path / "missing.json")


def test_an_updated_file_changes_the_figures_without_code(tmp_path: Path) -> None:
    raw = DEFAULT.pricing.model_dump(mode="json")
    raw["products"]["bill_discount"]["tiers"]["T1"] = -160
    data = load_reference_data(pricing=write(tmp_path, "pricing.json", raw))
    assert data.pricing.products["bill_discount"].price("AAA") == ("T1", -160)


def test_price_answer_explains_the_tier() -> None:
    issued = datetime(2025, 5, 1, tzinfo=UTC)
    rating = {"enterprise_id": "E", "status": "rated", "grade": "AA", "score": 84, "methodology_version": "1.0"}
    answer = domain.price_answer(rating, "bill_discount", DEFAULT.pricing, issued)
    assert (answer["tier"], answer["adjustment_bp"]) == ("T2", -140)
    assert answer["valid_until"] == issued + timedelta(days=DEFAULT.pricing.validity_days)
    assert "Grade AA" in answer["explanation"] and "-140 bp" in answer["explanation"]
    unrated = domain.price_answer({**rating, "status": "not_rated", "grade": None, "score": None}, "loan",
                                  DEFAULT.pricing, issued)
    assert unrated["adjustment_bp"] == 0 and "Not rated" in unrated["explanation"]
