"""The rating methodology (SPEC §6 "rating"): pure functions from an enterprise's facts to a rating.

No I/O and no clock: the moment a rating speaks for is an argument (the ``recorded_at`` of the event
that produced it), so replaying the same events gives the same ratings. ``docs/methodology.md``
explains every number defined here; ``GET /v1/methodology`` publishes them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import orjson

from contracts.types import period_year
from services.rating.config import GRADES, Benchmark, BenchmarkTable, RediscountTerms

METHODOLOGY_VERSION = "1.0"
METHODOLOGY_NAME = "Carbon-efficiency rating"

ZERO = Decimal(0)
FOUR_PLACES = Decimal("0.0001")
SIX_PLACES = Decimal("0.000001")


# ---- grade bands and factor bands ----------------------------------------------------------------

# Lowest score of each grade, best first.
GRADE_BANDS: tuple[tuple[str, int], ...] = (
    ("AAA", 90), ("AA", 80), ("A", 70), ("BBB", 60), ("BB", 50), ("B", 40), ("CCC", 30), ("CC", 20), ("C", 0),
)
assert tuple(g for g, _ in GRADE_BANDS) == GRADES


@dataclass(frozen=True, slots=True)
class Band:
    """One step of a factor: ``bound`` is inclusive (an upper bound where lower is better, else a lower one)."""

    bound: Decimal | None  # None: everything beyond the last bound
    points: int
    label: str


# Carbon-efficiency levels after Zhejiang's industrial carbon-efficiency code (碳效码): K ≤ bound.
K_LEVELS: tuple[Band, ...] = (
    Band(Decimal("0.6"), 45, "level 1: far more efficient than the industry"),
    Band(Decimal("0.8"), 36, "level 2: more efficient than the industry"),
    Band(Decimal("1.2"), 25, "level 3: around the industry average"),
    Band(Decimal("2.0"), 12, "level 4: less efficient than the industry"),
    Band(None, 0, "level 5: far less efficient than the industry"),
)
# Year-on-year change of intensity: change ≤ bound.
TREND_BANDS: tuple[Band, ...] = (
    Band(Decimal("-0.05"), 15, "fell by 5 % or more"),
    Band(Decimal("-0.02"), 11, "fell by 2 % to 5 %"),
    Band(Decimal("0.02"), 7, "stable (within ±2 %)"),
    Band(Decimal("0.05"), 3, "rose by 2 % to 5 %"),
    Band(None, 0, "rose by more than 5 %"),
)
# PCAF-style data-quality score: 1 verified … 5 estimated.
QUALITY_POINTS: dict[int, int] = {1: 20, 2: 14, 3: 9, 4: 4, 5: 0}
QUALITY_LABELS: dict[int, str] = {
    1: "emissions verified by a third party",
    2: "reported from measured or metered primary data, not verified",
    3: "calculated from activity data with default factors, not verified",
    4: "partly estimated, not verified",
    5: "estimated (e.g. from revenue), not verified",
}
# Share of the year's emissions neutralised by retired credits: ratio ≥ bound.
NEUTRALISATION_BANDS: tuple[Band, ...] = (
    Band(Decimal("1"), 10, "fully neutralised"),
    Band(Decimal("0.5"), 7, "half or more neutralised"),
    Band(Decimal("0.2"), 5, "a fifth or more neutralised"),
    Band(Decimal("0.05"), 2, "5 % or more neutralised"),
    Band(ZERO, 1, "some credits retired"),  # any amount above zero, however small the ratio
    Band(None, 0, "nothing neutralised"),
)
# Verified project reductions relative to the year's emissions: ratio ≥ bound.
REDUCTION_BANDS: tuple[Band, ...] = (
    Band(Decimal("0.10"), 10, "10 % of emissions or more"),
    Band(Decimal("0.05"), 7, "5 % to 10 % of emissions"),
    Band(Decimal("0.01"), 4, "1 % to 5 % of emissions"),
    Band(ZERO, 2, "below 1 % of emissions"),  # any verified amount above zero
    Band(None, 0, "no verified reductions"),
)
MAX_POINTS = {"carbon_efficiency": 45, "trend": 15, "data_quality": 20, "neutralisation": 10, "verified_reductions": 10}
assert sum(MAX_POINTS.values()) == 100


def grade_for(score: int) -> str:
    for grade, lowest in GRADE_BANDS:
        if score >= lowest:
            return grade
    return GRADE_BANDS[-1][0]


def grade_rank(grade: str) -> int:
    """0 for the best grade; larger is worse."""
    return GRADES.index(grade)


def k_level(k: Decimal) -> tuple[int, Band]:
    for level, band in enumerate(K_LEVELS, start=1):
        if band.bound is None or k <= band.bound:
            return level, band
    raise AssertionError("the last level is open-ended")


def _band_at_most(value: Decimal, bands: Sequence[Band]) -> Band:
    return next(b for b in bands if b.bound is None or value <= b.bound)


def _band_at_least(value: Decimal, bands: Sequence[Band], amount: Decimal) -> Band:
    """A zero bound means "any amount above zero": a tiny ratio rounds to 0.0000 but still counts."""
    return next(b for b in bands if b.bound is None or (value >= b.bound if b.bound > 0 else amount > 0))


def pcaf_score(verified: bool, weighted_quality: Decimal | None) -> int:
    """PCAF-style score (1 best). Events carry data_quality 1 (estimated) … 5 (measured): turn it over."""
    if verified:
        return 1
    if weighted_quality is None:
        return 5
    return min(5, max(2, 6 - int(weighted_quality)))


# ---- periods -------------------------------------------------------------------------------------

_PERIOD = re.compile(r"([0-9]{4})(?:-Q([1-4])|-([0-9]{2}))?")


@lru_cache(maxsize=4096)  # a handful of distinct periods, asked about for every line
def period_months(period: str) -> frozenset[int]:
    """The calendar months (1–12) a period covers within its year."""
    match = _PERIOD.fullmatch(period)
    if match is None:
        raise ValueError(f"not a period: {period!r}")
    if match[2]:
        quarter = int(match[2])
        return frozenset(range(3 * quarter - 2, 3 * quarter + 1))
    if match[3]:
        return frozenset({int(match[3])})
    return frozenset(range(1, 13))


def periods_overlap(a: str, b: str) -> bool:
    return period_year(a) == period_year(b) and bool(period_months(a) & period_months(b))


# ---- facts: what the rating needs to know, folded from the account's events ------------------------

@dataclass(slots=True)
class Activity:
    revenue_10k_cny: Decimal
    output_quantity: Decimal
    output_unit: str


@dataclass(slots=True)
class EmissionLine:
    period: str
    scope: int
    tco2e: Decimal
    data_quality: int


@dataclass(slots=True)
class Verification:
    verified_tco2e: Decimal
    verifier: str
    report_ref: str
    stale: bool = False  # emissions were recorded for an overlapping period after it


@dataclass(slots=True)
class ReductionUnit:
    """A project's reduction in one period: recorded, and perhaps verified."""

    recorded_tco2e: Decimal
    verified_tco2e: Decimal | None = None
    verifier: str | None = None
    report_ref: str | None = None


@dataclass(slots=True)
class Retirement:
    asset: str
    batch: str
    quantity_t: Decimal
    period: str
    retirement_ref: str


RATING_EVENTS = frozenset({
    "EnterpriseRegistered", "ActivityReported", "EmissionRecorded", "EmissionVerified", "ReductionRecorded",
    "ReductionVerified", "CreditsRetired",
})


@dataclass(slots=True)
class Facts:
    enterprise_id: str
    name: str | None = None
    industry: str | None = None
    activities: dict[str, Activity] = field(default_factory=dict)  # period → latest report
    lines: dict[str, EmissionLine] = field(default_factory=dict)  # event id → current (not superseded) line
    verifications: dict[str, Verification] = field(default_factory=dict)  # period → latest verification
    reductions: dict[str, dict[str, ReductionUnit]] = field(default_factory=dict)  # project → period → unit
    retirements: list[Retirement] = field(default_factory=list)
    # Derived, never stored: the current lines by year, and each year's figures until an event touches
    # that year — a rating reads a few years, and must not rescan a long history for each event.
    _by_year: dict[int, dict[str, EmissionLine]] | None = field(default=None, repr=False, compare=False)
    _years: dict[int, YearEmissions] = field(default_factory=dict, repr=False, compare=False)
    _sums: dict[int, _LineSums] = field(default_factory=dict, repr=False, compare=False)  # added to as lines come
    _activity: dict[int, Activity | None] = field(default_factory=dict, repr=False, compare=False)
    # Each activity and current line as stored, in their mappings' order (kept in step once built), so
    # storing the facts again after an append does not encode the whole history again.
    _stored_parts: _StoredParts | None = field(default=None, repr=False, compare=False)
    # How often the registration and each year's facts changed, and the last rating with the revisions
    # it read: an instant that touched none of them rates the same, so it is not rated again.
    _registrations: int = field(default=0, repr=False, compare=False)
    _revisions: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _rated: _RatingMemo | None = field(default=None, repr=False, compare=False)

    def lines_of(self, year: int) -> Iterable[EmissionLine]:
        return self._lines_by_year().get(year, {}).values()

    def line_years(self) -> Iterable[int]:
        return (y for y, lines in self._lines_by_year().items() if lines)

    def _lines_by_year(self) -> dict[int, dict[str, EmissionLine]]:
        if self._by_year is None:
            self._by_year = {}
            for event_id, line in self.lines.items():
                self._by_year.setdefault(period_year(line.period), {})[event_id] = line
        return self._by_year

    def _touch(self, year: int) -> None:
        self._revisions[year] = self._revisions.get(year, 0) + 1

    def line_sums(self, year: int) -> _LineSums:
        if (sums := self._sums.get(year)) is None:
            sums = self._sums[year] = _LineSums()
            for line in self.lines_of(year):
                sums.add(line)
        return sums

    def _add_line(self, event_id: str, line: EmissionLine) -> None:
        self.lines[event_id] = line
        if self._stored_parts is not None:
            self._stored_parts.lines[event_id] = _stored_part(event_id, _line_doc(line))
        year = period_year(line.period)
        self._touch(year)
        self._years.pop(year, None)
        if (sums := self._sums.get(year)) is not None:
            sums.add(line)
        if self._by_year is not None:
            self._by_year.setdefault(year, {})[event_id] = line

    def _drop_line(self, event_id: str) -> None:
        line = self.lines.pop(event_id, None)
        if self._stored_parts is not None:
            self._stored_parts.lines.pop(event_id, None)
        if line is not None:
            year = period_year(line.period)
            self._touch(year)
            self._years.pop(year, None)
            self._sums.pop(year, None)  # summed again from the lines left
            if self._by_year is not None:
                self._by_year.get(year, {}).pop(event_id, None)

    def apply(self, event_type: str, data: Any, event_id: str) -> bool:
        """Evolve by one event (typed ``data`` from ``contracts``); False when the rating cannot change."""
        match event_type:
            case "EnterpriseRegistered":
                self.name, self.industry = data.name, data.industry
                self._registrations += 1
            case "ActivityReported":
                # A later report for the same period is a correction.
                self.activities[data.period] = reported = Activity(data.revenue_10k_cny, data.output.quantity,
                                                                   data.output.unit)
                if self._stored_parts is not None:  # a correction keeps its place, in both mappings
                    self._stored_parts.activities[data.period] = _stored_part(data.period, _activity_doc(reported))
                self._touch(period_year(data.period))
                self._activity.pop(period_year(data.period), None)
            case "EmissionRecorded":
                if data.supersedes is not None:
                    self._drop_line(str(data.supersedes))
                self._add_line(event_id, EmissionLine(data.period, data.scope, data.tco2e, data.data_quality))
                for period, verification in self.verifications.items():
                    if periods_overlap(period, data.period):  # also a year's line against a quarter's check
                        verification.stale = True  # the same year as the line's: its figures are gone already
            case "EmissionVerified":
                self.verifications[data.period] = Verification(data.verified_tco2e, data.verifier, data.report_ref)
                self._touch(period_year(data.period))
                self._years.pop(period_year(data.period), None)
            case "ReductionRecorded":
                # A new recording replaces the unit, and with it any verification of the old figure.
                self.reductions.setdefault(data.project_id, {})[data.period] = ReductionUnit(data.reduction_tco2e)
                self._touch(period_year(data.period))
            case "ReductionVerified":
                self._touch(period_year(data.period))
                unit = self.reductions.setdefault(data.project_id, {}).get(data.period)
                if unit is None:  # the account refuses this; keep the verified figure rather than fail
                    unit = self.reductions[data.project_id][data.period] = ReductionUnit(data.verified_reduction_tco2e)
                unit.verified_tco2e, unit.verifier, unit.report_ref = (
                    data.verified_reduction_tco2e, data.verifier, data.report_ref)
            case "CreditsRetired":
                self.retirements.append(Retirement(str(data.asset), data.batch, data.quantity_t, data.period,
                                                   data.retirement_ref))
                self._touch(period_year(data.period))
            case _:
                return False
        return True

    # Stored as JSON in the projection; decimals as strings so nothing is rounded on the way.
    def stored(self) -> bytes:
        """The facts as stored: compact JSON, which ``from_json`` reads back."""
        if self._stored_parts is None:
            self._stored_parts = _StoredParts(
                {p: _stored_part(p, _activity_doc(a)) for p, a in self.activities.items()},
                {k: _stored_part(k, _line_doc(line)) for k, line in self.lines.items()})
        return orjson.dumps({
            "enterprise_id": self.enterprise_id, "name": self.name, "industry": self.industry,
            "activities": _stored_object(self._stored_parts.activities),
            "lines": _stored_object(self._stored_parts.lines),
            "verifications": {p: [_d(v.verified_tco2e), v.verifier, v.report_ref, v.stale]
                              for p, v in self.verifications.items()},
            "reductions": {project: {p: [_d(u.recorded_tco2e), _d(u.verified_tco2e), u.verifier, u.report_ref]
                                     for p, u in units.items()} for project, units in self.reductions.items()},
            "retirements": [[r.asset, r.batch, _d(r.quantity_t), r.period, r.retirement_ref] for r in self.retirements],
        })

    def to_json(self) -> dict[str, Any]:
        return orjson.loads(self.stored())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Facts:
        def d(x: str | None) -> Decimal | None:
            return None if x is None else Decimal(x)

        return cls(
            enterprise_id=doc["enterprise_id"], name=doc["name"], industry=doc["industry"],
            activities={p: Activity(Decimal(r), Decimal(q), u) for p, (r, q, u) in doc["activities"].items()},
            lines={k: EmissionLine(p, s, Decimal(t), q) for k, (p, s, t, q) in doc["lines"].items()},
            verifications={p: Verification(Decimal(t), who, ref, stale)
                           for p, (t, who, ref, stale) in doc["verifications"].items()},
            reductions={project: {p: ReductionUnit(Decimal(r), d(v), who, ref) for p, (r, v, who, ref) in units.items()}
                        for project, units in doc["reductions"].items()},
            retirements=[Retirement(a, b, Decimal(q), p, ref) for a, b, q, p, ref in doc["retirements"]],
        )


@dataclass(slots=True)
class _LineSums:
    """A year's current lines summed: scope 1 and 2 (with their months and quality), and scope 3."""

    reported: Decimal = ZERO
    scope3: Decimal = ZERO
    weighted: Decimal = ZERO  # tco2e × data_quality
    quality_sum: int = 0
    direct: int = 0  # scope 1 and 2 lines
    months: set[int] = field(default_factory=set)

    def add(self, line: EmissionLine) -> None:
        if line.scope == 3:
            self.scope3 += line.tco2e
            return
        self.direct += 1
        self.reported += line.tco2e
        self.weighted += line.tco2e * line.data_quality
        self.quality_sum += line.data_quality
        self.months.update(period_months(line.period))


@dataclass(slots=True)
class _StoredParts:
    """``"key":[…]`` of each activity and each current line, encoded."""

    activities: dict[str, bytes]
    lines: dict[str, bytes]


def _d(x: Decimal | None) -> str | None:
    return None if x is None else format(x, "f")


def _activity_doc(a: Activity) -> list[Any]:
    return [_d(a.revenue_10k_cny), _d(a.output_quantity), a.output_unit]


def _line_doc(line: EmissionLine) -> list[Any]:
    return [line.period, line.scope, format(line.tco2e, "f"), line.data_quality]


def _stored_part(key: str, doc: list[Any]) -> bytes:
    return orjson.dumps({key: doc})[1:-1]


def _stored_object(parts: dict[str, bytes]) -> orjson.Fragment:
    return orjson.Fragment(b"{" + b",".join(parts.values()) + b"}")


def fold(enterprise_id: str, events: Iterable[tuple[str, Any, str]]) -> Facts:
    """Facts after (type, typed data, event id) in stream order."""
    facts = Facts(enterprise_id)
    for event_type, data, event_id in events:
        facts.apply(event_type, data, event_id)
    return facts


# ---- yearly figures --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifiedFigure:
    tco2e: Decimal
    verifiers: tuple[str, ...]
    reports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class YearEmissions:
    year: int
    reported_tco2e: Decimal  # scope 1 and 2, current lines
    scope3_tco2e: Decimal
    months: frozenset[int]  # covered by scope 1 and 2 lines
    weighted_quality: Decimal | None  # emission-weighted data_quality of the lines (1 estimated … 5 measured)
    verified: VerifiedFigure | None  # a current verification covering the whole year
    stale_verification: bool  # a verification of the year exists but emissions were recorded after it

    @property
    def complete(self) -> bool:
        return len(self.months) == 12

    @property
    def uses_verified(self) -> bool:
        # A verified total that includes scope 3 cannot stand in for the scope 1 and 2 figure.
        return self.verified is not None and self.scope3_tco2e == 0

    @property
    def tco2e(self) -> Decimal:
        return self.verified.tco2e if self.uses_verified and self.verified else self.reported_tco2e


def verified_emissions(facts: Facts, year: int) -> VerifiedFigure | None:
    """A current verification of the whole year: annual, or sub-periods covering each month exactly once."""
    current = {p: v for p, v in facts.verifications.items() if not v.stale and period_year(p) == year}
    chosen = [current[str(year)]] if str(year) in current else []
    if not chosen:
        covered = Counter(m for p in current for m in period_months(p))
        if sorted(covered) == list(range(1, 13)) and set(covered.values()) == {1}:
            chosen = [current[p] for p in sorted(current)]
    if not chosen:
        return None
    return VerifiedFigure(sum((v.verified_tco2e for v in chosen), ZERO), tuple(v.verifier for v in chosen),
                          tuple(v.report_ref for v in chosen))


def year_emissions(facts: Facts, year: int) -> YearEmissions:
    if (known := facts._years.get(year)) is None:
        known = facts._years[year] = _year_emissions(facts, year)
    return known


def _year_emissions(facts: Facts, year: int) -> YearEmissions:
    sums = facts.line_sums(year)
    if not sums.direct:
        quality = None
    elif sums.reported > 0:
        quality = sums.weighted / sums.reported
    else:
        quality = Decimal(sums.quality_sum) / sums.direct
    verified = verified_emissions(facts, year)
    stale = verified is None and any(v.stale for p, v in facts.verifications.items() if period_year(p) == year)
    return YearEmissions(year, sums.reported, sums.scope3, frozenset(sums.months), quality, verified, stale)


def year_activity(facts: Facts, year: int) -> Activity | None:
    """The year's revenue and output: an annual report, else four quarters, else twelve months."""
    if year not in facts._activity:
        facts._activity[year] = _year_activity(facts, year)
    return facts._activity[year]


def _year_activity(facts: Facts, year: int) -> Activity | None:
    if (annual := facts.activities.get(str(year))) is not None:
        return annual
    for parts in ([f"{year}-Q{q}" for q in range(1, 5)], [f"{year}-{m:02d}" for m in range(1, 13)]):
        reports = [facts.activities.get(p) for p in parts]
        if all(r is not None for r in reports):
            units = {r.output_unit.casefold() for r in reports}  # type: ignore[union-attr]
            same_unit = len(units) == 1
            return Activity(
                sum((r.revenue_10k_cny for r in reports), ZERO),  # type: ignore[union-attr]
                sum((r.output_quantity for r in reports), ZERO) if same_unit else ZERO,  # type: ignore[union-attr]
                reports[0].output_unit if same_unit else "",  # type: ignore[union-attr]
            )
    return None


@dataclass(frozen=True, slots=True)
class Intensity:
    basis: str  # "output" | "revenue"
    value: Decimal  # tCO2e per denominator unit
    unit: str  # e.g. "tCO2e/t", "tCO2e/10k CNY"
    benchmark: Decimal | None = None


def intensity(tco2e: Decimal, activity: Activity, benchmark: Benchmark, basis: str | None = None) -> Intensity | None:
    """Physical output where the benchmark has it in the same unit (prices do not move it); else revenue."""
    if basis in (None, "output") and benchmark.per_output is not None and benchmark.output_unit is not None \
            and activity.output_unit.casefold() == benchmark.output_unit.casefold() and activity.output_quantity > 0:
        return Intensity("output", tco2e / activity.output_quantity, f"tCO2e/{benchmark.output_unit}",
                         benchmark.per_output)
    if basis in (None, "revenue") and benchmark.per_10k_cny is not None and activity.revenue_10k_cny > 0:
        return Intensity("revenue", tco2e / activity.revenue_10k_cny, "tCO2e/10k CNY", benchmark.per_10k_cny)
    return None


# ---- the rating ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Factor:
    name: str
    value: str | None
    benchmark: str | None
    unit: str
    points: int
    max_points: int
    explanation: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "benchmark": self.benchmark, "unit": self.unit,
                "points": self.points, "max_points": self.max_points, "explanation": self.explanation,
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Missing:
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Rating:
    enterprise_id: str
    status: str  # rated | not_rated
    grade: str | None
    score: int | None
    period: str | None  # the calendar year rated
    factors: tuple[Factor, ...]
    missing: tuple[Missing, ...]
    benchmark: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "enterprise_id": self.enterprise_id, "status": self.status, "grade": self.grade, "score": self.score,
            "methodology_version": METHODOLOGY_VERSION, "period": self.period,
            "factors": [f.to_dict() for f in self.factors], "missing": [m.to_dict() for m in self.missing],
            "benchmark": self.benchmark,
        }


def _q(x: Decimal, places: Decimal = FOUR_PLACES) -> Decimal:
    return x.quantize(places, rounding=ROUND_HALF_UP)


def _s(x: Decimal, places: Decimal = SIX_PLACES) -> str:
    return format(_q(x, places), "f")


def _t(x: Decimal) -> str:
    """Tonnes as a plain decimal string without trailing zeros."""
    return format(x.normalize(), "f") if x else "0"


def _n(x: Decimal, places: int = 0) -> str:
    """For sentences: thousands separators, a few decimals."""
    return f"{_q(x, Decimal(1).scaleb(-places)):,.{places}f}"


def _pct(ratio: Decimal) -> str:
    return f"{_q(ratio * 100, Decimal('0.1')):,.1f} %"


def _unit_label(i: Intensity) -> str:
    return "10,000 CNY of revenue" if i.basis == "revenue" else f"{i.unit.split('/', 1)[1]} of output"


@dataclass(frozen=True, slots=True)
class _RatingMemo:
    rating: Rating
    year: int  # the year rated
    at_year: int
    benchmarks: BenchmarkTable
    read: tuple[int, ...]  # _revisions_read when rated


def _revisions_read(facts: Facts, year: int) -> tuple[int, int, int]:
    """What a rating of ``year`` reads: the registration, the year before it (the trend) and the year."""
    revisions = facts._revisions
    return facts._registrations, revisions.get(year - 1, 0), revisions.get(year, 0)


def _qualifies(facts: Facts, year: int) -> bool:
    """Whether a year can be rated: its emissions cover all twelve months and its activity is known."""
    return year_emissions(facts, year).complete and year_activity(facts, year) is not None


def rate(facts: Facts, at: datetime, benchmarks: BenchmarkTable) -> Rating:
    """The rating from what was known at ``at``: the latest calendar year ended by ``at`` with complete data."""
    memo = facts._rated
    # The same answer while the year rated, the one before it and the registration are as they were, and
    # no later ended year has become ratable (a long history of quarters is mostly such instants).
    if memo is not None and memo.at_year == at.year and memo.benchmarks is benchmarks \
            and memo.read == _revisions_read(facts, memo.year) \
            and not any(_qualifies(facts, y) for y in facts.line_years() if memo.year < y < at.year):
        return memo.rating
    rating = _rate(facts, at, benchmarks)
    if rating.period is not None:
        year = int(rating.period)
        facts._rated = _RatingMemo(rating, year, at.year, benchmarks, _revisions_read(facts, year))
    return rating


def _rate(facts: Facts, at: datetime, benchmarks: BenchmarkTable) -> Rating:
    missing: list[Missing] = []
    if facts.industry is None:
        missing.append(Missing("registration", "the account's registration (industry) has not been received"))
    years = sorted(facts.line_years(), reverse=True)
    # A year still running cannot be complete, whatever was recorded for it in advance.
    ended = [y for y in years if y < at.year]
    complete = [y for y in ended if year_emissions(facts, y).complete]
    year = next((y for y in complete if _qualifies(facts, y)), None)
    if not complete:
        detail = "no ended calendar year has scope 1 and 2 emissions recorded for all twelve months"
        if ended:
            detail += f" ({ended[0]} covers {len(year_emissions(facts, ended[0]).months)} of 12 months)"
        elif years:
            detail += f" ({years[0]} has not ended yet)"
        missing.append(Missing("emissions", detail))
    elif year is None:
        missing.append(Missing("activity", f"no revenue or output reported for {complete[0]} "
                                           "(an annual report, four quarters or twelve months)"))
    benchmark = None
    if facts.industry is not None:
        lookup_year = year or (complete[0] if complete else at.year)
        benchmark = benchmarks.lookup(facts.industry, lookup_year)
        if benchmark is None:
            missing.append(Missing("industry_benchmark",
                                   f"no benchmark for industry {facts.industry} in {lookup_year} or earlier"))
    current_intensity = None
    if not missing:
        assert year is not None and benchmark is not None
        emissions = year_emissions(facts, year)
        activity = year_activity(facts, year)
        assert activity is not None
        current_intensity = intensity(emissions.tco2e, activity, benchmark)
        if current_intensity is None:
            wanted = "revenue above zero"
            if benchmark.per_output is not None:
                wanted += f" or output in {benchmark.output_unit}"
            missing.append(Missing("intensity_denominator", f"{year} activity lacks {wanted}"))
    if missing:
        return Rating(facts.enterprise_id, "not_rated", None, None, None, (), tuple(missing), None)

    assert year is not None and benchmark is not None and current_intensity is not None
    emissions = year_emissions(facts, year)
    factors = (
        _carbon_efficiency(current_intensity, benchmark, year),
        _trend(facts, year, current_intensity, benchmark),
        _data_quality(emissions),
        _neutralisation(facts, year, emissions.tco2e),
        _verified_reductions(facts, year, emissions.tco2e),
    )
    score = sum(f.points for f in factors)
    described = {"industry": benchmark.industry, "name": benchmark.name, "year": benchmark.year,
                 "table_version": benchmarks.version, "sources": list(benchmark.sources)}
    return Rating(facts.enterprise_id, "rated", grade_for(score), score, str(year), factors, (), described)


def _carbon_efficiency(i: Intensity, benchmark: Benchmark, year: int) -> Factor:
    assert i.benchmark is not None
    k = _q(i.value / i.benchmark)
    level, band = k_level(k)
    year_note = "" if benchmark.year == year else f", the latest on file for {year}"
    explanation = (f"Emits {_n(i.value, 4)} tCO2e per {_unit_label(i)}: {k.normalize():f} times the "
                   f"{benchmark.name} benchmark of {_n(i.benchmark, 4)} ({benchmark.year}{year_note}); "
                   f"carbon-efficiency {band.label}.")
    return Factor("carbon_efficiency", _s(i.value), _s(i.benchmark), i.unit, band.points,
                  MAX_POINTS["carbon_efficiency"], explanation,
                  {"ratio": format(k, "f"), "level": level, "basis": i.basis, "benchmark_year": benchmark.year})


def _trend(facts: Facts, year: int, current: Intensity, benchmark: Benchmark) -> Factor:
    previous_emissions = year_emissions(facts, year - 1)
    previous_activity = year_activity(facts, year - 1)
    previous = None
    if previous_emissions.complete and previous_activity is not None:
        previous = intensity(previous_emissions.tco2e, previous_activity, benchmark, basis=current.basis)
    if previous is None:
        return Factor("trend", _s(current.value), None, current.unit, 0, MAX_POINTS["trend"],
                      f"No complete {year - 1} figures on the same basis to compare with, so no credit for improvement.",
                      {"change": None, "previous_year": year - 1})
    if previous.value == 0:
        change = ZERO if current.value == 0 else None
    else:
        change = _q((current.value - previous.value) / previous.value)
    if change is None:
        band = TREND_BANDS[-1]
        moved = "rose from zero"
    else:
        band = _band_at_most(change, TREND_BANDS)
        moved = ("fell" if change < 0 else "rose" if change > 0 else "did not change") + (
            f" {_pct(abs(change))}" if change else "")
    explanation = (f"Intensity {moved} from {_n(previous.value, 4)} in {year - 1} to {_n(current.value, 4)} "
                   f"{current.unit} in {year}: {band.label}.")
    return Factor("trend", _s(current.value), _s(previous.value), current.unit, band.points, MAX_POINTS["trend"],
                  explanation, {"change": None if change is None else format(change, "f"), "previous_year": year - 1})


def _data_quality(emissions: YearEmissions) -> Factor:
    verified = emissions.verified is not None
    score = pcaf_score(verified, emissions.weighted_quality)
    year = emissions.year
    if verified:
        assert emissions.verified is not None
        who = ", ".join(sorted(set(emissions.verified.verifiers)))
        reports = ", ".join(emissions.verified.reports)
        explanation = f"{year} emissions verified by {who} (report {reports}): data quality 1 of 5, the best."
        if not emissions.uses_verified:
            explanation += " The verified total includes scope 3, so the rating uses the recorded scope 1 and 2 figure."
    else:
        quality = "none" if emissions.weighted_quality is None else _n(emissions.weighted_quality, 1)
        prefix = (f"The {year} verification is out of date (emissions were recorded after it)"
                  if emissions.stale_verification else f"{year} emissions are not verified")
        explanation = (f"{prefix}; the records' own quality averages {quality} of 5: data quality {score} of 5, "
                       f"{QUALITY_LABELS[score]}.")
    detail = {"verified": verified, "stale_verification": emissions.stale_verification,
              "records_quality": None if emissions.weighted_quality is None else _s(emissions.weighted_quality, FOUR_PLACES),
              "emissions_tco2e": _t(emissions.tco2e), "emissions_source": "verified" if emissions.uses_verified else "recorded"}
    return Factor("data_quality", str(score), "1", "PCAF-style score, 1 best to 5 worst", QUALITY_POINTS[score],
                  MAX_POINTS["data_quality"], explanation, detail)


def _neutralisation(facts: Facts, year: int, emitted: Decimal) -> Factor:
    retired = sum((r.quantity_t for r in facts.retirements if period_year(r.period) == year), ZERO)
    if emitted > 0:
        ratio = _q(retired / emitted)
    else:
        ratio = Decimal(1)  # nothing to neutralise
    band = _band_at_least(ratio, NEUTRALISATION_BANDS, retired)
    if retired > 0:
        explanation = (f"Retired {_n(retired, 1)} t of credits against {year} emissions of {_n(emitted, 1)} tCO2e, "
                       f"covering {_pct(ratio)}: {band.label}.")
    else:
        explanation = f"No credits retired against {year} emissions of {_n(emitted, 1)} tCO2e: {band.label}."
    return Factor("neutralisation", _t(retired), _t(emitted), "tCO2e", band.points, MAX_POINTS["neutralisation"],
                  explanation, {"ratio": format(ratio, "f")})


def _verified_reductions(facts: Facts, year: int, emitted: Decimal) -> Factor:
    verified = unverified = ZERO
    for project in facts.reductions:
        figure = project_year_reduction(facts, project, year)
        verified += figure.verified_tco2e
        unverified += figure.unverified_tco2e
    if emitted > 0:
        ratio = _q(verified / emitted)
    else:
        ratio = Decimal(1) if verified > 0 else ZERO
    band = _band_at_least(ratio, REDUCTION_BANDS, verified)
    if verified > 0:
        explanation = (f"Verified project reductions of {_n(verified, 1)} tCO2e in {year}, {_pct(ratio)} of its "
                       f"emissions: {band.label}.")
    else:
        explanation = f"No verified project reductions in {year}."
    if unverified > 0:
        explanation += f" A further {_n(unverified, 1)} tCO2e recorded but not verified does not count."
    return Factor("verified_reductions", _t(verified), _t(emitted), "tCO2e", band.points,
                  MAX_POINTS["verified_reductions"], explanation,
                  {"ratio": format(ratio, "f"), "unverified_tco2e": _t(unverified)})


@dataclass(frozen=True, slots=True)
class ProjectYear:
    verified_tco2e: Decimal
    unverified_tco2e: Decimal  # recorded reductions without a verification
    periods: tuple[str, ...]  # the verified periods counted


def project_year_reduction(facts: Facts, project_id: str, year: int) -> ProjectYear:
    """Verified reduction of a project in a year, counting no month twice: annual, else quarters, else months."""
    units = {p: u for p, u in facts.reductions.get(project_id, {}).items() if period_year(p) == year}
    verified = {p: u for p, u in units.items() if u.verified_tco2e is not None}
    counted: list[str] = []
    if str(year) in verified:
        counted = [str(year)]
    else:
        taken: set[int] = set()
        for p in sorted(verified, key=lambda p: (-len(period_months(p)), p)):  # quarters before months
            months = period_months(p)
            if not months & taken:
                counted.append(p)
                taken |= months
    verified_total = sum((verified[p].verified_tco2e for p in counted), ZERO)  # type: ignore[misc]
    covered = {m for p in counted for m in period_months(p)}
    unverified = sum((u.recorded_tco2e for p, u in units.items()
                      if u.verified_tco2e is None and not period_months(p) <= covered), ZERO)
    return ProjectYear(verified_total, unverified, tuple(counted))


# ---- pricing ------------------------------------------------------------------------------------

def price_answer(rating: dict[str, Any], product: str, pricing, issued_at: datetime) -> dict[str, Any]:
    """The tier and adjustment for a stored rating (``pricing`` is a ``config.PricingTable``)."""
    table = pricing.products[product]
    tier, adjustment = table.price(rating["grade"])
    valid_until = issued_at + timedelta(days=pricing.validity_days)
    if rating["grade"] is None:
        explanation = (f"Not rated, so tier {tier} applies: {adjustment:+d} bp on the ordinary rate "
                       f"(no green discount without a rating).")
    else:
        explanation = (f"Grade {rating['grade']} (score {rating['score']}) falls in tier {tier}: "
                       f"{adjustment:+d} bp on the bank's ordinary {product.replace('_', '-')} rate.")
    return {"enterprise_id": rating["enterprise_id"], "product": product, "status": rating["status"],
            "grade": rating["grade"], "score": rating["score"], "tier": tier, "adjustment_bp": adjustment,
            "valid_until": valid_until, "pricing_table_version": pricing.version,
            "methodology_version": rating["methodology_version"], "explanation": explanation}


# ---- carbon-reduction bill re-discount eligibility -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bill:
    bill_no: str
    amount_cny: Decimal
    maturity: date
    project_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    met: bool
    detail: str
    bill_no: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "met": self.met, "detail": self.detail}
        if self.bill_no is not None:
            out["bill_no"] = self.bill_no
        return out


@dataclass(frozen=True, slots=True)
class Attributable:
    """Verified tonnes of one project in one year: the unit a claim reserves."""

    project_id: str
    year: int
    verified_reduction_tco2e: Decimal
    periods: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"project_id": self.project_id, "year": self.year,
                "verified_reduction_tco2e": _t(self.verified_reduction_tco2e), "periods": list(self.periods)}


@dataclass(frozen=True, slots=True)
class Eligibility:
    eligible: bool
    reasons: tuple[Reason, ...]
    grade: str | None
    estimated_reduction_tco2e: Decimal
    attributable: tuple[Attributable, ...]


def account_current_years(today: date) -> tuple[int, int]:
    """The two most recent complete calendar years."""
    return today.year - 1, today.year - 2


def assess_eligibility(facts: Facts, grade: str | None, bills: Sequence[Bill], today: date, terms: RediscountTerms,
                       reserved: Iterable[tuple[str, int]]) -> Eligibility:
    """Every condition of carbon-reduction bill re-discounting, each with whether it is met and why."""
    reserved_units = set(reserved)
    reasons: list[Reason] = []
    threshold = terms.threshold_grade
    if grade is None:
        reasons.append(Reason("grade_threshold", False, f"not rated; the threshold is {threshold}"))
    else:
        met = grade_rank(grade) <= grade_rank(threshold)
        reasons.append(Reason("grade_threshold", met,
                              f"grade {grade} {'meets' if met else 'is below'} the threshold {threshold}"))
    recent = account_current_years(today)
    verified_years = [y for y in recent if verified_emissions(facts, y) is not None]
    if verified_years:
        reasons.append(Reason("account_current", True, f"verified emissions for {verified_years[0]}"))
    else:
        reasons.append(Reason("account_current", False, f"no current verified emissions for {recent[0]} or {recent[1]}"))

    attributable: dict[tuple[str, int], Attributable] = {}
    for bill in bills:
        matured = bill.maturity <= today
        reasons.append(Reason("bill_unmatured", not matured,
                              f"matures {bill.maturity.isoformat()}" + (" (already matured)" if matured else ""),
                              bill.bill_no))
        project = bill.project_id
        units = facts.reductions.get(project or "", {})
        if project is None:
            reasons.append(Reason("reduction_recorded", False, "the bill names no carbon-reduction project", bill.bill_no))
            continue
        reasons.append(Reason("reduction_recorded", bool(units),
                              f"project {project}: " + (f"reductions recorded for {', '.join(sorted(units))}"
                                                        if units else "no reduction recorded"), bill.bill_no))
        years = sorted({period_year(p) for p in units})
        figures = {y: project_year_reduction(facts, project, y) for y in years}
        verified = {y: f for y, f in figures.items() if f.verified_tco2e > 0}
        total_verified = sum((f.verified_tco2e for f in verified.values()), ZERO)
        reasons.append(Reason("reduction_verified", bool(verified),
                              f"project {project}: " + (f"{_n(total_verified, 1)} tCO2e verified" if verified
                                                        else "no verified reduction"), bill.bill_no))
        free = {y: f for y, f in verified.items() if (project, y) not in reserved_units}
        taken = sorted(set(verified) - set(free))
        if free:
            detail = f"project {project}: {_n(sum((f.verified_tco2e for f in free.values()), ZERO), 1)} tCO2e unclaimed"
            if taken:
                detail += f" (already claimed: {', '.join(map(str, taken))})"
        elif taken:
            detail = f"project {project}: the verified reduction of {', '.join(map(str, taken))} is already claimed"
        else:
            detail = f"project {project}: nothing verified to claim"
        reasons.append(Reason("reduction_unclaimed", bool(free), detail, bill.bill_no))
        for y, f in free.items():
            attributable[(project, y)] = Attributable(project, y, f.verified_tco2e, f.periods)

    eligible = all(r.met for r in reasons)
    units = tuple(attributable[k] for k in sorted(attributable))
    estimate = sum((u.verified_reduction_tco2e for u in units), ZERO)
    return Eligibility(eligible, tuple(reasons), grade, estimate, units)


# ---- the published methodology -----------------------------------------------------------------

def _bands(bands: Sequence[Band], measure: str, comparison: str) -> list[dict[str, Any]]:
    def rule(b: Band) -> str:
        if b.bound is None:
            return "otherwise"
        if b.bound == 0 and comparison == "≥":
            return f"{measure} > 0"
        return f"{measure} {comparison} {format(b.bound, 'f')}"

    return [{"bound": None if b.bound is None else format(b.bound, "f"), "rule": rule(b), "points": b.points,
             "label": b.label} for b in bands]


def describe(benchmarks: BenchmarkTable, pricing, terms: RediscountTerms) -> dict[str, Any]:
    """The methodology as data, for ``GET /v1/methodology``."""
    return {
        "version": METHODOLOGY_VERSION,
        "name": METHODOLOGY_NAME,
        "document": "docs/methodology.md",
        "rated_period": "the latest calendar year ended before the moment rated with scope 1 and 2 emissions "
                        "recorded for all twelve months and revenue or output reported",
        "score": "sum of the factors' points, 0-100",
        "grade_bands": [{"grade": g, "min_score": s} for g, s in GRADE_BANDS],
        "factors": [
            {"name": "carbon_efficiency", "max_points": MAX_POINTS["carbon_efficiency"],
             "measures": "K = enterprise intensity / industry benchmark intensity for the same year; intensity in "
                         "tCO2e per unit of output where the benchmark has that unit, else per 10,000 CNY of revenue",
             "bands": [{"level": n, **b} for n, b in enumerate(_bands(K_LEVELS, "K", "≤"), start=1)]},
            {"name": "trend", "max_points": MAX_POINTS["trend"],
             "measures": "year-on-year change of intensity on the same basis; no prior year earns nothing",
             "bands": _bands(TREND_BANDS, "change", "≤")},
            {"name": "data_quality", "max_points": MAX_POINTS["data_quality"],
             "measures": "PCAF-style score: 1 when a current third-party verification covers the year, else "
                         "from the emission-weighted data_quality of the records",
             "bands": [{"score": s, "points": QUALITY_POINTS[s], "label": QUALITY_LABELS[s]} for s in range(1, 6)]},
            {"name": "neutralisation", "max_points": MAX_POINTS["neutralisation"],
             "measures": "credits retired for the year / the year's emissions",
             "bands": _bands(NEUTRALISATION_BANDS, "ratio", "≥")},
            {"name": "verified_reductions", "max_points": MAX_POINTS["verified_reductions"],
             "measures": "verified project reductions in the year / the year's emissions",
             "bands": _bands(REDUCTION_BANDS, "ratio", "≥")},
        ],
        "not_rated": ["registration", "emissions", "activity", "industry_benchmark", "intensity_denominator"],
        "benchmarks": benchmarks.model_dump(mode="json"),
        "pricing": pricing.model_dump(mode="json"),
        "rediscount": terms.model_dump(mode="json"),
    }
