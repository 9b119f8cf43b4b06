"""Consent decisions (SPEC §1, §5): who may see an enterprise's data, and why not.

Pure functions over consent records, shared by the account service (verifiers, stream readers)
and the projections that check their own projected copy of the consents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    consent_id: str
    grantee: str
    scopes: frozenset[str]
    purpose: str
    expires_at: datetime
    granted_at: datetime
    revoked_at: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"

    def in_force_at(self, moment: datetime) -> bool:
        """Granted by ``moment``, not yet revoked and not yet expired then."""
        return self.granted_at <= moment and self.status(moment) == "active"


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    allowed: bool
    reason: str | None  # no_consent | consent_revoked | consent_expired | scope_missing
    consent_id: str | None = None


def decide(consents: Iterable[ConsentRecord], grantee: str, scope: str, now: datetime) -> ConsentDecision:
    """Whether ``grantee`` holds ``scope`` at ``now``; when not, the most telling reason."""
    own = [c for c in consents if c.grantee == grantee and c.granted_at <= now]
    with_scope = [c for c in own if scope in c.scopes]
    for consent in with_scope:
        if consent.status(now) == "active":
            return ConsentDecision(True, None, consent.consent_id)
    if with_scope:
        latest = max(with_scope, key=lambda c: c.granted_at)
        reason = "consent_revoked" if latest.status(now) == "revoked" else "consent_expired"
        return ConsentDecision(False, reason, latest.consent_id)
    if any(c.status(now) == "active" for c in own):
        return ConsentDecision(False, "scope_missing")
    return ConsentDecision(False, "no_consent")


REASON_TEXT = {
    "no_consent": "the enterprise has not granted you consent",
    "consent_revoked": "the enterprise revoked its consent",
    "consent_expired": "your consent has expired",
    "scope_missing": "your consent does not cover this scope",
}
