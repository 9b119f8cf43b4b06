"""Rating database: projection checkpoints, projected consents, facts and ratings; decisions, access log, claims.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from carbon.db import UTCDateTime
from carbon.consent_projection import create_consent_table
from carbon.projection import create_checkpoint_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    create_checkpoint_tables(op)
    create_consent_table(op)
    op.create_table(
        "rating_facts",
        sa.Column("enterprise_id", sa.String(64), primary_key=True),
        sa.Column("facts", sa.Text, nullable=False),
    )
    op.create_table(
        "ratings",
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
    op.create_index("ix_ratings_enterprise_recorded_at", "ratings", ["enterprise_id", "recorded_at"])
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
        sa.Column("issued_to", sa.String(128), nullable=False),
        sa.Column("issued_to_role", sa.String(32), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_decisions_enterprise_id", "decisions", ["enterprise_id"])
    op.create_table(
        "access_log",
        sa.Column("read_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
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
    op.create_index("ix_access_log_enterprise_id", "access_log", ["enterprise_id", "read_id"])
    op.create_table(
        "rediscount_claims",
        sa.Column("claim_id", sa.String(36), primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=False),
        sa.Column("claimed_at", UTCDateTime, nullable=False),
        sa.Column("reduction_tco2e", sa.String(40), nullable=False),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.UniqueConstraint("decision_id", name="uq_rediscount_claims_decision_id"),
    )
    op.create_index("ix_rediscount_claims_enterprise_id", "rediscount_claims", ["enterprise_id"])
    op.create_table(
        "rediscount_reservations",
        sa.Column("enterprise_id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("claim_id", sa.String(36), nullable=False),
        sa.Column("verified_reduction_tco2e", sa.String(40), nullable=False),
    )
    op.create_index("ix_rediscount_reservations_claim_id", "rediscount_reservations", ["claim_id"])


def downgrade() -> None:
    for table in ("rediscount_reservations", "rediscount_claims", "access_log", "decisions", "ratings",
                  "rating_facts", "consents", "projection_heads", "projection_stream_checkpoints"):
        op.drop_table(table)
