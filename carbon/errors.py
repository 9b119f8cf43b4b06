"""Refusals raised by domain and service code of every service, free of HTTP.

The HTTP layer (``carbon.problems``) maps each kind to its status and problem+json body.
"""

from __future__ import annotations


class AppError(Exception):
    """Base of the platform's expected refusals."""


class Forbidden(AppError):
    """Authenticated but not allowed; ``reason`` is one of SPEC §5's machine-readable reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Invalid(AppError):
    """Input that breaks a rule; ``errors`` names each bad field as ``{field, message}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class NotFound(AppError):
    pass


class Conflict(AppError):
    pass


class Unavailable(AppError):
    """The service cannot do it right now (e.g. its database failed); the caller may try again."""
