"""Validation errors as `{field, message}` pairs (the `errors` of a 422 problem)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contracts.types import SINGLE_LINE_PATTERN

__all__ = ["EventValidationError", "error_message", "field_errors", "field_path"]


class EventValidationError(ValueError):
    """An event failed validation; `errors` names each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


_EXAMPLE_TIME = "'2026-06-30T00:00:00Z'"

# Pydantic's own messages, reworded to read as "<field>: <message>".
_FIXED: dict[str, str] = {
    "missing": "this field is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "uuid_type": "must be a UUID, e.g. '3f2b8c1e-6a4d-4e8b-9a57-0c1d2e3f4a5b'",
    "uuid_parsing": "must be a UUID, e.g. '3f2b8c1e-6a4d-4e8b-9a57-0c1d2e3f4a5b'",
    "uuid_version": "must be a UUID, e.g. '3f2b8c1e-6a4d-4e8b-9a57-0c1d2e3f4a5b'",
    "timezone_aware": f"must include a UTC offset, e.g. {_EXAMPLE_TIME}",
    "datetime_type": f"must be an RFC 3339 timestamp, e.g. {_EXAMPLE_TIME}",
    "datetime_parsing": f"must be an RFC 3339 timestamp, e.g. {_EXAMPLE_TIME}",
    "datetime_from_date_parsing": f"must be an RFC 3339 timestamp, e.g. {_EXAMPLE_TIME}",
    "datetime_object_invalid": f"must be an RFC 3339 timestamp, e.g. {_EXAMPLE_TIME}",
}


def error_message(err: Any) -> str:
    """A readable message for one pydantic error dict."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown field {str(err['loc'][-1])!r}"
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be blank" if n == 1 else f"must be at least {n} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "enum":
        return f"must be one of {ctx.get('expected')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == SINGLE_LINE_PATTERN:
        return "must be a single line without control characters"
    msg: str = err["msg"]
    for old, new in (("Input should be", "must be"), ("String should", "must"), ("Value error, ", "")):
        msg = msg.replace(old, new)
    return msg


def field_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """A pydantic location as a field name: ('events', 0, 'data', 'x') → 'events[0].data.x'."""
    out = prefix
    for part in loc:
        if part == "[key]":  # a bad dict key is reported at the key itself
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """`{field, message}` for each error, `field` a path under `prefix`."""
    return [
        {"field": field_path(err["loc"], prefix), "message": error_message(err)}
        for err in exc.errors(include_url=False)
    ]
