"""The projected copy of every enterprise's consents, shared by the projection services.

Rating and disclosure check consent against their own projection (SPEC §2), so a grant or a
revocation takes effect within the projection lag. The rows keep grant and revocation times, so a
decision can also be taken "as of" a past moment (what the partner was allowed when an event happened).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, bindparam, select

from carbon.consent import ConsentRecord
from carbon.db import UTCDateTime, insert_many

consent_metadata = sa.MetaData()


def _columns() -> list[sa.Column]:
    # Fresh Column objects each call: one for the table below, one per migration that creates it.
    return [
        sa.Column("consent_id", sa.String(36), primary_key=True),
        sa.Column("enterprise_id", sa.String(64), nullable=False, index=True),
        sa.Column("grantee", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(512), nullable=False),  # space-separated
        sa.Column("purpose", sa.String(500), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("granted_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
    ]


consents = sa.Table("consents", consent_metadata, *_columns())


def create_consent_table(op) -> None:
    """For a projection service's Alembic revision: the consent table (and its index), defined once here."""
    op.create_table("consents", *_columns())


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _granted_row(envelope: dict[str, Any]) -> dict[str, Any]:
    data = envelope["data"]
    return {"consent_id": data["consent_id"], "enterprise_id": envelope["enterprise_id"], "grantee": data["grantee"],
            "scopes": " ".join(sorted(data["scopes"])), "purpose": data["purpose"],
            "expires_at": _time(data["expires_at"]), "granted_at": _time(envelope["recorded_at"]), "revoked_at": None}


# Built once, values bound per execution (no statement construction per event).
_GRANT = consents.insert()
_REVOKE = consents.update().where(consents.c.consent_id == bindparam("c_id")).values(revoked_at=bindparam("at"))


def apply_consent_event(conn: Connection, envelope: dict[str, Any]) -> bool:
    """Project ConsentGranted/ConsentRevoked at once; return False for any other event type."""
    if envelope["type"] == "ConsentGranted":
        conn.execute(_GRANT, _granted_row(envelope))
        return True
    if envelope["type"] == "ConsentRevoked":
        conn.execute(_REVOKE, {"c_id": envelope["data"]["consent_id"], "at": _time(envelope["recorded_at"])})
        return True
    return False


class ConsentWrites:
    """A batch's consent events, written together at its end (for a projection that does not read
    consents while applying): every grant in one statement, then the revocations of earlier grants."""

    def __init__(self) -> None:
        self.granted: dict[str, dict[str, Any]] = {}
        self.revoked: list[dict[str, Any]] = []

    def apply(self, envelope: dict[str, Any]) -> bool:
        """Take ConsentGranted/ConsentRevoked; return False for any other event type."""
        if envelope["type"] == "ConsentGranted":
            row = _granted_row(envelope)
            self.granted[row["consent_id"]] = row
            return True
        if envelope["type"] == "ConsentRevoked":
            consent_id, at = envelope["data"]["consent_id"], _time(envelope["recorded_at"])
            if consent_id in self.granted:  # granted in this batch: its row goes in revoked
                self.granted[consent_id]["revoked_at"] = at
            else:
                self.revoked.append({"c_id": consent_id, "at": at})
            return True
        return False

    def write(self, conn: Connection) -> None:
        insert_many(conn, consents, list(self.granted.values()))
        if self.revoked:
            conn.execute(_REVOKE, self.revoked)
        self.granted, self.revoked = {}, []


# Built once too: consent checks run on every third-party read, and a
# statement object reused skips SQLAlchemy's per-call construction and cache-key work.
_OF_ENTERPRISE = select(consents).where(consents.c.enterprise_id == bindparam("enterprise_id"))
_OF_GRANTEE = _OF_ENTERPRISE.where(consents.c.grantee == bindparam("grantee"))
# Plain IN lists (an index on enterprise_id serves them); the pairs asked are picked out on return.
_OF_MANY = select(consents).where(consents.c.enterprise_id.in_(bindparam("enterprise_ids", expanding=True)),
                                  consents.c.grantee.in_(bindparam("grantees", expanding=True)))


def load_consents(conn: Connection, enterprise_id: str, grantee: str | None = None) -> list[ConsentRecord]:
    """The projected consents of an enterprise (to one grantee), as committed by the projection."""
    if grantee is None:
        rows = conn.execute(_OF_ENTERPRISE, {"enterprise_id": enterprise_id})
    else:
        rows = conn.execute(_OF_GRANTEE, {"enterprise_id": enterprise_id, "grantee": grantee})
    return [_record(r) for r in rows]


def load_consents_of(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[ConsentRecord]]:
    """``load_consents`` for many (enterprise, grantee) pairs in one statement; every pair asked is a key."""
    found: dict[tuple[str, str], list[ConsentRecord]] = {pair: [] for pair in pairs}
    if found:
        rows = conn.execute(_OF_MANY, {"enterprise_ids": sorted({e for e, _ in found}),
                                       "grantees": sorted({g for _, g in found})})
        for r in rows:
            if (r.enterprise_id, r.grantee) in found:
                found[(r.enterprise_id, r.grantee)].append(_record(r))
    return found


def _record(r) -> ConsentRecord:
    return ConsentRecord(r.consent_id, r.grantee, frozenset(r.scopes.split()), r.purpose, r.expires_at,
                         r.granted_at, r.revoked_at)
