"""The delivery queue: which events go to which subscription, and what a revocation cancels.

An event is queued for a subscription when the subscription's filters match it and, at the event's
``recorded_at``, the enterprise had granted the subscribing partner ``events:subscribe``. The queue is
written in the projection's transaction (so nothing is queued twice or lost) and when a subscription
is made (its consented history). Both take one lock first, so neither misses what the other commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, select

from carbon.consent import ConsentDecision, ConsentRecord, decide
from carbon.consent_projection import consents as consent_table
from carbon.consent_projection import load_consents
from carbon.db import is_sqlite
from contracts import Scope
from services.disclosure.tables import deliveries, events, subscriptions

SUBSCRIBE = Scope.EVENTS_SUBSCRIBE.value
_QUEUE_LOCK = 7204  # PostgreSQL advisory lock key: the projection and new subscriptions take turns

PENDING, DELIVERED, DEAD, CANCELLED = "pending", "delivered", "dead", "cancelled"
# Deliveries that still hold back the later events of their enterprise (order per enterprise).
UNFINISHED = (PENDING, DEAD)


def lock_queue(conn: Connection) -> None:
    # SQLite writers already hold the database write lock from BEGIN IMMEDIATE.
    if not is_sqlite(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _QUEUE_LOCK})


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def partners_in_force(consents: Iterable[ConsentRecord], moment: datetime) -> set[str]:
    """Grantees that held ``events:subscribe`` at ``moment``."""
    return {c.grantee for c in consents if SUBSCRIBE in c.scopes and c.in_force_at(moment)}


def subscribed_now(consents: Iterable[ConsentRecord], partner: str, now: datetime) -> ConsentDecision:
    return decide(consents, partner, SUBSCRIBE, now)


def matches(subscription: Any, event_type: str, enterprise_id: str) -> bool:
    if event_type not in subscription.event_types:
        return False
    return subscription.enterprise_ids is None or enterprise_id in subscription.enterprise_ids


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if is_sqlite(conn):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    # A replayed event finds its delivery already there (delivered, cancelled or queued): leave it be.
    conn.execute(insert(deliveries).values(rows).on_conflict_do_nothing(
        index_elements=["subscription_id", "event_id"]))


def delivery_row(subscription_id: str, enterprise_id: str, stream_version: int, event_id: str, event_type: str,
                 now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": str(uuid.uuid4()), "subscription_id": subscription_id, "enterprise_id": enterprise_id,
        "stream_version": stream_version, "event_id": event_id, "event_type": event_type, "status": PENDING,
        "attempts": 0, "next_attempt_at": now, "created_at": now,
    }


def enqueue_event(conn: Connection, envelope: dict[str, Any], consents: list[ConsentRecord]) -> int:
    """Queue a newly projected event for every subscription allowed to receive it."""
    partners = partners_in_force(consents, parse_time(envelope["recorded_at"]))
    if not partners:
        return 0
    enterprise_id, event_type = envelope["enterprise_id"], envelope["type"]
    now = datetime.now(UTC)
    rows = [
        delivery_row(s.subscription_id, enterprise_id, envelope["stream_version"], envelope["event_id"], event_type, now)
        for s in conn.execute(select(subscriptions).where(subscriptions.c.active.is_(True),
                                                          subscriptions.c.partner.in_(partners)))
        if matches(s, event_type, enterprise_id)
    ]
    _insert_ignoring_duplicates(conn, rows)
    return len(rows)


def cancel(conn: Connection, subscription_ids: Iterable[str], enterprise_id: str | None, reason: str,
           before_version: int | None = None) -> int:
    """Cancel what is still queued (and dead letters) for these subscriptions and enterprise."""
    ids = list(subscription_ids)
    if not ids:
        return 0
    where = [deliveries.c.subscription_id.in_(ids), deliveries.c.status.in_(UNFINISHED)]
    if enterprise_id is not None:
        where.append(deliveries.c.enterprise_id == enterprise_id)
    if before_version is not None:
        where.append(deliveries.c.stream_version < before_version)
    result = conn.execute(deliveries.update().where(*where).values(status=CANCELLED, cancelled_reason=reason,
                                                                   lease_until=None))
    return result.rowcount or 0


def cancel_after_revocation(conn: Connection, envelope: dict[str, Any]) -> int:
    """After a ConsentRevoked is projected: if the grantee no longer holds ``events:subscribe``,
    nothing queued before the revocation leaves for it any more."""
    consent_id = envelope["data"]["consent_id"]
    enterprise_id = envelope["enterprise_id"]
    consents = load_consents(conn, enterprise_id)
    revoked = next((c for c in consents if c.consent_id == consent_id), None)
    if revoked is None or SUBSCRIBE not in revoked.scopes:
        return 0
    if subscribed_now(consents, revoked.grantee, parse_time(envelope["recorded_at"])).allowed:
        return 0  # another consent still covers the partner
    ids = conn.execute(select(subscriptions.c.subscription_id).where(subscriptions.c.partner == revoked.grantee)).scalars()
    return cancel(conn, ids, enterprise_id, "consent_revoked", before_version=envelope["stream_version"])


def backfill(conn: Connection, subscription: Any, now: datetime) -> int:
    """Queue a new subscription's consented history: every matching event of each enterprise that
    granted the partner ``events:subscribe`` at the event's time and still grants it now."""
    query = select(consent_table.c.enterprise_id).where(consent_table.c.grantee == subscription.partner).distinct()
    if subscription.enterprise_ids is not None:
        query = query.where(consent_table.c.enterprise_id.in_(subscription.enterprise_ids))
    queued = 0
    for enterprise_id in conn.execute(query).scalars().all():
        consents = load_consents(conn, enterprise_id, subscription.partner)
        if not subscribed_now(consents, subscription.partner, now).allowed:
            continue
        rows = []
        for e in conn.execute(
            select(events.c.event_id, events.c.stream_version, events.c.type, events.c.recorded_at)
            .where(events.c.enterprise_id == enterprise_id, events.c.type.in_(subscription.event_types))
            .order_by(events.c.stream_version)
        ):
            if subscription.partner in partners_in_force(consents, e.recorded_at):
                rows.append(delivery_row(subscription.subscription_id, enterprise_id, e.stream_version, e.event_id,
                                         e.type, now))
        for start in range(0, len(rows), 500):
            _insert_ignoring_duplicates(conn, rows[start:start + 500])
        queued += len(rows)
    return queued
