"""The rating database: the projection's read model, and what the service itself owns.

The projection's tables (``PROJECTION_TABLES``) are rebuilt from the account's events by replay.
Decisions, the access log and re-discount claims are facts of this service alone; a replay keeps them.
"""

from __future__ import annotations

import sqlalchemy as sa

from carbon.consent_projection import consents
from carbon.db import UTCDateTime

metadata = sa.MetaData()

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Per enterprise, the facts the methodology needs (JSON of ``domain.Facts``).
rating_facts = sa.Table(
    "rating_facts",
    metadata,
    sa.Column("enterprise_id", sa.String(64), primary_key=True),
    sa.Column("facts", sa.Text, nullable=False),
)

# Every change of an enterprise's rating, stamped with the knowledge time of the event that caused it.
ratings = sa.Table(
    "ratings",
    metadata,
    sa.Column("enterprise_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("stream_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("grade", sa.String(4), nullable=True),
    sa.Column("score", sa.Integer, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
)

# Every rating, price and eligibility answer, byte for byte, under its decision_id.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("enterprise_id", sa.String(64), nullable=False, index=True),
    sa.Column("issued_to", sa.String(128), nullable=False),
    sa.Column("issued_to_role", sa.String(32), nullable=False),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=True),
    sa.Column("body", sa.Text, nullable=False),
)

# Every third-party read of an enterprise's rating, pricing, eligibility (and, reported by the
# disclosure service, its disclosures), for the enterprise to see.
access_log = sa.Table(
    "access_log",
    metadata,
    sa.Column("read_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("enterprise_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("party", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("what", sa.String(200), nullable=False),
    sa.Column("consent_id", sa.String(64), nullable=True),
    sa.Column("supervisory", sa.Boolean, nullable=False),
    sa.Column("decision_id", sa.String(36), nullable=True),
    sa.Column("reported_by", sa.String(64), nullable=False),
    sqlite_autoincrement=True,
)

rediscount_claims = sa.Table(
    "rediscount_claims",
    metadata,
    sa.Column("claim_id", sa.String(36), primary_key=True),
    sa.Column("decision_id", sa.String(36), nullable=False, unique=True),
    sa.Column("enterprise_id", sa.String(64), nullable=False, index=True),
    sa.Column("claimed_by", sa.String(128), nullable=False),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.Column("reduction_tco2e", sa.String(40), nullable=False),  # a decimal, kept exact
    sa.Column("reference", sa.String(128), nullable=True),
)

# One row per (enterprise, project, year) of verified tonnes backing a claim: the primary key is
# what stops the same tonnes backing two claims, even when two claims race on PostgreSQL.
rediscount_reservations = sa.Table(
    "rediscount_reservations",
    metadata,
    sa.Column("enterprise_id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("claim_id", sa.String(36), nullable=False, index=True),
    sa.Column("verified_reduction_tco2e", sa.String(40), nullable=False),
)

PROJECTION_TABLES = (consents, rating_facts, ratings)
