"""Reference tables shared by the services: industry carbon-intensity screening ranges by GB/T 4754 code.

Accounting uses them to flag figures that deserve a second look; rating will use the same ranges as
benchmarks, so the two never disagree about what is typical for an industry.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["IndustryBenchmark", "Range", "benchmark_for", "industry_benchmarks"]

DATA_FILE = Path(__file__).parent / "industry_intensity.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Frozen):
    low: Decimal
    high: Decimal
    unit: str | None = None
    note: str | None = None

    @field_validator("low", "high", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        # A YAML float has already lost the written digits.
        if isinstance(value, float):
            raise ValueError(f"write {value!r} as a quoted decimal string")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not Decimal(0) <= self.low <= self.high:
            raise ValueError(f"a range needs 0 <= low <= high, got {self.low}..{self.high}")
        return self

    def contains(self, value: Decimal) -> bool:
        return self.low <= value <= self.high


class IndustryBenchmark(_Frozen):
    code: str = Field(pattern=r"^[A-T][0-9]{0,4}$")
    name: str
    revenue_intensity: Range | None = None  # tCO2e per 10 000 CNY of revenue
    output_intensity: Range | None = None  # tCO2e per unit of output (Range.unit)
    electricity_share: Range | None = None  # share of electricity in final energy use
    basis: Literal["published", "derived"]
    derivation: str
    sources: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _output_unit(self) -> "IndustryBenchmark":
        if self.output_intensity is not None and not self.output_intensity.unit:
            raise ValueError("an output intensity names its output unit")
        if self.electricity_share is not None and self.electricity_share.high > 1:
            raise ValueError("electricity_share is a fraction")
        return self


@lru_cache(maxsize=1)
def industry_benchmarks() -> dict[str, IndustryBenchmark]:
    content = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    table: dict[str, IndustryBenchmark] = {}
    for raw in content["industries"]:
        benchmark = IndustryBenchmark.model_validate(raw)
        if benchmark.code in table:
            raise ValueError(f"industry {benchmark.code} is listed twice")
        table[benchmark.code] = benchmark
    return table


def benchmark_for(industry: str) -> IndustryBenchmark | None:
    """The benchmark of the longest code prefix of ``industry`` (C3011 → C301 → C30 → C), if any."""
    table = industry_benchmarks()
    for end in range(len(industry), 0, -1):
        found = table.get(industry[:end])
        if found is not None:
            return found
    return None
