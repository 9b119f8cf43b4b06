"""The rating projection: folds every account event into per-enterprise facts and keeps each rating change.

Each rating row carries the ``recorded_at`` (knowledge time) and position of the event that produced
it; the methodology sees only the events and that time, never the clock, so a replay reproduces
every row. Consents are projected alongside, for the service's consent checks.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from carbon.consent_projection import apply_consent_event
from carbon.db import make_engine
from carbon.migrate import upgrade
from carbon.projection import Projection, Projector
from contracts import EVENT_TYPES
from services.rating import domain
from services.rating.config import BenchmarkTable
from services.rating.schema import PROJECTION_TABLES, rating_facts, ratings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def migrate(engine: Engine) -> None:
    upgrade(engine, MIGRATIONS)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def canonical(document: Any) -> str:
    """The one textual form of a stored JSON document (so equal ratings compare equal as text)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)


class RatingProjection(Projection):
    name = "rating"
    tables = PROJECTION_TABLES

    def __init__(self, benchmarks: BenchmarkTable) -> None:
        self.benchmarks = benchmarks

    def apply(self, conn: Connection, envelope: dict[str, Any]) -> None:
        if apply_consent_event(conn, envelope):
            return
        event_type = envelope["type"]
        if event_type not in domain.RATING_EVENTS:
            return  # asset movements and unknown types do not enter the rating
        enterprise_id = envelope["enterprise_id"]
        data = EVENT_TYPES[event_type].model_validate(envelope["data"])
        row = conn.execute(select(rating_facts.c.facts).where(rating_facts.c.enterprise_id == enterprise_id)).first()
        facts = domain.Facts.from_json(json.loads(row.facts)) if row else domain.Facts(enterprise_id)
        facts.apply(event_type, data, envelope["event_id"])
        document = canonical(facts.to_json())
        if row:
            conn.execute(rating_facts.update().where(rating_facts.c.enterprise_id == enterprise_id).values(facts=document))
        else:
            conn.execute(rating_facts.insert().values(enterprise_id=enterprise_id, facts=document))

        at = _time(envelope["recorded_at"])
        rating = domain.rate(facts, at, self.benchmarks)
        body = canonical(rating.to_dict())
        last = conn.execute(
            select(ratings.c.seq, ratings.c.body).where(ratings.c.enterprise_id == enterprise_id)
            .order_by(ratings.c.seq.desc()).limit(1)
        ).first()
        if last is not None and last.body == body:
            return  # the event changed nothing the rating shows: history keeps only changes
        conn.execute(ratings.insert().values(
            enterprise_id=enterprise_id, seq=(last.seq if last else 0) + 1, recorded_at=at,
            position=envelope["position"], stream_version=envelope["stream_version"], status=rating.status,
            grade=rating.grade, score=rating.score, body=body,
        ))


def build_projector(engine: Engine, benchmarks: BenchmarkTable) -> Projector:
    return Projector(RatingProjection(benchmarks), engine)


def create_projector(database_url: str) -> Projector:
    """For ``carbon replay rating``: the migrated rating database and its projector."""
    from services.rating.settings import RatingSettings

    engine = make_engine(database_url)
    migrate(engine)
    return build_projector(engine, RatingSettings().reference_data().benchmarks)
