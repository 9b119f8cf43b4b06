"""Validated value types of the event contracts.

Every validator raises `PydanticCustomError` so that its message reaches the
caller unchanged (no "Value error, " prefix) and reads as a sentence a person
can act on.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "USCC",
    "USCC_CHARSET",
    "SINGLE_LINE_PATTERN",
    "IndustryCode",
    "RegionCode",
    "Period",
    "Tonnes",
    "PositiveTonnes",
    "Money",
    "NonNegativeDecimal",
    "DECIMAL_PLACES",
    "UtcDatetime",
    "GhgScope",
    "DataQuality",
    "SnakeCase",
    "Identifier",
    "LongIdentifier",
    "PartyId",
    "Reference",
    "Unit",
    "Name",
    "Description",
    "OptionalDescription",
    "uscc_check_character",
    "is_valid_uscc",
    "validate_uscc",
    "validate_period",
    "period_contains",
    "period_year",
]


def _fail(kind: str, message: str) -> PydanticCustomError:
    # No context: the message is shown as is, even when it quotes braces from the input.
    return PydanticCustomError(kind, message)


# --- USCC (GB 32100-2015) ---------------------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_character(first17: str) -> str:
    """The 18th (check) character for the first 17 characters of a USCC."""
    if len(first17) != 17:
        raise ValueError(f"expected 17 characters, got {len(first17)}")
    try:
        total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS))
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]!r} is not a USCC character") from None
    c = 31 - total % 31
    return USCC_CHARSET[0 if c == 31 else c]


def _uscc_problem(s: str) -> str | None:
    """Why `s` is not a valid USCC, or None when it is."""
    if s != s.upper():
        return "USCC must be upper case"
    if len(s) != 18:
        return f"USCC must be 18 characters, got {len(s)}"
    for i, c in enumerate(s, start=1):
        if c not in _USCC_VALUE:
            hint = " (I, O, Z, S and V are never used)" if c in "IOZSV" else ""
            return f"USCC character {i} is {c!r}, which is not allowed{hint}"
    if not s[2:8].isdigit():
        return "USCC characters 3-8 (administrative division code) must be digits"
    expected = uscc_check_character(s[:17])
    if s[17] != expected:
        return f"check character should be {expected!r}, got {s[17]!r}"
    return None


def is_valid_uscc(s: object) -> bool:
    """True when `s` is a well-formed USCC with a correct check character."""
    return isinstance(s, str) and _uscc_problem(s) is None


def validate_uscc(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("uscc", "USCC must be a string")
    s = value.strip()
    problem = _uscc_problem(s)
    if problem:
        raise _fail("uscc", problem)
    return s


USCC = Annotated[
    str,
    PlainValidator(validate_uscc),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$",
            "description": "Unified Social Credit Code (GB 32100-2015), check character verified",
            "examples": ["91510100MA6CN3011R"],
        }
    ),
]


# --- Industry (GB/T 4754-2017) ----------------------------------------------

# Each section letter covers a contiguous range of two-digit divisions.
_SECTION_DIVISIONS: dict[str, tuple[int, int]] = {
    "A": (1, 5), "B": (6, 12), "C": (13, 43), "D": (44, 46), "E": (47, 50),
    "F": (51, 52), "G": (53, 60), "H": (61, 62), "I": (63, 65), "J": (66, 69),
    "K": (70, 70), "L": (71, 72), "M": (73, 75), "N": (76, 79), "O": (80, 82),
    "P": (83, 83), "Q": (84, 85), "R": (86, 90), "S": (91, 97), "T": (98, 98),
}  # fmt: skip
_INDUSTRY_RE = re.compile(r"[A-T][0-9]{2,4}")


def _validate_industry(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("industry_code", "industry code must be a string")
    s = value.strip()
    if s != s.upper():
        raise _fail("industry_code", "industry code must be upper case (e.g. 'C3011')")
    if not _INDUSTRY_RE.fullmatch(s):
        raise _fail(
            "industry_code",
            "industry code must be a GB/T 4754-2017 section letter A-T followed by "
            "2, 3 or 4 digits (e.g. 'C3011' cement, 'D4411' thermal power)",
        )
    low, high = _SECTION_DIVISIONS[s[0]]
    division = int(s[1:3])
    if not low <= division <= high:
        span = f"{low:02d}" if low == high else f"{low:02d}-{high:02d}"
        raise _fail(
            "industry_code",
            f"division {s[1:3]} is not in section {s[0]}, which covers divisions {span}",
        )
    return s


IndustryCode = Annotated[
    str,
    PlainValidator(_validate_industry),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-T][0-9]{2,4}$",
            "description": "GB/T 4754-2017 industry code: section letter and 2-4 digits",
            "examples": ["C3011", "D4411"],
        }
    ),
]


# --- Region (GB/T 2260) -----------------------------------------------------

_PROVINCES = frozenset(
    [*range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47), *range(50, 55),
     *range(61, 66), 71, 81, 82]
)  # fmt: skip


def _validate_region(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("region_code", "region code must be a string of 6 digits (e.g. '510000')")
    s = value.strip()
    if not (len(s) == 6 and s.isascii() and s.isdigit()):
        raise _fail("region_code", "region code must be 6 digits (GB/T 2260, e.g. '510000')")
    if int(s[:2]) not in _PROVINCES:
        raise _fail("region_code", f"{s[:2]!r} is not a province-level code of GB/T 2260")
    return s


RegionCode = Annotated[
    str,
    PlainValidator(_validate_region),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{6}$",
            "description": "GB/T 2260 administrative division code",
            "examples": ["510000", "510100"],
        }
    ),
]


# --- Period -----------------------------------------------------------------

_PERIOD_RE = re.compile(r"([0-9]{4})(?:-Q([0-9])|-([0-9]{2}))?")
_PERIOD_MESSAGE = "period must be 'YYYY', 'YYYY-Qn' or 'YYYY-MM' (e.g. '2024', '2024-Q3', '2024-07')"


@lru_cache(maxsize=4096)  # few distinct periods, parsed for every line a rating reads
def _parse_period(p: str) -> tuple[int, int | None, int | None]:
    """(year, quarter, month) with at most one of quarter and month set."""
    m = _PERIOD_RE.fullmatch(p)
    if not m:
        raise ValueError(_PERIOD_MESSAGE)
    year = int(m[1])
    if not 1990 <= year <= 2100:
        raise ValueError(f"period year must be between 1990 and 2100, got {year}")
    quarter = int(m[2]) if m[2] else None
    month = int(m[3]) if m[3] else None
    if quarter is not None and not 1 <= quarter <= 4:
        raise ValueError(f"quarter must be Q1-Q4, got Q{quarter}")
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"month must be 01-12, got {m[3]}")
    return year, quarter, month


def validate_period(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("period", _PERIOD_MESSAGE)
    s = value.strip()
    try:
        _parse_period(s)
    except ValueError as exc:
        raise _fail("period", str(exc)) from None
    return s


def period_year(p: str) -> int:
    """The calendar year of a period."""
    return _parse_period(p)[0]


def period_contains(outer: str, inner: str) -> bool:
    """True when `inner` lies within `outer`: a year contains its quarters and
    months, a quarter its three months, and every period contains itself."""
    oy, oq, om = _parse_period(outer)
    iy, iq, im = _parse_period(inner)
    if oy != iy:
        return False
    if oq is None and om is None:
        return True
    if oq is not None:
        return iq == oq or (im is not None and (im - 1) // 3 + 1 == oq)
    return im == om


Period = Annotated[
    str,
    PlainValidator(validate_period),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{4}(-Q[1-4]|-(0[1-9]|1[0-2]))?$",
            "description": "reporting period: a year, a quarter or a month",
            "examples": ["2024", "2024-Q3", "2024-07"],
        }
    ),
]


# --- Decimals ---------------------------------------------------------------

DECIMAL_PLACES = 6
_MAX_INTEGER_DIGITS = 15  # 10^15 t or 10^15 x 10k CNY: far beyond any real account
_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NOT_FINITE = {"nan", "snan", "inf", "infinity"}


def _to_decimal_places(value: Any) -> tuple[Decimal, int]:
    """The decimal and its number of decimal places."""
    # bool is an int subclass; True is never a quantity.
    if isinstance(value, bool):
        raise _fail("decimal_type", 'must be a decimal number written as a string, e.g. "12.5"')
    if isinstance(value, float):
        raise _fail(
            "decimal_float",
            'send decimals as strings (e.g. "12.5"): a JSON number may lose precision',
        )
    if isinstance(value, str):
        s = value.strip()
        if not _DECIMAL_RE.fullmatch(s):
            if s.lstrip("+-").lower() in _NOT_FINITE:
                raise _fail("decimal_finite", "must be a finite number")
            raise _fail(
                "decimal_parsing",
                f'{value!r} is not a plain decimal number; write digits with an optional '
                f'fraction, e.g. "12.5"',
            )
        # Digits with an optional fraction: no exponent, so the places are the fraction's digits
        # (counted from the text: cheaper than taking the decimal apart).
        point = s.find(".")
        return Decimal(s), 0 if point < 0 else len(s) - point - 1
    if isinstance(value, int):
        return Decimal(value), 0
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail("decimal_finite", "must be a finite number")
        exponent = value.as_tuple().exponent
        # A positive exponent (1E+2) would serialise in scientific notation.
        if exponent > 0:  # type: ignore[operator]
            return value.quantize(Decimal(1)), 0
        return value, -exponent  # type: ignore[operator]
    raise _fail("decimal_type", 'must be a decimal number written as a string, e.g. "12.5"')


def _decimal_validator(*, positive: bool) -> Any:
    def validate(value: Any) -> Decimal:
        d, places = _to_decimal_places(value)
        if d.is_signed():
            raise _fail("decimal_negative", "must not be negative")
        if positive and d.is_zero():
            raise _fail("decimal_positive", "must be greater than zero")
        if places > DECIMAL_PLACES:
            raise _fail(
                "decimal_places",
                f"at most {DECIMAL_PLACES} decimal places allowed, got {places}",
            )
        if d.adjusted() + 1 > _MAX_INTEGER_DIGITS:
            raise _fail(
                "decimal_too_large",
                f"at most {_MAX_INTEGER_DIGITS} digits before the decimal point allowed",
            )
        return d

    return validate


def _decimal_to_str(d: Decimal) -> str:
    return format(d, "f")


_NON_NEGATIVE_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,6})?$"
_POSITIVE_PATTERN = r"^(?!0+(\.0+)?$)[0-9]{1,15}(\.[0-9]{1,6})?$"


def _decimal_type(*, positive: bool, description: str) -> Any:
    return Annotated[
        Decimal,
        PlainValidator(_decimal_validator(positive=positive)),
        PlainSerializer(_decimal_to_str, return_type=str, when_used="json"),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": _POSITIVE_PATTERN if positive else _NON_NEGATIVE_PATTERN,
                "description": description,
                "examples": ["1250.5"],
            }
        ),
    ]


Tonnes = _decimal_type(
    positive=False,
    description="tonnes as a decimal string, >= 0, at most 6 decimal places",
)
PositiveTonnes = _decimal_type(
    positive=True,
    description="tonnes as a decimal string, > 0, at most 6 decimal places",
)
Money = _decimal_type(
    positive=False,
    description="amount of money as a decimal string, >= 0, at most 6 decimal places",
)
NonNegativeDecimal = _decimal_type(
    positive=False,
    description="quantity as a decimal string, >= 0, at most 6 decimal places",
)


# --- Other scalars ----------------------------------------------------------


def _datetime_input(value: Any) -> Any:
    # Lax pydantic would read numbers as Unix time; the wire format is RFC 3339.
    if isinstance(value, (str, datetime)):
        return value
    raise _fail("datetime_type", "must be an RFC 3339 timestamp, e.g. '2026-06-30T00:00:00Z'")


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 lies after the last representable UTC time
        raise _fail("datetime_range", "the time is out of range once converted to UTC") from None


UtcDatetime = Annotated[
    AwareDatetime, BeforeValidator(_datetime_input), AfterValidator(_to_utc)
]


def _ghg_scope(value: int) -> int:
    if value not in (1, 2, 3):
        raise _fail("ghg_scope", f"scope must be 1, 2 or 3, got {value}")
    return value


GhgScope = Annotated[
    int,
    Strict(),
    AfterValidator(_ghg_scope),
    WithJsonSchema({"type": "integer", "enum": [1, 2, 3], "description": "GHG Protocol scope"}),
]
DataQuality = Annotated[
    int,
    Strict(),
    Field(ge=1, le=5, description="data quality from 1 (estimated) to 5 (measured, verified)"),
]

_SNAKE_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _snake_case(value: str) -> str:
    if not _SNAKE_RE.fullmatch(value):
        raise _fail(
            "snake_case",
            f"{value!r} must be a snake_case identifier (e.g. 'fuel_combustion')",
        )
    return value


SnakeCase = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_snake_case),
    WithJsonSchema(
        {"type": "string", "pattern": "^[a-z][a-z0-9]*(_[a-z0-9]+)*$", "maxLength": 64}
    ),
]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# The same rule as a JSON Schema pattern, for identifiers in paths and queries (PostgreSQL text refuses NUL).
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_CONTROL_EXCEPT_NEWLINE_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _single_line(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise _fail("control_characters", "must be a single line without control characters")
    return value


def _multi_line(value: str) -> str:
    if _CONTROL_EXCEPT_NEWLINE_RE.search(value):
        raise _fail("control_characters", "must not contain control characters")
    return value


def _text(max_length: int, check: Any) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(check),
    ]


# Required strings: surrounding whitespace stripped, never blank.
Identifier = _text(64, _single_line)  # project, batch and pledge ids
LongIdentifier = _text(128, _single_line)  # calculation ids
PartyId = _text(128, _single_line)  # a party's token `sub`
Reference = _text(256, _single_line)  # methodology, factor and document references
Unit = _text(32, _single_line)
Name = _text(200, _single_line)
Description = _text(500, _multi_line)


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


# Optional free text; a blank one is treated as absent.
OptionalDescription = Annotated[Description | None, BeforeValidator(_blank_to_none)]
