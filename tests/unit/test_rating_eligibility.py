"""Carbon-reduction bill re-discount eligibility: every reason, met and unmet (services/rating/domain.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from services.rating import domain
from services.rating.config import RediscountTerms
from tests.unit.test_rating_domain import (
    E,
    activity,
    emission,
    reduction,
    reduction_verified,
    registered,
    verified,
)

TODAY = date(2025, 6, 15)
TERMS = RediscountTerms(version="t", threshold_grade="BBB", rediscount_rate="0.020")


def facts(*extra) -> domain.Facts:
    return domain.fold(E, [registered(), activity("2024"), emission("2024", "100"), verified("2024", "100"),
                           reduction("pv-1", "2024", "5000"), reduction_verified("pv-1", "2024", "4800"),
                           reduction("pv-1", "2023", "3000"), reduction_verified("pv-1", "2023", "2900"),
                           reduction("wind-2", "2024", "700"), *extra])


def bill(no: str = "B-1", project: str | None = "pv-1", maturity: date = date(2025, 9, 30)) -> domain.Bill:
    return domain.Bill(no, Decimal("1000000"), maturity, project)


def assess(f: domain.Facts | None = None, grade: str | None = "A", bills=None, reserved=(), today: date = TODAY):
    return domain.assess_eligibility(f or facts(), grade, bills or [bill()], today, TERMS, reserved)


def reason(result: domain.Eligibility, code: str, bill_no: str | None = None) -> domain.Reason:
    return next(r for r in result.reasons if r.code == code and r.bill_no == bill_no)


def test_everything_met_is_eligible_with_the_attributable_tonnes() -> None:
    result = assess()
    assert result.eligible and all(r.met for r in result.reasons)
    assert [r.code for r in result.reasons] == ["grade_threshold", "account_current", "bill_unmatured",
                                                "reduction_recorded", "reduction_verified", "reduction_unclaimed"]
    assert result.estimated_reduction_tco2e == Decimal(7700)
    assert [(a.project_id, a.year, a.verified_reduction_tco2e) for a in result.attributable] == [
        ("pv-1", 2023, Decimal(2900)), ("pv-1", 2024, Decimal(4800))]


@pytest.mark.parametrize("grade, met", [("AAA", True), ("BBB", True), ("BB", False), ("C", False), (None, False)])
def test_grade_threshold(grade: str | None, met: bool) -> None:
    result = assess(grade=grade)
    assert reason(result, "grade_threshold").met is met and result.eligible is met
    if grade is None:
        assert "not rated" in reason(result, "grade_threshold").detail


def test_account_current_needs_a_verified_recent_complete_year() -> None:
    assert reason(assess(), "account_current").met  # 2024 verified, asked in 2025
    assert reason(assess(today=date(2026, 3, 1)), "account_current").met  # 2024 is still among the two latest
    stale = assess(today=date(2027, 1, 1))
    assert not reason(stale, "account_current").met and "2026 or 2025" in reason(stale, "account_current").detail
    later_record = facts(emission("2024-12", "5"))  # the verification is stale now
    assert not reason(assess(later_record), "account_current").met


def test_a_matured_bill_is_not_eligible() -> None:
    result = assess(bills=[bill(maturity=TODAY)])
    assert not reason(result, "bill_unmatured", "B-1").met and not result.eligible
    assert reason(assess(bills=[bill(maturity=date(2025, 6, 16))]), "bill_unmatured", "B-1").met


def test_each_bill_needs_a_recorded_verified_unclaimed_project() -> None:
    result = assess(bills=[bill("B-1", None), bill("B-2", "wind-2"), bill("B-3", "hydro-9"), bill("B-4", "pv-1")])
    assert not result.eligible
    assert not reason(result, "reduction_recorded", "B-1").met
    assert "names no" in reason(result, "reduction_recorded", "B-1").detail
    assert reason(result, "reduction_recorded", "B-2").met and not reason(result, "reduction_verified", "B-2").met
    assert not reason(result, "reduction_recorded", "B-3").met
    assert all(r.met for r in result.reasons if r.bill_no == "B-4")
    assert result.estimated_reduction_tco2e == Decimal(7700)  # only what the qualifying bills carry


def test_claimed_tonnes_are_not_claimable_again() -> None:
    partly = assess(reserved=[("pv-1", 2024)])
    assert partly.eligible and partly.estimated_reduction_tco2e == Decimal(2900)
    assert "already claimed: 2024" in reason(partly, "reduction_unclaimed", "B-1").detail
    fully = assess(reserved=[("pv-1", 2024), ("pv-1", 2023)])
    assert not fully.eligible and not reason(fully, "reduction_unclaimed", "B-1").met
    assert fully.estimated_reduction_tco2e == 0 and fully.attributable == ()


def test_two_bills_on_one_project_carry_its_tonnes_once() -> None:
    result = assess(bills=[bill("B-1"), bill("B-2")])
    assert result.eligible and result.estimated_reduction_tco2e == Decimal(7700) and len(result.attributable) == 2


def test_the_current_years_are_the_two_latest_complete_ones() -> None:
    assert domain.account_current_years(date(2025, 1, 1)) == (2024, 2023)
    assert domain.account_current_years(date(2025, 12, 31)) == (2024, 2023)
