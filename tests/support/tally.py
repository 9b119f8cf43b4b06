"""A test projection whose state proves exactly-once, in-order application.

Per stream it keeps a count and a checksum chained over the event hashes in the order applied:
equal to the store's own fold only if every event was applied once, in stream order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, select

from carbon.db import upsert
from carbon.projection import Projection, checkpoint_metadata

metadata = sa.MetaData()
tally = sa.Table(
    "tally",
    metadata,
    sa.Column("stream_id", sa.String(64), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
)


def chained(checksum: str, event_hash: str) -> str:
    return hashlib.sha256((checksum + event_hash).encode()).hexdigest()


def expected_tally(envelopes: Iterable[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """What the projection must hold, computed straight from the store's events."""
    out: dict[str, tuple[int, str]] = {}
    for e in sorted(envelopes, key=lambda e: (e["enterprise_id"], e["stream_version"])):
        count, checksum = out.get(e["enterprise_id"], (0, ""))
        out[e["enterprise_id"]] = (count + 1, chained(checksum, e["hash"]))
    return out


class TallyProjection(Projection):
    name = "tally"
    tables = (tally,)

    def apply(self, conn: Connection, envelope: dict[str, Any]) -> None:
        row = conn.execute(select(tally.c.count, tally.c.checksum).where(tally.c.stream_id == envelope["enterprise_id"])).first()
        count, checksum = (row.count, row.checksum) if row else (0, "")
        upsert(conn, tally, [{"stream_id": envelope["enterprise_id"], "count": count + 1,
                              "checksum": chained(checksum, envelope["hash"])}], ["stream_id"])


def create_schema(engine: Engine) -> None:
    checkpoint_metadata.create_all(engine)
    metadata.create_all(engine)


def read_tally(engine: Engine) -> dict[str, tuple[int, str]]:
    with engine.connect() as conn:
        return {r.stream_id: (r.count, r.checksum) for r in conn.execute(select(tally))}
