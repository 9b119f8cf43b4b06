"""Accounting: stored calculations and benefit measurements.

Revision ID: acc0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from carbon.db import UTCDateTime

revision = "acc0001"
down_revision = None
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "accounting_calculations",
        sa.Column("calculation_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("enterprise_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("request", JSONDocument, nullable=False),
        sa.Column("result", JSONDocument, nullable=False),
        sa.Column("events", JSONDocument, nullable=False),
        sa.Column("gross_tco2e", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=True),
        sa.Column("record_result", JSONDocument, nullable=True),
    )
    op.create_index("ix_accounting_calculations_enterprise_period", "accounting_calculations",
                    ["enterprise_id", "kind", "period"])


def downgrade() -> None:
    op.drop_index("ix_accounting_calculations_enterprise_period", "accounting_calculations")
    op.drop_table("accounting_calculations")
