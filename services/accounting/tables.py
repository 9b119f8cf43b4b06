"""The accounting service's own database: every calculation it made, with the request that produced it.

Kept so that a replayed request returns the same result and records once, and so that the next period
can be compared with this one (the year-on-year check).
"""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from carbon.db import UTCDateTime

metadata = sa.MetaData()
JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")

calculations = sa.Table(
    "accounting_calculations",
    metadata,
    sa.Column("calculation_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # emissions | benefits
    sa.Column("enterprise_id", sa.String(64), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("request", JSONDocument, nullable=False),
    sa.Column("result", JSONDocument, nullable=False),
    sa.Column("events", JSONDocument, nullable=False),
    # Decimal as text: the figure exactly as presented, on both backends.
    sa.Column("gross_tco2e", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=True),
    sa.Column("record_result", JSONDocument, nullable=True),
)
