"""The rating methodology, factor by factor (services/rating/domain.py; docs/methodology.md)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import EVENT_TYPES
from contracts.examples import CEMENT_MAKER_USCC
from services.rating import domain
from services.rating.config import BenchmarkTable, load_reference_data

E = CEMENT_MAKER_USCC
AT = datetime(2025, 6, 30, tzinfo=UTC)
BENCHMARKS = BenchmarkTable.model_validate({"version": "test", "benchmarks": [
    {"industry": "C3011", "name": "Cement", "year": 2023, "per_output": "0.6", "output_unit": "t",
     "per_10k_cny": "12", "sources": ["test"]},
    {"industry": "C30", "name": "Non-metallic minerals", "year": 2020, "per_10k_cny": "5", "sources": ["test"]},
    {"industry": "C3011", "name": "Cement", "year": 2024, "per_output": "0.5", "output_unit": "t",
     "per_10k_cny": "10", "sources": ["test"]},
]})
_ids = itertools.count(1)


def event(event_type: str, **data) -> tuple[str, object, str]:
    return event_type, EVENT_TYPES[event_type].model_validate(data), f"00000000-0000-4000-8000-{next(_ids):012d}"


def registered(industry: str = "C3011"):
    return event("EnterpriseRegistered", uscc=E, name="Example", industry=industry, region="510100")


def activity(period: str, revenue: str = "50000", output: str = "1000000", unit: str = "t"):
    return event("ActivityReported", period=period, revenue_10k_cny=revenue, output={"quantity": output, "unit": unit})


def emission(period: str, tco2e: str, scope: int = 1, quality: int = 4, supersedes: str | None = None):
    return event("EmissionRecorded", calculation_id="c", period=period, scope=scope, category="process", gas="CO2",
                 tco2e=tco2e, factor_ref="f", methodology="m", data_quality=quality, supersedes=supersedes)


def verified(period: str, tco2e: str):
    return event("EmissionVerified", period=period, verifier="verifier-cq", verified_tco2e=tco2e, report_ref=f"VR-{period}")


def reduction(project: str, period: str, tco2e: str):
    return event("ReductionRecorded", project_id=project, period=period, methodology="m", baseline_tco2e=tco2e,
                 project_tco2e="0", reduction_tco2e=tco2e)


def reduction_verified(project: str, period: str, tco2e: str):
    return event("ReductionVerified", project_id=project, period=period, verifier="verifier-cq",
                 verified_reduction_tco2e=tco2e, report_ref="r")


def retired(quantity: str, period: str):
    return event("CreditsRetired", asset="CCER", batch="b-1", quantity_t=quantity, period=period, purpose="p",
                 retirement_ref="r")


def rate(*events, at: datetime = AT) -> domain.Rating:
    return domain.rate(domain.fold(E, events), at, BENCHMARKS)


def factor(rating: domain.Rating, name: str) -> domain.Factor:
    return next(f for f in rating.factors if f.name == name)


BASE = (registered(), activity("2024"), emission("2024", "450000"))  # 0.45 t/t against 0.5: K = 0.9


# ---- bands ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, level, points", [
    ("0", 1, 45), ("0.6", 1, 45), ("0.6001", 2, 36), ("0.8", 2, 36), ("0.8001", 3, 25), ("1.2", 3, 25),
    ("1.2001", 4, 12), ("2.0", 4, 12), ("2.0001", 5, 0), ("50", 5, 0),
])
def test_carbon_efficiency_levels_follow_the_carbon_efficiency_code(k: str, level: int, points: int) -> None:
    assert domain.k_level(Decimal(k))[0] == level
    assert domain.k_level(Decimal(k))[1].points == points


@pytest.mark.parametrize("score, grade", [
    (100, "AAA"), (90, "AAA"), (89, "AA"), (80, "AA"), (79, "A"), (70, "A"), (69, "BBB"), (60, "BBB"),
    (59, "BB"), (50, "BB"), (49, "B"), (40, "B"), (39, "CCC"), (30, "CCC"), (29, "CC"), (20, "CC"), (19, "C"), (0, "C"),
])
def test_grade_bands(score: int, grade: str) -> None:
    assert domain.grade_for(score) == grade


@given(st.integers(0, 100), st.integers(0, 100))
def test_a_higher_score_never_gets_a_worse_grade(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert domain.grade_rank(domain.grade_for(high)) <= domain.grade_rank(domain.grade_for(low))


@pytest.mark.parametrize("verified, quality, score", [
    (True, None, 1), (True, Decimal(1), 1), (False, Decimal(5), 2), (False, Decimal("4.2"), 2),
    (False, Decimal("3.9"), 3), (False, Decimal(2), 4), (False, Decimal("1.5"), 5), (False, None, 5),
])
def test_pcaf_style_score_turns_the_records_quality_over(verified: bool, quality: Decimal | None, score: int) -> None:
    assert domain.pcaf_score(verified, quality) == score


def test_periods_cover_their_months() -> None:
    assert domain.period_months("2024") == frozenset(range(1, 13))
    assert domain.period_months("2024-Q3") == frozenset({7, 8, 9})
    assert domain.period_months("2024-11") == frozenset({11})


# ---- not rated ----------------------------------------------------------------------------------

def codes(rating: domain.Rating) -> list[str]:
    assert rating.status == "not_rated" and rating.grade is None and rating.score is None and not rating.factors
    return [m.code for m in rating.missing]


def test_not_rated_says_what_is_missing() -> None:
    assert codes(rate(registered())) == ["emissions"]
    assert codes(rate()) == ["registration", "emissions"]
    eleven_months = [emission(f"2024-{m:02d}", "100") for m in range(1, 12)]
    rating = rate(registered(), activity("2024"), *eleven_months)
    assert codes(rating) == ["emissions"] and "11 of 12 months" in rating.missing[0].detail
    assert codes(rate(registered(), emission("2024", "10"))) == ["activity"]
    assert codes(rate(registered("B0610"), activity("2024"), emission("2024", "10"))) == ["industry_benchmark"]
    # Revenue zero and output in a unit the benchmark does not know: no intensity.
    assert codes(rate(registered(), activity("2024", revenue="0", unit="m3"), emission("2024", "10"))) == [
        "intensity_denominator"]
    # Scope 3 alone does not make a year.
    assert codes(rate(registered(), activity("2024"), emission("2024", "10", scope=3))) == ["emissions"]


def test_the_rated_year_is_the_latest_complete_one_ended_by_the_moment() -> None:
    events = (*BASE, activity("2023"), emission("2023", "500000"), emission("2025-Q1", "1"))
    assert rate(*events).period == "2024"  # 2025 is incomplete
    assert rate(*events, at=datetime(2025, 1, 1, tzinfo=UTC)).period == "2024"
    assert rate(*events, at=datetime(2024, 12, 31, tzinfo=UTC)).period == "2023"  # 2024 still running
    early = rate(registered(), activity("2025"), emission("2025", "10"))  # recorded in advance, mid-2025
    assert codes(early) == ["emissions"] and "2025 has not ended yet" in early.missing[0].detail
    # Complete emissions without activity fall back to the latest year that has both.
    assert rate(*events, emission("2025-Q2", "1"), emission("2025-07", "1"), emission("2025-08", "1"),
                emission("2025-09", "1"), emission("2025-Q4", "1"), at=datetime(2026, 1, 5, tzinfo=UTC)).period == "2024"


def test_activity_sums_quarters_or_months() -> None:
    quarters = [activity(f"2024-Q{q}", revenue="12500", output="250000") for q in range(1, 5)]
    rating = rate(registered(), *quarters, emission("2024", "450000"))
    assert factor(rating, "carbon_efficiency").value == "0.450000"
    three = quarters[:3]
    assert codes(rate(registered(), *three, emission("2024", "450000"))) == ["activity"]


# ---- each factor --------------------------------------------------------------------------------

def test_carbon_efficiency_uses_output_where_the_benchmark_has_the_unit_else_revenue() -> None:
    physical = factor(rate(*BASE), "carbon_efficiency")
    assert (physical.value, physical.benchmark, physical.unit) == ("0.450000", "0.500000", "tCO2e/t")
    assert physical.detail == {"ratio": "0.9000", "level": 3, "basis": "output", "benchmark_year": 2024}
    assert physical.points == 25 and "0.9 times" in physical.explanation and "level 3" in physical.explanation
    money = factor(rate(registered(), activity("2024", unit="m3"), emission("2024", "450000")), "carbon_efficiency")
    assert (money.value, money.benchmark, money.unit) == ("9.000000", "10.000000", "tCO2e/10k CNY")
    assert money.detail["basis"] == "revenue" and money.detail["ratio"] == "0.9000"


def test_the_benchmark_is_the_most_specific_code_and_latest_year_on_file() -> None:
    assert BENCHMARKS.lookup("C3011", 2024).year == 2024
    assert BENCHMARKS.lookup("C3011", 2030).year == 2024
    assert BENCHMARKS.lookup("C3011", 2023).per_output == Decimal("0.6")
    assert BENCHMARKS.lookup("C3012", 2024).industry == "C30"
    assert BENCHMARKS.lookup("C3011", 2019) is None
    later = factor(rate(registered(), activity("2025"), emission("2025", "450000"), at=datetime(2026, 2, 1, tzinfo=UTC)),
                   "carbon_efficiency")
    assert later.detail["benchmark_year"] == 2024 and "latest on file for 2025" in later.explanation


@pytest.mark.parametrize("previous, points, change", [
    ("500000", 15, "-0.1000"), ("470000", 11, "-0.0426"), ("450000", 7, "0.0000"), ("435000", 3, "0.0345"),
    ("400000", 0, "0.1250"),
])
def test_trend_compares_intensity_with_the_year_before(previous: str, points: int, change: str) -> None:
    trend = factor(rate(*BASE, activity("2023"), emission("2023", previous)), "trend")
    assert trend.points == points and trend.detail["change"] == change
    assert trend.value == "0.450000" and trend.benchmark == f"{Decimal(previous) / 1000000:.6f}"


def test_no_prior_year_earns_no_trend_points() -> None:
    trend = factor(rate(*BASE), "trend")
    assert trend.points == 0 and trend.benchmark is None and "No complete 2023" in trend.explanation


def test_verified_emissions_are_used_and_rate_best_for_data_quality() -> None:
    rating = rate(*BASE, verified("2024", "400000"))
    quality = factor(rating, "data_quality")
    assert quality.value == "1" and quality.points == 20 and "verified by verifier-cq" in quality.explanation
    assert factor(rating, "carbon_efficiency").value == "0.400000"  # the verified figure, not the recorded one


def test_a_later_record_makes_the_verification_stale() -> None:
    facts = domain.fold(E, [*BASE, verified("2024", "400000"), emission("2024-03", "1000")])
    rating = domain.rate(facts, AT, BENCHMARKS)
    quality = factor(rating, "data_quality")
    assert quality.value == "2" and quality.detail["stale_verification"] is True
    assert "out of date" in quality.explanation
    assert factor(rating, "carbon_efficiency").value == "0.451000"  # back to the recorded figures
    # A fresh verification makes it current again.
    facts.apply(*verified("2024", "451000")[:2], "x")
    assert factor(domain.rate(facts, AT, BENCHMARKS), "data_quality").value == "1"


def test_quarterly_verifications_must_cover_the_year_exactly_once() -> None:
    quarters = [verified(f"2024-Q{q}", "100000") for q in range(1, 5)]
    assert factor(rate(*BASE, *quarters), "data_quality").value == "1"
    assert factor(rate(*BASE, *quarters), "carbon_efficiency").value == "0.400000"
    assert factor(rate(*BASE, *quarters[:3]), "data_quality").value == "2"
    overlapping = [*quarters, verified("2024-02", "1")]
    assert factor(rate(*BASE, *overlapping), "data_quality").value == "2"


def test_a_verified_total_with_scope_3_does_not_replace_scope_1_and_2() -> None:
    rating = rate(*BASE, emission("2024", "90000", scope=3), verified("2024", "540000"))
    assert factor(rating, "data_quality").value == "1"
    assert factor(rating, "carbon_efficiency").value == "0.450000"
    assert "includes scope 3" in factor(rating, "data_quality").explanation


def test_records_quality_is_weighted_by_emissions() -> None:
    events = (registered(), activity("2024"), emission("2024", "400000", quality=1), emission("2024", "50000", quality=5))
    quality = factor(rate(*events), "data_quality")
    assert quality.detail["records_quality"] == "1.4444" and quality.value == "5" and quality.points == 0


def test_corrections_supersede_the_line_they_name() -> None:
    first = emission("2024", "450000")
    correction = emission("2024", "300000", supersedes=first[2])
    rating = rate(registered(), activity("2024"), first, correction)
    assert factor(rating, "carbon_efficiency").value == "0.300000"


@pytest.mark.parametrize("quantity, points", [
    ("0", 0), ("1", 1), ("22500", 2), ("90000", 5), ("225000", 7), ("450000", 10), ("900000", 10),
])
def test_neutralisation_bands(quantity: str, points: int) -> None:
    retirements = [retired(quantity, "2024")] if quantity != "0" else []
    result = factor(rate(*BASE, *retirements, retired("999", "2023")), "neutralisation")
    assert result.points == points and result.value == quantity and result.benchmark == "450000"


@pytest.mark.parametrize("tonnes, points", [("0", 0), ("100", 2), ("4500", 4), ("22500", 7), ("45000", 10)])
def test_verified_reduction_bands(tonnes: str, points: int) -> None:
    events = [reduction("p-1", "2024", "50000")]
    if tonnes != "0":
        events.append(reduction_verified("p-1", "2024", tonnes))
    result = factor(rate(*BASE, *events), "verified_reductions")
    assert result.points == points and result.value == tonnes
    if tonnes == "0":
        assert "50,000.0 tCO2e recorded but not verified" in result.explanation


def test_project_reductions_never_count_a_month_twice() -> None:
    facts = domain.fold(E, [
        reduction("p", "2024", "100"), reduction("p", "2024-Q1", "30"), reduction("p", "2024-02", "10"),
        reduction("p", "2024-Q2", "40"), reduction_verified("p", "2024-Q1", "30"), reduction_verified("p", "2024-02", "10"),
        reduction_verified("p", "2024-Q2", "35"),
    ])
    year = domain.project_year_reduction(facts, "p", 2024)
    assert year.verified_tco2e == Decimal(65) and year.periods == ("2024-Q1", "2024-Q2")
    assert year.unverified_tco2e == Decimal(100)  # the annual record is not verified
    facts.apply(*reduction_verified("p", "2024", "90")[:2], "x")
    assert domain.project_year_reduction(facts, "p", 2024).verified_tco2e == Decimal(90)
    # Recording a unit again replaces its verification.
    facts.apply(*reduction("p", "2024", "120")[:2], "y")
    assert domain.project_year_reduction(facts, "p", 2024).verified_tco2e == Decimal(65)


def test_the_score_is_the_sum_of_points_and_every_factor_explains_itself() -> None:
    rating = rate(*BASE, activity("2023"), emission("2023", "500000"), verified("2024", "450000"),
                  retired("45000", "2024"), reduction("p", "2024", "5000"), reduction_verified("p", "2024", "5000"))
    assert [f.points for f in rating.factors] == [25, 15, 20, 2, 4]
    assert rating.score == 66 and rating.grade == "BBB" and rating.period == "2024"
    assert all(f.explanation and f.points <= f.max_points for f in rating.factors)
    assert rating.to_dict()["methodology_version"] == domain.METHODOLOGY_VERSION
    assert rating.benchmark == {"industry": "C3011", "name": "Cement", "year": 2024, "table_version": "test",
                                "sources": ["test"]}


def test_zero_emissions_are_the_best_possible_and_divide_by_nothing() -> None:
    rating = rate(registered(), activity("2024"), emission("2024", "0"))
    assert factor(rating, "carbon_efficiency").points == 45
    assert factor(rating, "neutralisation").points == 10


# ---- properties ---------------------------------------------------------------------------------

tonnes = st.decimals(min_value=0, max_value=2_000_000, places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(low=tonnes, extra=tonnes, previous=tonnes, retired_t=tonnes, reduced=tonnes, quality=st.integers(1, 5),
       verify=st.booleans())
def test_lower_emissions_never_lower_the_score(low, extra, previous, retired_t, reduced, quality, verify) -> None:
    def score(emitted: Decimal) -> int:
        events = [registered(), activity("2023"), emission("2023", str(previous)), activity("2024"),
                  emission("2024", str(emitted), quality=quality), reduction("p", "2024", "2000000")]
        if verify:
            events.append(verified("2024", str(emitted)))
        if retired_t > 0:
            events.append(retired(str(retired_t), "2024"))
        if reduced > 0:
            events.append(reduction_verified("p", "2024", str(reduced)))
        rating = rate(*events)
        assert rating.status == "rated" and 0 <= rating.score <= 100
        assert rating.score == sum(f.points for f in rating.factors)
        return rating.score

    assert score(low) >= score(low + extra)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["2023", "2024", "2024-Q1", "2024-07"]), tonnes, st.integers(1, 3),
                          st.integers(1, 5)), max_size=8))
def test_facts_survive_their_json_form(lines) -> None:
    facts = domain.fold(E, [registered(), *[emission(p, str(t), scope=s, quality=q) for p, t, s, q in lines],
                            verified("2024", "1"), reduction("p", "2024", "5"), reduction_verified("p", "2024", "4"),
                            retired("3", "2024"), activity("2024")])
    again = domain.Facts.from_json(domain.Facts.from_json(facts.to_json()).to_json())
    assert again == facts
    assert domain.rate(again, AT, BENCHMARKS) == domain.rate(facts, AT, BENCHMARKS)


def test_the_shipped_reference_data_rates_the_platform_industries() -> None:
    data = load_reference_data()
    for industry in ("C3011", "D4411"):
        benchmark = data.benchmarks.lookup(industry, 2025)
        assert benchmark is not None and benchmark.sources and benchmark.per_output and benchmark.per_10k_cny


def test_the_benchmarks_lie_within_the_shared_industry_screening_ranges() -> None:
    # Accounting screens figures with carbon.reference; a benchmark outside those ranges would make
    # the two services disagree about what is typical for an industry.
    from carbon.reference import benchmark_for

    for benchmark in load_reference_data().benchmarks.benchmarks:
        screening = benchmark_for(benchmark.industry)
        assert screening is not None, benchmark.industry
        if benchmark.per_10k_cny is not None and screening.revenue_intensity is not None:
            assert screening.revenue_intensity.contains(benchmark.per_10k_cny), benchmark.industry
        if benchmark.per_output is not None and screening.output_intensity is not None:
            assert screening.output_intensity.unit == benchmark.output_unit
            assert screening.output_intensity.contains(benchmark.per_output), benchmark.industry


def test_the_published_document_states_the_version_and_every_band() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "methodology.md").read_text(encoding="utf-8")
    assert f"**Methodology version {domain.METHODOLOGY_VERSION}**" in text
    for band in domain.K_LEVELS:
        bound = "K > 2.0" if band.bound is None else f"K ≤ {band.bound}"
        assert f"| {bound} | {band.points} |" in text
    for grade, lowest in domain.GRADE_BANDS:
        assert f"| {grade} | {lowest}–" in text
    for score, points in domain.QUALITY_POINTS.items():
        assert f"| {score} | " in text and f"| {points} |" in text


def test_a_line_overlapping_a_verified_quarter_makes_it_stale() -> None:
    quarters = [verified(f"2024-Q{q}", "100000") for q in range(1, 5)]
    facts = domain.fold(E, [*BASE, *quarters])
    assert domain.verified_emissions(facts, 2024) is not None
    facts.apply(*emission("2024", "5")[:2], "late")  # an annual line covers every quarter
    assert domain.verified_emissions(facts, 2024) is None
    assert all(v.stale for v in facts.verifications.values())


# ---- what the facts remember between instants (the last rating, their stored form) ----------------

def _any_event(draw_kind: str, period: str, tonnes_: str, lines: list[str]):
    """One event of ``draw_kind`` (``lines``: the event ids of the emission lines so far, to supersede)."""
    match draw_kind:
        case "registered":  # registered again, in the wider industry: another benchmark
            return registered("C30")
        case "activity":
            return activity(period)
        case "emission" | "correction":
            supersedes = lines[0] if draw_kind == "correction" and lines else None
            recorded = emission(period, tonnes_, scope=1 + len(lines) % 3, supersedes=supersedes)
            lines.append(recorded[2])
            return recorded
        case "verified":
            return verified(period, tonnes_)
        case "reduction":
            return reduction("p", period, tonnes_)
        case "reduction_verified":
            return reduction_verified("p", period, tonnes_)
        case _:
            return retired(tonnes_ if tonnes_ != "0" else "1", period)  # a retirement is never of nothing


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["registered", "activity", "emission", "emission", "emission", "correction", "verified",
                     "reduction", "reduction_verified", "retired"]),
    st.sampled_from(["2022", "2023", "2023-Q1", "2023-Q2", "2023-Q3", "2023-Q4", "2024", "2024-Q3", "2025"]),
    st.sampled_from(["0", "1.5", "900", "120000"]),
    st.sampled_from([2024, 2025, 2026])), max_size=24))
def test_what_is_remembered_between_instants_is_what_a_fresh_fold_gives(steps) -> None:
    lines: list[str] = []
    # Activity for every year, so that most instants are rated (an emission line completes a year).
    events = [registered(), *(activity(str(year)) for year in range(2021, 2026))]
    facts = domain.fold(E, events)
    for kind, period, tonnes_, at_year in sorted(steps, key=lambda s: s[3]):  # knowledge time moves forward
        event_type, data, event_id = _any_event(kind, period, tonnes_, lines)
        events.append((event_type, data, event_id))
        facts.apply(event_type, data, event_id)
        at = datetime(at_year, 3, 1, tzinfo=UTC)
        afresh = domain.fold(E, events)
        assert domain.rate(facts, at, BENCHMARKS) == domain.rate(afresh, at, BENCHMARKS)
        # The stored form, kept up to date part by part, is the one encoded afresh and reads back.
        assert facts.stored() == afresh.stored()
        assert domain.Facts.from_json(facts.to_json()).stored() == facts.stored()


def test_an_instant_that_touches_nothing_the_rating_reads_is_not_rated_again(monkeypatch) -> None:
    facts = domain.fold(E, [registered(), activity("2023"), emission("2023", "500000"), verified("2023", "500000")])
    first = domain.rate(facts, AT, BENCHMARKS)
    calls = []
    monkeypatch.setattr(domain, "_rate", lambda *args: calls.append(args) or first)
    for event_type, data, event_id in [activity("2024-Q1"), emission("2024-Q1", "90000")]:
        facts.apply(event_type, data, event_id)  # 2024 is under way: 2023 is still the year rated
    assert domain.rate(facts, AT, BENCHMARKS) is first and calls == []
    assert domain.rate(facts, datetime(2026, 1, 1, tzinfo=UTC), BENCHMARKS) is first and len(calls) == 1  # a new year
    facts.apply(*retired("10", "2023"))
    domain.rate(facts, AT, BENCHMARKS)
    assert len(calls) == 2  # the year rated changed
