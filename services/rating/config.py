"""Reference data the rating service reads at start: industry benchmarks, pricing tables, re-discount terms.

Each lives in a JSON file (defaults under ``services/rating/data/``; other paths through the settings),
so a bank or a regulator can update its figures without a code change. Files are validated whole
when loaded: a table that breaks a rule (a better grade paying more, a benchmark without a source)
stops the service from starting instead of pricing a loan on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from contracts.types import IndustryCode

DATA_DIR = Path(__file__).resolve().parent / "data"
BENCHMARKS_FILE = DATA_DIR / "benchmarks.json"
PRICING_FILE = DATA_DIR / "pricing.json"
REDISCOUNT_FILE = DATA_DIR / "rediscount.json"

# Best first; the methodology's grade bands use the same order.
GRADES: tuple[str, ...] = ("AAA", "AA", "A", "BBB", "BB", "B", "CCC", "CC", "C")
PRODUCTS: tuple[str, ...] = ("loan", "bill_discount")


def _positive_decimal(value: object) -> Decimal:
    if isinstance(value, (float, bool)) or not isinstance(value, (str, int, Decimal)):
        raise ValueError('write decimals as strings, e.g. "0.57"')
    number = Decimal(str(value))
    if not number.is_finite() or number <= 0:
        raise ValueError("must be a positive number")
    return number


PositiveDecimal = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Benchmark(_Strict):
    """The industry's average carbon intensity in one year, per 10k CNY of revenue and/or per unit of output."""

    industry: IndustryCode
    name: str = Field(min_length=1, max_length=200)
    year: int = Field(ge=1990, le=2100)
    per_10k_cny: PositiveDecimal | None = Field(default=None, description="tCO2e per 10,000 CNY of revenue")
    per_output: PositiveDecimal | None = Field(default=None, description="tCO2e per output_unit")
    output_unit: str | None = Field(default=None, min_length=1, max_length=32)
    scope: str = Field(default="scope 1 and 2", max_length=64)
    sources: list[str] = Field(min_length=1)

    @field_validator("per_10k_cny", "per_output", mode="before")
    @classmethod
    def _decimal(cls, value: object) -> Decimal | None:
        return None if value is None else _positive_decimal(value)

    @model_validator(mode="after")
    def _has_an_intensity(self) -> Benchmark:
        if self.per_10k_cny is None and self.per_output is None:
            raise ValueError("a benchmark needs per_10k_cny, per_output, or both")
        if (self.per_output is None) != (self.output_unit is None):
            raise ValueError("per_output and output_unit go together")
        if any(not s.strip() for s in self.sources):
            raise ValueError("sources must not be blank")
        return self


class BenchmarkTable(_Strict):
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    benchmarks: list[Benchmark] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> BenchmarkTable:
        seen: set[tuple[str, int]] = set()
        for b in self.benchmarks:
            if (b.industry, b.year) in seen:
                raise ValueError(f"two benchmarks for industry {b.industry} in {b.year}")
            seen.add((b.industry, b.year))
        return self

    def lookup(self, industry: str, year: int) -> Benchmark | None:
        """The most specific GB/T 4754 code with a benchmark (C3011, then C301, C30, C), latest year ≤ ``year``."""
        for length in range(len(industry), 0, -1):
            code = industry[:length]
            candidates = [b for b in self.benchmarks if b.industry == code and b.year <= year]
            if candidates:
                return max(candidates, key=lambda b: b.year)
        return None


class ProductPricing(_Strict):
    description: str = ""
    tiers: dict[str, int] = Field(min_length=1, description="tier → adjustment in basis points, added to the ordinary rate")
    grades: dict[str, str] = Field(description="grade → tier")
    not_rated: str = Field(description="tier applied when the enterprise has no rating")

    @model_validator(mode="after")
    def _complete_and_monotonic(self) -> ProductPricing:
        if set(self.grades) != set(GRADES):
            raise ValueError(f"every grade must be priced exactly once: {', '.join(GRADES)}")
        for tier in [*self.grades.values(), self.not_rated]:
            if tier not in self.tiers:
                raise ValueError(f"tier {tier!r} is not defined")
        if any(abs(bp) > 1000 for bp in self.tiers.values()):
            raise ValueError("an adjustment beyond ±1000 bp is surely a typo")
        adjustments = [self.tiers[self.grades[g]] for g in GRADES]
        for better, worse, a, b in zip(GRADES, GRADES[1:], adjustments, adjustments[1:]):
            if a > b:
                raise ValueError(f"grade {better} would pay more ({a} bp) than grade {worse} ({b} bp)")
        # Withholding data must never pay: no rating prices no better than the worst grade.
        if self.tiers[self.not_rated] < adjustments[-1]:
            raise ValueError("the not-rated tier must not pay less than the worst grade")
        return self

    def price(self, grade: str | None) -> tuple[str, int]:
        tier = self.grades[grade] if grade is not None else self.not_rated
        return tier, self.tiers[tier]


class PricingTable(_Strict):
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    validity_days: int = Field(ge=1, le=366)
    products: dict[str, ProductPricing]

    @model_validator(mode="after")
    def _products(self) -> PricingTable:
        if set(self.products) != set(PRODUCTS):
            raise ValueError(f"price exactly these products: {', '.join(PRODUCTS)}")
        return self


class RediscountTerms(_Strict):
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    threshold_grade: str
    rediscount_rate: PositiveDecimal = Field(description="annual rate as a fraction, e.g. 0.020 for 2.0 %")

    @field_validator("threshold_grade")
    @classmethod
    def _grade(cls, value: str) -> str:
        if value not in GRADES:
            raise ValueError(f"must be one of {', '.join(GRADES)}")
        return value

    @field_validator("rediscount_rate", mode="before")
    @classmethod
    def _rate(cls, value: object) -> Decimal:
        rate = _positive_decimal(value)
        if rate >= 1:
            raise ValueError("a rate is a fraction below 1 (0.020 for 2.0 %)")
        return rate


class ReferenceDataError(Exception):
    """A reference-data file is missing or breaks a rule; the message names the file."""


def _load(path: Path, model: type[_Strict]):
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValueError as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ReferenceData:
    benchmarks: BenchmarkTable
    pricing: PricingTable
    rediscount: RediscountTerms


def load_reference_data(benchmarks: Path = BENCHMARKS_FILE, pricing: Path = PRICING_FILE,
                        rediscount: Path = REDISCOUNT_FILE) -> ReferenceData:
    return ReferenceData(_load(benchmarks, BenchmarkTable), _load(pricing, PricingTable),
                         _load(rediscount, RediscountTerms))
