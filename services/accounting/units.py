"""Unit conversion for activity data, through one pint registry with the units Chinese reporting uses.

Every magnitude stays a Decimal. Gas volumes are normal cubic metres (0 °C, 101.325 kPa), a dimension
of their own: an actual ``m3`` reading needs a temperature and pressure correction first, so it is
refused rather than silently taken as Nm3.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

import pint

# One plain unit expression, optionally scaled by a power of ten ("10^4 Nm3", "kWh", "t"): bounded so that
# a request cannot make the parser build huge numbers.
_UNIT_RE = re.compile(r"(?:10\^(-?[0-9])\s+)?([A-Za-z][A-Za-z0-9_]{0,15}(?:\s*[*/]\s*[A-Za-z][A-Za-z0-9_]{0,15}){0,2})")

_DEFINITIONS = [
    # Normal cubic metre: gas volume at standard reference conditions.
    "normal_cubic_metre = [normal_volume] = Nm3 = Nm³",
    # GB/T 2589-2020: 1 kgce = 29 307.6 kJ (7 000 kcal).
    "kilogram_coal_equivalent = 29307.6 * kilojoule = kgce",
    "tonne_coal_equivalent = 1000 * kilogram_coal_equivalent = tce",
    "gram_coal_equivalent = 0.001 * kilogram_coal_equivalent = gce",
    # Actual cubic metres, named so that a refusal can say they are not normal cubic metres.
    "m3 = meter ** 3",
]


class UnitError(ValueError):
    """The unit is unknown, or does not convert to the dimension the factor needs."""


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    ureg = pint.UnitRegistry(non_int_type=Decimal, autoconvert_offset_to_baseunit=False, cache_folder=None)
    for definition in _DEFINITIONS:
        ureg.define(definition)
    return ureg


def _parse(unit: str) -> pint.Quantity:
    text = unit.strip()
    match = _UNIT_RE.fullmatch(text)
    if not match:
        raise UnitError(f"{unit!r} is not a unit expression (e.g. 't', 'kg', '10^4 Nm3', 'MWh', 'GJ')")
    ureg = registry()
    try:
        expression = ureg.parse_expression(match[2])
    except (pint.UndefinedUnitError, pint.DefinitionSyntaxError, AttributeError, TypeError, ValueError) as exc:
        raise UnitError(f"{unit!r} is not a known unit") from exc
    if not isinstance(expression, ureg.Quantity):  # a bare number
        raise UnitError(f"{unit!r} is not a unit")
    if match[1] is not None:
        expression = expression * (Decimal(10) ** int(match[1]))
    return expression


def convert(quantity: Decimal, unit: str, target: str) -> Decimal:
    """``quantity`` in ``unit`` expressed in ``target`` (itself possibly scaled, e.g. '10^4 Nm3')."""
    source, goal = _parse(unit), _parse(target)
    if source.dimensionality != goal.dimensionality:
        hint = " (gas volumes are normal cubic metres: Nm3)" if "normal_volume" in str(goal.dimensionality) else ""
        raise UnitError(f"{unit!r} does not convert to {target!r}{hint}")
    ratio = (source / goal).to("dimensionless").magnitude
    return normalise(Decimal(quantity) * Decimal(ratio))


def convertible(unit: str, target: str) -> bool:
    try:
        return _parse(unit).dimensionality == _parse(target).dimensionality
    except UnitError:
        return False


def normalise(value: Decimal) -> Decimal:
    """Drop exponent notation and trailing zeros (1E+3 → 1000) without changing the value."""
    value = value.normalize()
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1))
    return value
