"""Single-event rules of the event contracts (SPEC §7)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

import contracts
from contracts import (
    EVENT_TYPES,
    GENESIS_HASH,
    AssetKind,
    EventEnvelope,
    EventValidationError,
    Gas,
    Role,
    Scope,
    is_valid_uscc,
    parse_event,
    period_contains,
    period_year,
    uscc_check_character,
)
from contracts.examples import (
    CEMENT_MAKER_USCC,
    EXAMPLE_EVENT_DATA,
    EXAMPLE_USCCS,
    POWER_PLANT_USCC,
    VERIFIER_USCC,
)
from contracts.types import USCC_CHARSET, IndustryCode, PositiveTonnes, RegionCode, Tonnes

ALL_TYPES = [
    "EnterpriseRegistered",
    "ConsentGranted",
    "ConsentRevoked",
    "ActivityReported",
    "EmissionRecorded",
    "EmissionVerified",
    "ReductionRecorded",
    "ReductionVerified",
    "CarbonAssetAcquired",
    "CarbonAssetPledged",
    "CarbonAssetReleased",
    "CarbonAssetTransferred",
    "CreditsRetired",
]


def example(type_: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE_EVENT_DATA[type_])
    data.update(changes)
    return data


def errors_of(type_: str, data: Any) -> list[dict[str, str]]:
    with pytest.raises(EventValidationError) as info:
        parse_event(type_, data)
    return info.value.errors


def only_error(type_: str, data: Any) -> dict[str, str]:
    errors = errors_of(type_, data)
    assert len(errors) == 1, errors
    return errors[0]


# --- Registry and public API -------------------------------------------------


def test_event_types_are_exactly_the_spec_types() -> None:
    assert sorted(EVENT_TYPES) == sorted(ALL_TYPES)


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_model_class_declares_type_version_and_strict_config(type_: str) -> None:
    model = EVENT_TYPES[type_]
    assert issubclass(model, contracts.EventData)
    assert model.TYPE == type_ == model.__name__
    assert model.SCHEMA_VERSION == 1
    assert model.model_config["extra"] == "forbid"
    assert model.model_config["frozen"] is True


def test_public_names_are_importable() -> None:
    for name in contracts.__all__:
        assert hasattr(contracts, name), name


def test_enums_have_exactly_the_spec_values() -> None:
    assert [r.value for r in Role] == [
        "enterprise", "bank", "regulator", "partner", "verifier", "registry", "service", "operator",
    ]  # fmt: skip
    assert [s.value for s in Scope] == [
        "rating:read", "pricing:read", "events:subscribe", "disclosure:read", "account:read",
        "account:verify",
    ]  # fmt: skip
    assert [g.value for g in Gas] == ["CO2", "CH4", "N2O", "HFCs", "PFCs", "SF6", "NF3"]
    assert [a.value for a in AssetKind] == ["CCER", "CDCER", "VCU", "CER", "CEA"]
    assert Scope("rating:read") == "rating:read"


# --- Examples and round trips ----------------------------------------------------


def test_there_is_an_example_for_every_type() -> None:
    assert sorted(EXAMPLE_EVENT_DATA) == sorted(ALL_TYPES)


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_example_validates_and_round_trips_through_json(type_: str) -> None:
    event = parse_event(type_, example(type_))
    assert type(event) is EVENT_TYPES[type_]
    wire = event.model_dump(mode="json")
    assert json.loads(json.dumps(wire)) == wire
    assert parse_event(type_, wire) == event
    assert EVENT_TYPES[type_].model_validate_json(json.dumps(wire)) == event


def test_decimals_serialise_as_strings_exactly_as_sent() -> None:
    event = parse_event("ActivityReported", example("ActivityReported", revenue_10k_cny="10.500000"))
    wire = event.model_dump(mode="json")
    assert wire["revenue_10k_cny"] == "10.500000"
    assert wire["output"]["quantity"] == "1200000"
    assert event.revenue_10k_cny == Decimal("10.5")


def test_models_are_frozen() -> None:
    event = parse_event("CarbonAssetReleased", {"pledge_id": "PL-1"})
    with pytest.raises(ValidationError):
        event.pledge_id = "PL-2"  # type: ignore[misc]


# --- Unknown types and fields -------------------------------------------------


def test_unknown_type_names_it_and_lists_the_known_types() -> None:
    error = only_error("EmissionsRecorded", {})
    assert error["field"] == "type"
    assert "'EmissionsRecorded'" in error["message"]
    for type_ in ALL_TYPES:
        assert type_ in error["message"]


@pytest.mark.parametrize("bad_type", [None, 3, ["EnterpriseRegistered"]])
def test_non_string_type_is_an_unknown_type(bad_type: Any) -> None:
    error = only_error(bad_type, {})
    assert error["field"] == "type"
    assert "known types" in error["message"]


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_unknown_field_is_rejected_by_name(type_: str) -> None:
    assert only_error(type_, example(type_, colour="red")) == {
        "field": "data.colour",
        "message": "unknown field 'colour'",
    }


def test_unknown_nested_field_is_rejected_with_its_path() -> None:
    data = example("ActivityReported", output={"quantity": "1", "unit": "t", "colour": "red"})
    assert only_error("ActivityReported", data) == {
        "field": "data.output.colour",
        "message": "unknown field 'colour'",
    }


@pytest.mark.parametrize(
    ("type_", "field"),
    [
        (t, f)
        for t in ALL_TYPES
        for f, info in EVENT_TYPES[t].model_fields.items()
        if info.is_required()
    ],
)
def test_every_required_field_is_required(type_: str, field: str) -> None:
    data = example(type_)
    del data[field]
    assert only_error(type_, data) == {"field": f"data.{field}", "message": "this field is required"}


@pytest.mark.parametrize("data", [None, [], "{}", 42])
def test_data_must_be_an_object(data: Any) -> None:
    assert only_error("ConsentRevoked", data) == {"field": "data", "message": "must be an object"}


def test_validation_error_is_a_value_error_listing_all_fields() -> None:
    with pytest.raises(ValueError) as info:
        parse_event("CarbonAssetAcquired", {"asset": "XYZ", "colour": 1})
    assert isinstance(info.value, EventValidationError)
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"data.asset", "data.batch", "data.quantity_t", "data.source", "data.colour"}
    assert all(set(e) == {"field", "message"} for e in info.value.errors)
    assert "data.asset" in str(info.value)


# --- USCC ----------------------------------------------------------------------

REAL_USCCS = ["91350100M000100Y43", "91330100716105852F", "9144030071526726XG"]


@pytest.mark.parametrize("uscc", [*EXAMPLE_USCCS, *REAL_USCCS])
def test_valid_usccs(uscc: str) -> None:
    assert is_valid_uscc(uscc)
    assert uscc_check_character(uscc[:17]) == uscc[17]
    assert parse_event("EnterpriseRegistered", example("EnterpriseRegistered", uscc=uscc)).uscc == uscc


def test_example_usccs_are_distinct() -> None:
    assert len({CEMENT_MAKER_USCC, POWER_PLANT_USCC, VERIFIER_USCC}) == 3


def test_uscc_surrounding_whitespace_is_stripped() -> None:
    data = example("EnterpriseRegistered", uscc=f"  {CEMENT_MAKER_USCC}\n")
    assert parse_event("EnterpriseRegistered", data).uscc == CEMENT_MAKER_USCC


@pytest.mark.parametrize(
    ("uscc", "expected"),
    [
        (CEMENT_MAKER_USCC.lower(), "upper case"),
        ("91510100ma6cn3011R", "upper case"),
        (CEMENT_MAKER_USCC[:17], "18 characters, got 17"),
        (CEMENT_MAKER_USCC + "0", "18 characters, got 19"),
        ("", "18 characters, got 0"),
        ("91510100MA6IN3011R", "'I'"),
        ("91510100MA6ON3011R", "'O'"),
        ("91510100MA6ZN3011R", "'Z'"),
        ("91510100MA6SN3011R", "'S'"),
        ("91510100MA6VN3011R", "'V'"),
        ("91510100MA6-N3011R", "'-'"),
        ("915101A0MA6CN3011R", "characters 3-8"),
        ("91510100MA6CN3011X", "check character should be 'R'"),
        ("91510100MA6CN3012R", "check character should be"),
    ],
)
def test_invalid_usccs_say_what_is_wrong(uscc: str, expected: str) -> None:
    assert not is_valid_uscc(uscc)
    error = only_error("EnterpriseRegistered", example("EnterpriseRegistered", uscc=uscc))
    assert error["field"] == "data.uscc"
    assert expected in error["message"]


@pytest.mark.parametrize("value", [None, 915101001234567890, b"91510100MA6CN3011R"])
def test_non_string_uscc(value: Any) -> None:
    assert not is_valid_uscc(value)
    assert only_error("EnterpriseRegistered", example("EnterpriseRegistered", uscc=value)) == {
        "field": "data.uscc",
        "message": "USCC must be a string",
    }


@pytest.mark.parametrize("prefix", ["9151010", "91510100MA6CN30111", "91510100MA6CN30I1"])
def test_check_character_needs_17_charset_characters(prefix: str) -> None:
    with pytest.raises(ValueError):
        uscc_check_character(prefix)


_CHARSET_LETTERS = USCC_CHARSET[10:]
uscc_prefixes = st.builds(
    lambda a, b, c: a + b + c,
    st.text(USCC_CHARSET, min_size=2, max_size=2),
    st.text("0123456789", min_size=6, max_size=6),
    st.text(USCC_CHARSET, min_size=9, max_size=9),
)


@given(uscc_prefixes)
def test_any_prefix_with_its_check_character_is_valid(prefix: str) -> None:
    uscc = prefix + uscc_check_character(prefix)
    assert uscc[17] in USCC_CHARSET
    assert is_valid_uscc(uscc)


@given(uscc_prefixes, st.integers(0, 17), st.sampled_from(USCC_CHARSET))
def test_changing_any_single_character_breaks_the_check(prefix: str, index: int, new: str) -> None:
    uscc = prefix + uscc_check_character(prefix)
    if uscc[index] == new:
        new = USCC_CHARSET[(USCC_CHARSET.index(new) + 1) % len(USCC_CHARSET)]
    changed = uscc[:index] + new + uscc[index + 1 :]
    assert not is_valid_uscc(changed)


# --- Industry and region codes -----------------------------------------------------

industry = TypeAdapter(IndustryCode)
region = TypeAdapter(RegionCode)


@pytest.mark.parametrize(
    "code",
    ["C3011", "D4411", "A01", "A011", "A0511", "B06", "C13", "C43", "D46", "E47", "F52", "G53",
     "G60", "H61", "I65", "J66", "K70", "L72", "M73", "N79", "O80", "P83", "Q85", "R90", "S91",
     "S97", "T98"],
)  # fmt: skip
def test_valid_industry_codes(code: str) -> None:
    assert industry.validate_python(code) == code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("c3011", "upper case"),
        ("C30111", "2, 3 or 4 digits"),
        ("C3", "2, 3 or 4 digits"),
        ("C", "2, 3 or 4 digits"),
        ("3011", "section letter"),
        ("U01", "section letter"),
        ("CC3011", "section letter"),
        ("", "section letter"),
        ("C4411", "division 44 is not in section C, which covers divisions 13-43"),
        ("D3011", "division 30 is not in section D"),
        ("A00", "division 00 is not in section A"),
        ("K71", "which covers divisions 70"),
        ("T99", "division 99"),
        (3011, "must be a string"),
    ],
)
def test_invalid_industry_codes(code: Any, expected: str) -> None:
    error = only_error("EnterpriseRegistered", example("EnterpriseRegistered", industry=code))
    assert error["field"] == "data.industry"
    assert expected in error["message"]


@pytest.mark.parametrize(
    "code",
    ["510000", "510100", "511100", "110000", "150000", "210000", "230000", "310000", "370000",
     "410000", "460000", "500000", "540000", "610000", "650000", "710000", "810000", "820000"],
)  # fmt: skip
def test_valid_region_codes(code: str) -> None:
    assert region.validate_python(code) == code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("51000", "6 digits"),
        ("5100000", "6 digits"),
        ("51000a", "6 digits"),
        ("５１００００", "6 digits"),  # full-width digits are not ASCII
        ("990000", "'99' is not a province-level code"),
        ("160000", "'16'"),
        ("000000", "'00'"),
        ("720000", "'72'"),
        (510000, "must be a string"),
    ],
)
def test_invalid_region_codes(code: Any, expected: str) -> None:
    error = only_error("EnterpriseRegistered", example("EnterpriseRegistered", region=code))
    assert error["field"] == "data.region"
    assert expected in error["message"]


# --- Periods -------------------------------------------------------------------


@pytest.mark.parametrize(
    "period",
    ["1990", "2100", "2024", "2024-Q1", "2024-Q4", "2024-01", "2024-09", "2024-12"],
)
def test_valid_periods(period: str) -> None:
    assert parse_event("EmissionVerified", example("EmissionVerified", period=period)).period == period


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("1989", "between 1990 and 2100, got 1989"),
        ("2101", "between 1990 and 2100"),
        ("2024-Q0", "Q1-Q4"),
        ("2024-Q5", "Q1-Q4"),
        ("2024-00", "01-12"),
        ("2024-13", "01-12"),
        ("2024-1", "'YYYY', 'YYYY-Qn' or 'YYYY-MM'"),
        ("24", "'YYYY'"),
        ("2024Q1", "'YYYY'"),
        ("2024-q1", "'YYYY'"),
        ("2024-H1", "'YYYY'"),
        ("2024-07-01", "'YYYY'"),
        ("", "'YYYY'"),
        (2024, "'YYYY'"),
    ],
)
def test_invalid_periods(period: Any, expected: str) -> None:
    error = only_error("EmissionVerified", example("EmissionVerified", period=period))
    assert error["field"] == "data.period"
    assert expected in error["message"]


@pytest.mark.parametrize(
    ("outer", "inner", "contained"),
    [
        ("2024", "2024", True),
        ("2024", "2024-Q3", True),
        ("2024", "2024-07", True),
        ("2024", "2025", False),
        ("2024", "2025-01", False),
        ("2024-Q3", "2024-Q3", True),
        ("2024-Q3", "2024-07", True),
        ("2024-Q3", "2024-09", True),
        ("2024-Q3", "2024-06", False),
        ("2024-Q3", "2024-10", False),
        ("2024-Q3", "2024", False),
        ("2024-Q3", "2024-Q4", False),
        ("2024-Q1", "2023-01", False),
        ("2024-07", "2024-07", True),
        ("2024-07", "2024-08", False),
        ("2024-07", "2024-Q3", False),
        ("2024-07", "2024", False),
    ],
)
def test_period_contains(outer: str, inner: str, contained: bool) -> None:
    assert period_contains(outer, inner) is contained


@pytest.mark.parametrize(("period", "year"), [("2024", 2024), ("2023-Q4", 2023), ("1990-01", 1990)])
def test_period_year(period: str, year: int) -> None:
    assert period_year(period) == year


@pytest.mark.parametrize("bad", ["2024-13", "FY2024", "1989"])
def test_period_helpers_reject_invalid_periods(bad: str) -> None:
    with pytest.raises(ValueError):
        period_year(bad)
    with pytest.raises(ValueError):
        period_contains("2024", bad)
    with pytest.raises(ValueError):
        period_contains(bad, "2024")


# --- Decimals ------------------------------------------------------------------

tonnes = TypeAdapter(Tonnes)
positive_tonnes = TypeAdapter(PositiveTonnes)


@pytest.mark.parametrize(
    ("value", "expected", "wire"),
    [
        ("0", Decimal("0"), "0"),
        ("1", Decimal("1"), "1"),
        ("1.5", Decimal("1.5"), "1.5"),
        ("1.000000", Decimal("1"), "1.000000"),
        ("1.123456", Decimal("1.123456"), "1.123456"),
        ("0.000001", Decimal("0.000001"), "0.000001"),
        (" 12.5 ", Decimal("12.5"), "12.5"),
        ("007", Decimal("7"), "7"),
        ("999999999999999.999999", Decimal("999999999999999.999999"), "999999999999999.999999"),
        (12, Decimal("12"), "12"),
        (0, Decimal("0"), "0"),
        (Decimal("1.50"), Decimal("1.5"), "1.50"),
        (Decimal("1E+2"), Decimal("100"), "100"),
    ],
)
def test_valid_tonnes(value: Any, expected: Decimal, wire: str) -> None:
    parsed = tonnes.validate_python(value)
    assert parsed == expected
    assert tonnes.dump_python(parsed, mode="json") == wire
    assert tonnes.dump_json(parsed) == json.dumps(wire).encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, "send decimals as strings"),
        (0.0, "send decimals as strings"),
        (float("nan"), "send decimals as strings"),
        ("1.1234567", "at most 6 decimal places allowed, got 7"),
        ("1.0000000", "at most 6 decimal places allowed, got 7"),
        (Decimal("0.0000001"), "at most 6 decimal places"),
        ("-1", "must not be negative"),
        ("-0", "must not be negative"),
        (-3, "must not be negative"),
        ("NaN", "finite"),
        ("nan", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        ("inf", "finite"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        ("1e5", "not a plain decimal number"),
        ("1E-3", "not a plain decimal number"),
        (".5", "not a plain decimal number"),
        ("5.", "not a plain decimal number"),
        ("+5", "not a plain decimal number"),
        ("1,000", "not a plain decimal number"),
        ("0x10", "not a plain decimal number"),
        ("", "not a plain decimal number"),
        ("twelve", "not a plain decimal number"),
        ("1000000000000000", "at most 15 digits before the decimal point"),
        (10**15, "at most 15 digits before the decimal point"),
        (True, "decimal number written as a string"),
        (None, "decimal number written as a string"),
        ([1], "decimal number written as a string"),
    ],
)
def test_invalid_tonnes(value: Any, expected: str) -> None:
    error = only_error("EmissionVerified", example("EmissionVerified", verified_tco2e=value))
    assert error["field"] == "data.verified_tco2e"
    assert expected in error["message"]


def test_float_message_explains_precision() -> None:
    error = only_error("CarbonAssetAcquired", example("CarbonAssetAcquired", quantity_t=1.5))
    assert error == {
        "field": "data.quantity_t",
        "message": 'send decimals as strings (e.g. "12.5"): a JSON number may lose precision',
    }


def test_float_is_rejected_from_raw_json_too() -> None:
    body = json.dumps(example("CarbonAssetAcquired", quantity_t=2.0))
    with pytest.raises(ValidationError, match="send decimals as strings"):
        EVENT_TYPES["CarbonAssetAcquired"].model_validate_json(body)


@pytest.mark.parametrize("value", ["0", "0.000000", 0, "-0"])
def test_positive_tonnes_reject_zero(value: Any) -> None:
    with pytest.raises(ValidationError):
        positive_tonnes.validate_python(value)


@pytest.mark.parametrize("value", ["0.000001", "1", 5, "20000.5"])
def test_positive_tonnes_accept_more_than_zero(value: Any) -> None:
    assert positive_tonnes.validate_python(value) > 0


@pytest.mark.parametrize(
    "type_", ["CarbonAssetAcquired", "CarbonAssetPledged", "CarbonAssetTransferred", "CreditsRetired"]
)
def test_asset_quantities_must_be_positive(type_: str) -> None:
    assert only_error(type_, example(type_, quantity_t="0")) == {
        "field": "data.quantity_t",
        "message": "must be greater than zero",
    }


@given(st.decimals(min_value=0, max_value=Decimal("1e15") - 1, places=6, allow_nan=False))
def test_any_six_place_decimal_round_trips_as_a_string(value: Decimal) -> None:
    wire = tonnes.dump_python(tonnes.validate_python(value), mode="json")
    assert isinstance(wire, str)
    assert "E" not in wire and "e" not in wire
    assert tonnes.validate_python(wire) == value
    assert tonnes.dump_python(tonnes.validate_python(wire), mode="json") == wire


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("revenue_10k_cny", "-1", "data.revenue_10k_cny"),
        ("revenue_10k_cny", 1e6, "data.revenue_10k_cny"),
        ("output", {"quantity": "-0.5", "unit": "t"}, "data.output.quantity"),
        ("output", {"quantity": 3.2, "unit": "t"}, "data.output.quantity"),
        ("output", {"quantity": "1", "unit": ""}, "data.output.unit"),
        ("output", {"quantity": "1", "unit": "x" * 33}, "data.output.unit"),
        ("output", "1200000 t", "data.output"),
    ],
)
def test_activity_is_non_negative_and_well_formed(field: str, value: Any, path: str) -> None:
    assert only_error("ActivityReported", example("ActivityReported", **{field: value}))["field"] == path


# --- Strings -------------------------------------------------------------------


def test_strings_are_stripped() -> None:
    event = parse_event("EnterpriseRegistered", example("EnterpriseRegistered", name="  Emei Cement  "))
    assert event.name == "Emei Cement"


@pytest.mark.parametrize(
    ("type_", "field", "max_length"),
    [
        ("EnterpriseRegistered", "name", 200),
        ("ConsentGranted", "grantee", 128),
        ("ConsentGranted", "purpose", 500),
        ("EmissionRecorded", "calculation_id", 128),
        ("EmissionRecorded", "factor_ref", 256),
        ("EmissionRecorded", "methodology", 256),
        ("EmissionVerified", "verifier", 128),
        ("EmissionVerified", "report_ref", 256),
        ("ReductionRecorded", "project_id", 64),
        ("ReductionVerified", "verifier", 128),
        ("CarbonAssetAcquired", "batch", 64),
        ("CarbonAssetAcquired", "source", 256),
        ("CarbonAssetPledged", "pledge_id", 64),
        ("CarbonAssetPledged", "pledgee", 128),
        ("CarbonAssetPledged", "loan_ref", 256),
        ("CarbonAssetReleased", "pledge_id", 64),
        ("CarbonAssetTransferred", "counterparty", 128),
        ("CreditsRetired", "purpose", 500),
        ("CreditsRetired", "retirement_ref", 256),
    ],
)
def test_required_strings_are_non_blank_and_bounded(type_: str, field: str, max_length: int) -> None:
    assert parse_event(type_, example(type_, **{field: "x" * max_length}))
    for blank in ("", "   ", "\n\t"):
        assert only_error(type_, example(type_, **{field: blank})) == {
            "field": f"data.{field}",
            "message": "must not be blank",
        }
    assert only_error(type_, example(type_, **{field: "x" * (max_length + 1)})) == {
        "field": f"data.{field}",
        "message": f"must be at most {max_length} characters",
    }
    assert only_error(type_, example(type_, **{field: 42})) == {
        "field": f"data.{field}",
        "message": "must be a string",
    }


@pytest.mark.parametrize(("field", "value"), [("batch", "CCER\n2024"), ("source", "a\x00b")])
def test_identifiers_are_single_lines(field: str, value: str) -> None:
    error = only_error("CarbonAssetAcquired", example("CarbonAssetAcquired", **{field: value}))
    assert error["field"] == f"data.{field}"
    assert "control characters" in error["message"]


def test_free_text_may_span_lines() -> None:
    event = parse_event("CreditsRetired", example("CreditsRetired", purpose="line one\nline two"))
    assert event.purpose == "line one\nline two"


# --- Consent ---------------------------------------------------------------------


def test_consent_expiry_is_normalised_to_utc() -> None:
    data = example("ConsentGranted", expires_at="2027-01-01T08:00:00+08:00")
    event = parse_event("ConsentGranted", data)
    assert event.expires_at == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert event.expires_at.utcoffset().total_seconds() == 0
    assert event.model_dump(mode="json")["expires_at"] == "2027-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-01T00:00:00", "must include a UTC offset"),
        ("2027-01-01", "must include a UTC offset"),
        ("next year", "RFC 3339"),
        (1798761600, "RFC 3339"),
        (None, "RFC 3339"),
    ],
)
def test_consent_expiry_must_be_an_aware_timestamp(value: Any, expected: str) -> None:
    error = only_error("ConsentGranted", example("ConsentGranted", expires_at=value))
    assert error["field"] == "data.expires_at"
    assert expected in error["message"]


def test_consent_accepts_every_scope() -> None:
    event = parse_event("ConsentGranted", example("ConsentGranted", scopes=[s.value for s in Scope]))
    assert event.scopes == list(Scope)


@pytest.mark.parametrize(
    ("scopes", "field", "expected"),
    [
        ([], "data.scopes", "must not be empty"),
        (["rating:read", "rating:write"], "data.scopes[1]", "must be one of 'rating:read'"),
        (["RATING:READ"], "data.scopes[0]", "must be one of"),
        (["rating:read", "pricing:read", "rating:read"], "data.scopes", "'rating:read' is listed more"),
        ("rating:read", "data.scopes", "must be a list"),
    ],
)
def test_consent_scopes(scopes: Any, field: str, expected: str) -> None:
    error = only_error("ConsentGranted", example("ConsentGranted", scopes=scopes))
    assert error["field"] == field
    assert expected in error["message"]


@pytest.mark.parametrize("consent_id", ["not-a-uuid", "", 12, None])
def test_consent_id_must_be_a_uuid(consent_id: Any) -> None:
    error = only_error("ConsentRevoked", {"consent_id": consent_id})
    assert error["field"] == "data.consent_id"
    assert "UUID" in error["message"]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_revocation_reason_is_optional(reason: Any) -> None:
    data = {"consent_id": "0b6f4e8a-2d1c-4f3a-9e57-6c1d2e3f4a5b", "reason": reason}
    assert parse_event("ConsentRevoked", data).reason is None
    del data["reason"]
    assert parse_event("ConsentRevoked", data).reason is None


def test_revocation_reason_is_bounded() -> None:
    data = {"consent_id": "0b6f4e8a-2d1c-4f3a-9e57-6c1d2e3f4a5b", "reason": "x" * 501}
    assert only_error("ConsentRevoked", data)["field"] == "data.reason"


# --- Emissions -------------------------------------------------------------------


@pytest.mark.parametrize("scope", [1, 2, 3])
def test_emission_scopes(scope: int) -> None:
    assert parse_event("EmissionRecorded", example("EmissionRecorded", scope=scope)).scope == scope


@pytest.mark.parametrize("scope", [0, 4, -1, True, "1", 1.0, None])
def test_invalid_emission_scopes(scope: Any) -> None:
    assert only_error("EmissionRecorded", example("EmissionRecorded", scope=scope))["field"] == "data.scope"


@pytest.mark.parametrize("quality", [1, 3, 5])
def test_data_quality_range(quality: int) -> None:
    assert parse_event("EmissionRecorded", example("EmissionRecorded", data_quality=quality))


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        (0, "must be at least 1"),
        (6, "must be at most 5"),
        ("3", "must be an integer"),
        (2.5, "must be an integer"),
        (True, "must be an integer"),
    ],
)
def test_invalid_data_quality(quality: Any, expected: str) -> None:
    assert only_error("EmissionRecorded", example("EmissionRecorded", data_quality=quality)) == {
        "field": "data.data_quality",
        "message": expected,
    }


@pytest.mark.parametrize("gas", [g.value for g in Gas])
def test_every_kyoto_gas_is_accepted(gas: str) -> None:
    assert parse_event("EmissionRecorded", example("EmissionRecorded", gas=gas)).gas == Gas(gas)


@pytest.mark.parametrize("gas", ["co2", "CO", "H2O", "HFC-134a", ""])
def test_other_gases_are_rejected(gas: str) -> None:
    error = only_error("EmissionRecorded", example("EmissionRecorded", gas=gas))
    assert error["field"] == "data.gas"
    assert "'CO2'" in error["message"] and "'NF3'" in error["message"]


@pytest.mark.parametrize(
    "category",
    ["fuel_combustion", "process", "purchased_electricity", "purchased_heat", "fugitive", "scope3_cat1"],
)
def test_snake_case_categories(category: str) -> None:
    assert parse_event("EmissionRecorded", example("EmissionRecorded", category=category))


@pytest.mark.parametrize(
    "category",
    ["Fuel", "fuel-combustion", "fuel combustion", "_fuel", "fuel_", "fuel__gas", "1fuel", "x" * 65],
)
def test_non_snake_case_categories(category: str) -> None:
    assert only_error("EmissionRecorded", example("EmissionRecorded", category=category))["field"] == (
        "data.category"
    )


def test_emission_correction_names_what_it_supersedes() -> None:
    target = "5d0c7a3e-9b1f-4c2d-8e6a-7f8091a2b3c4"
    event = parse_event("EmissionRecorded", example("EmissionRecorded", supersedes=target))
    assert event.supersedes == UUID(target)
    assert event.model_dump(mode="json")["supersedes"] == target
    assert parse_event("EmissionRecorded", example("EmissionRecorded")).supersedes is None
    assert only_error("EmissionRecorded", example("EmissionRecorded", supersedes="calc-1"))["field"] == (
        "data.supersedes"
    )


# --- Reductions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "project", "reduction"),
    [("100", "40", "60"), ("100", "40", "60.000"), ("10.5", "0.25", "10.25"), ("5", "5", "0")],
)
def test_reduction_equals_baseline_minus_project(baseline: str, project: str, reduction: str) -> None:
    data = example(
        "ReductionRecorded", baseline_tco2e=baseline, project_tco2e=project, reduction_tco2e=reduction
    )
    assert parse_event("ReductionRecorded", data).reduction_tco2e == Decimal(reduction)


def test_reduction_mismatch_is_reported_on_reduction() -> None:
    data = example("ReductionRecorded", baseline_tco2e="100", project_tco2e="40", reduction_tco2e="61")
    assert only_error("ReductionRecorded", data) == {
        "field": "data.reduction_tco2e",
        "message": "must equal baseline_tco2e - project_tco2e = 60, got 61",
    }


def test_project_above_baseline_has_no_reduction() -> None:
    data = example("ReductionRecorded", baseline_tco2e="40", project_tco2e="100", reduction_tco2e="0")
    error = only_error("ReductionRecorded", data)
    assert error["field"] == "data.reduction_tco2e"
    assert "exceed the baseline" in error["message"]


def test_bad_baseline_is_reported_once_without_a_knock_on_error() -> None:
    data = example("ReductionRecorded", baseline_tco2e=100.0)
    assert only_error("ReductionRecorded", data)["field"] == "data.baseline_tco2e"


def test_benefits_default_to_empty() -> None:
    data = example("ReductionRecorded")
    del data["benefits"]
    assert parse_event("ReductionRecorded", data).benefits == {}


@pytest.mark.parametrize(
    ("benefits", "field", "expected"),
    [
        ({"Standard Coal": "1"}, "data.benefits.Standard Coal", "snake_case"),
        ({"{a}": "1"}, "data.benefits.{a}", "'{a}' must be a snake_case identifier"),
        ({"co2_reduced_t": "-1"}, "data.benefits.co2_reduced_t", "must not be negative"),
        ({"co2_reduced_t": 1.5}, "data.benefits.co2_reduced_t", "send decimals as strings"),
        ({"co2_reduced_t": "1.1234567"}, "data.benefits.co2_reduced_t", "6 decimal places"),
        ({f"k{i}": "1" for i in range(65)}, "data.benefits", "at most 64 items"),
        (["co2"], "data.benefits", "must be an object"),
    ],
)
def test_invalid_benefits(benefits: Any, field: str, expected: str) -> None:
    error = only_error("ReductionRecorded", example("ReductionRecorded", benefits=benefits))
    assert error["field"] == field
    assert expected in error["message"]


# --- Carbon assets -----------------------------------------------------------------


@pytest.mark.parametrize("asset", [a.value for a in AssetKind])
def test_every_asset_kind_is_accepted(asset: str) -> None:
    assert parse_event("CarbonAssetAcquired", example("CarbonAssetAcquired", asset=asset)).asset == asset


@pytest.mark.parametrize("asset", ["ccer", "GEC", "", None])
def test_other_asset_kinds_are_rejected(asset: Any) -> None:
    assert only_error("CarbonAssetPledged", example("CarbonAssetPledged", asset=asset))["field"] == (
        "data.asset"
    )


# --- Envelope -------------------------------------------------------------------

ENVELOPE: dict[str, Any] = {
    "event_id": "5d0c7a3e-9b1f-4c2d-8e6a-7f8091a2b3c4",
    "type": "EnterpriseRegistered",
    "schema_version": 1,
    "enterprise_id": CEMENT_MAKER_USCC,
    "stream_version": 1,
    "position": 1,
    "recorded_at": "2026-03-01T02:03:04.000005Z",
    "data": EXAMPLE_EVENT_DATA["EnterpriseRegistered"],
    "metadata": {
        "actor": {"sub": "ops", "role": "operator"},
        "idempotency_key": "register-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "causation_id": None,
        "correlation_id": "req-42",
    },
    "prev_hash": GENESIS_HASH,
    "hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}


def envelope(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ENVELOPE)
    data.update(changes)
    return data


def test_genesis_hash_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_envelope_round_trips_byte_for_byte() -> None:
    parsed = EventEnvelope.model_validate(envelope())
    assert parsed.model_dump(mode="json") == ENVELOPE
    assert EventEnvelope.model_validate_json(json.dumps(ENVELOPE)) == parsed
    assert parsed.metadata.actor.role is Role.OPERATOR


def test_envelope_time_is_utc_with_microseconds() -> None:
    parsed = EventEnvelope.model_validate(envelope(recorded_at="2026-03-01T10:03:04+08:00"))
    assert parsed.recorded_at == datetime(2026, 3, 1, 2, 3, 4, tzinfo=timezone.utc)
    assert parsed.model_dump(mode="json")["recorded_at"] == "2026-03-01T02:03:04.000000Z"


def test_envelope_metadata_optional_parts_may_be_absent() -> None:
    parsed = EventEnvelope.model_validate(envelope(metadata={"actor": {"sub": "ops", "role": "operator"}}))
    assert parsed.metadata.idempotency_key is None
    assert parsed.metadata.traceparent is None


def test_envelope_typed_data() -> None:
    parsed = EventEnvelope.model_validate(envelope())
    assert parsed.typed_data() == parse_event("EnterpriseRegistered", ENVELOPE["data"])
    with pytest.raises(EventValidationError):
        EventEnvelope.model_validate(envelope(data={"colour": "red"})).typed_data()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": "nope"}, "event_id"),
        ({"stream_version": 0}, "stream_version"),
        ({"stream_version": "1"}, "stream_version"),
        ({"schema_version": 0}, "schema_version"),
        ({"position": -1}, "position"),
        ({"recorded_at": "2026-03-01T02:03:04"}, "recorded_at"),
        ({"enterprise_id": "91510100MA6CN3011X"}, "enterprise_id"),
        ({"prev_hash": "0" * 63}, "prev_hash"),
        ({"prev_hash": "A" * 64}, "prev_hash"),
        ({"hash": "g" * 64}, "hash"),
        ({"data": []}, "data"),
        ({"type": "enterprise registered"}, "type"),
        ({"colour": "red"}, "colour"),
        ({"metadata": {"actor": {"sub": "ops", "role": "admin"}}}, "metadata.actor.role"),
        ({"metadata": {"actor": {"sub": "", "role": "operator"}}}, "metadata.actor.sub"),
        (
            {"metadata": {"actor": {"sub": "ops", "role": "operator"}, "traceparent": "x"}},
            "metadata.traceparent",
        ),
        ({"metadata": {"actor": {"sub": "ops", "role": "operator"}, "colour": 1}}, "metadata.colour"),
    ],
)
def test_invalid_envelopes(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        EventEnvelope.model_validate(envelope(**changes))
    assert [e["field"] for e in contracts.field_errors(info.value)] == [field]


@given(st.decimals(allow_nan=False, allow_infinity=False) | st.integers(-10**20, 10**20))
def test_a_decimal_counts_its_places_as_the_decimal_itself_says(number) -> None:
    from contracts.types import _to_decimal_places

    d = Decimal(number)
    for given in (format(d, "f"), d, number):
        value, places = _to_decimal_places(given)
        exponent = value.as_tuple().exponent
        assert value == d and places == max(0, -exponent) and exponent <= 0
