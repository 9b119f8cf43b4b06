"""The disclosure projection: consents, every event per enterprise (feeds, reports), the delivery queue.

Applied exactly once per event by ``carbon.projection.Projector``; ``carbon replay disclosure``
rebuilds it through ``create_projector``. Subscriptions and deliveries are not part of the rebuilt
read model: a replayed event finds its delivery already recorded and queues nothing twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from carbon.consent_projection import apply_consent_event, consents, load_consents
from carbon.db import make_engine
from carbon.projection import Projection, Projector
from contracts import period_year
from services.disclosure import queue
from services.disclosure.tables import enterprises, events

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(engine: Engine) -> None:
    from carbon.migrate import upgrade

    upgrade(engine, MIGRATIONS)


def _year(envelope: dict[str, Any]) -> int | None:
    period = envelope["data"].get("period")
    if not isinstance(period, str):
        return None
    try:
        return period_year(period)
    except ValueError:
        return None


class DisclosureProjection(Projection):
    name = "disclosure"
    tables = (consents, events, enterprises)

    def apply(self, conn: Connection, envelope: dict[str, Any]) -> None:
        queue.lock_queue(conn)
        apply_consent_event(conn, envelope)
        enterprise_id = envelope["enterprise_id"]
        recorded_at = queue.parse_time(envelope["recorded_at"])
        conn.execute(events.insert().values(
            event_id=envelope["event_id"], enterprise_id=enterprise_id, stream_version=envelope["stream_version"],
            position=envelope["position"], type=envelope["type"], year=_year(envelope), recorded_at=recorded_at,
            envelope=envelope,
        ))
        if envelope["type"] == "EnterpriseRegistered":
            data = envelope["data"]
            conn.execute(enterprises.insert().values(
                enterprise_id=enterprise_id, name=data["name"], industry=data["industry"], region=data["region"],
                registered_at=recorded_at,
            ))
        if envelope["type"] == "ConsentRevoked":
            queue.cancel_after_revocation(conn, envelope)
        queue.enqueue_event(conn, envelope, load_consents(conn, enterprise_id))


def create_projector(database_url: str) -> Projector:
    """The projector over a (migrated) disclosure database; used by the service and ``carbon replay``."""
    engine = make_engine(database_url)
    migrate(engine)
    return Projector(DisclosureProjection(), engine)
