"""The disclosure service's use cases: partner subscriptions, their deliveries and feed, and reports."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from carbon.consent import decide
from carbon.consent_projection import consents as consent_table
from carbon.consent_projection import load_consents
from carbon.db import read_transaction, write_transaction
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.identity import Principal
from carbon.auth import require_role
from contracts import Role, Scope
from services.disclosure import domain, queue, webhooks
from services.disclosure.access_log import AccessLog
from services.disclosure.callbacks import CallbackRefused, Resolver, check_callback, system_resolver
from services.disclosure.tables import deliveries, enterprises, events, subscriptions

FEED_SCAN = 1000  # rows read per round while filling a feed page
REPORT_TYPES = (
    "ActivityReported", "EmissionRecorded", "EmissionVerified", "ReductionRecorded", "ReductionVerified",
    "CarbonAssetAcquired", "CarbonAssetPledged", "CarbonAssetReleased", "CarbonAssetTransferred", "CreditsRetired",
)


def subscription_view(row: Any) -> dict[str, Any]:
    return {"subscription_id": row.subscription_id, "partner": row.partner, "callback_url": row.callback_url,
            "event_types": list(row.event_types), "enterprise_ids": row.enterprise_ids,
            "status": "active" if row.active else "deleted", "created_at": row.created_at,
            "deleted_at": row.deleted_at}


def delivery_view(row: Any) -> dict[str, Any]:
    return {
        "delivery_id": row.delivery_id, "event_id": row.event_id, "event_type": row.event_type,
        "enterprise_id": row.enterprise_id, "stream_version": row.stream_version, "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.status == queue.PENDING else None,
        "last_attempt_at": row.last_attempt_at, "last_status_code": row.last_status_code,
        "last_error": row.last_error, "delivered_at": row.delivered_at, "cancelled_reason": row.cancelled_reason,
        "created_at": row.created_at,
    }


class DisclosureService:
    def __init__(self, engine: Engine, *, allow_private: bool, access_log: AccessLog,
                 resolve: Resolver = system_resolver, wake_workers: Callable[[], None] = lambda: None,
                 position: Callable[[], int | None] = lambda: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.allow_private, self.access_log = engine, allow_private, access_log
        self.resolve, self.wake_workers, self.position, self.clock = resolve, wake_workers, position, clock

    # ---- subscriptions ---------------------------------------------------------------------

    def create_subscription(self, principal: Principal, callback_url: str, event_types: list[str],
                            enterprise_ids: list[str] | None) -> dict[str, str]:
        require_role(principal, Role.PARTNER)
        try:
            target = check_callback(callback_url, allow_private=self.allow_private, resolve=self.resolve)
        except CallbackRefused as exc:
            raise Invalid([{"field": "callback_url", "message": str(exc)}]) from None
        now = self.clock()
        row = {
            "subscription_id": str(uuid.uuid4()), "partner": principal.sub, "callback_url": target.url,
            "event_types": sorted(set(event_types)),
            "enterprise_ids": sorted(set(enterprise_ids)) if enterprise_ids is not None else None,
            "secret": webhooks.new_secret(), "active": True, "created_at": now, "deleted_at": None,
        }
        with write_transaction(self.engine) as conn:
            queue.lock_queue(conn)
            conn.execute(subscriptions.insert().values(**row))
            created = conn.execute(select(subscriptions).where(
                subscriptions.c.subscription_id == row["subscription_id"])).one()
            queue.backfill(conn, created, now)
        self.wake_workers()
        return {"subscription_id": row["subscription_id"], "secret": row["secret"]}

    def _own(self, conn, principal: Principal, subscription_id: str) -> Any:
        require_role(principal, Role.PARTNER)
        row = conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id)).first()
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        if row.partner != principal.sub:
            raise Forbidden("not_owner", "this subscription belongs to another partner")
        return row

    def list_subscriptions(self, principal: Principal) -> list[dict[str, Any]]:
        require_role(principal, Role.PARTNER)
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(subscriptions).where(subscriptions.c.partner == principal.sub)
                                .order_by(subscriptions.c.created_at))
            return [subscription_view(r) for r in rows]

    def get_subscription(self, principal: Principal, subscription_id: str) -> dict[str, Any]:
        with read_transaction(self.engine) as conn:
            return subscription_view(self._own(conn, principal, subscription_id))

    def delete_subscription(self, principal: Principal, subscription_id: str) -> dict[str, Any]:
        with write_transaction(self.engine) as conn:
            row = self._own(conn, principal, subscription_id)
            if row.active:
                conn.execute(subscriptions.update().where(subscriptions.c.subscription_id == subscription_id)
                             .values(active=False, deleted_at=self.clock()))
                queue.cancel(conn, [subscription_id], None, "subscription_deleted")
            row = self._own(conn, principal, subscription_id)
            return subscription_view(row)

    # ---- deliveries ------------------------------------------------------------------------

    def list_deliveries(self, principal: Principal, subscription_id: str, *, status: str | None,
                        enterprise_id: str | None, after: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        with read_transaction(self.engine) as conn:
            self._own(conn, principal, subscription_id)
            query = select(deliveries).where(deliveries.c.subscription_id == subscription_id)
            if status is not None:
                query = query.where(deliveries.c.status == status)
            if enterprise_id is not None:
                query = query.where(deliveries.c.enterprise_id == enterprise_id)
            if after is not None:
                query = query.where(deliveries.c.seq > after)
            rows = conn.execute(query.order_by(deliveries.c.seq).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [delivery_view(r) for r in rows], (rows[-1].seq if more else None)

    def retry_delivery(self, principal: Principal, subscription_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a dead letter (or an already delivered event) again; consent is checked again on sending."""
        with write_transaction(self.engine) as conn:
            subscription = self._own(conn, principal, subscription_id)
            row = conn.execute(select(deliveries).where(deliveries.c.delivery_id == delivery_id,
                                                        deliveries.c.subscription_id == subscription_id)).first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id} in subscription {subscription_id}")
            if not subscription.active:
                raise Conflict("the subscription has been deleted")
            if row.status not in (queue.DEAD, queue.DELIVERED):
                raise Conflict(f"only a dead-lettered or delivered delivery can be sent again; this one is {row.status}")
            conn.execute(deliveries.update().where(deliveries.c.delivery_id == delivery_id).values(
                status=queue.PENDING, attempts=0, next_attempt_at=self.clock(), lease_until=None))
            row = conn.execute(select(deliveries).where(deliveries.c.delivery_id == delivery_id)).one()
        self.wake_workers()
        return delivery_view(row)

    def replay_dead_letters(self, principal: Principal, subscription_id: str, enterprise_id: str | None) -> int:
        with write_transaction(self.engine) as conn:
            subscription = self._own(conn, principal, subscription_id)
            if not subscription.active:
                raise Conflict("the subscription has been deleted")
            where = [deliveries.c.subscription_id == subscription_id, deliveries.c.status == queue.DEAD]
            if enterprise_id is not None:
                where.append(deliveries.c.enterprise_id == enterprise_id)
            count = conn.execute(deliveries.update().where(*where).values(
                status=queue.PENDING, attempts=0, next_attempt_at=self.clock(), lease_until=None)).rowcount
        self.wake_workers()
        return count or 0

    # ---- pull feed -------------------------------------------------------------------------

    def feed(self, principal: Principal, subscription_id: str, after: int | None,
             limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Events for the subscription, filtered exactly like webhook deliveries; ``next`` resumes after
        the last event read (returned or filtered out)."""
        now = self.clock()
        with read_transaction(self.engine) as conn:
            sub = self._own(conn, principal, subscription_id)
            if not sub.active:
                raise Conflict("the subscription has been deleted")
            candidates = select(consent_table.c.enterprise_id).where(consent_table.c.grantee == sub.partner).distinct()
            if sub.enterprise_ids is not None:
                candidates = candidates.where(consent_table.c.enterprise_id.in_(sub.enterprise_ids))
            consents_of: dict[str, list] = {}
            for enterprise_id in conn.execute(candidates).scalars().all():
                records = load_consents(conn, enterprise_id, sub.partner)
                # Revoked or expired now: nothing more of this enterprise leaves, history included.
                if queue.subscribed_now(records, sub.partner, now).allowed:
                    consents_of[enterprise_id] = records
            out: list[dict[str, Any]] = []
            cursor = after
            if not consents_of:
                return out, cursor
            while len(out) < limit:
                query = (select(events.c.seq, events.c.enterprise_id, events.c.recorded_at, events.c.envelope)
                         .where(events.c.enterprise_id.in_(list(consents_of)), events.c.type.in_(sub.event_types)))
                if cursor is not None:
                    query = query.where(events.c.seq > cursor)
                rows = conn.execute(query.order_by(events.c.seq).limit(FEED_SCAN)).all()
                for row in rows:
                    if sub.partner in queue.partners_in_force(consents_of[row.enterprise_id], row.recorded_at):
                        out.append(row.envelope)
                    cursor = row.seq
                    if len(out) >= limit:
                        break
                if len(rows) < FEED_SCAN:
                    break
        return out, cursor

    # ---- disclosure reports ----------------------------------------------------------------

    def report(self, principal: Principal, enterprise_id: str, year: int, fmt: str) -> dict[str, Any]:
        """The report, once the reader is allowed and (for a third party) the read has been logged."""
        now = self.clock()
        with read_transaction(self.engine) as conn:
            enterprise = conn.execute(select(enterprises).where(enterprises.c.enterprise_id == enterprise_id)).first()
            if enterprise is None:
                raise NotFound(f"no enterprise {enterprise_id}")
            log_entry: dict[str, Any] | None = None
            if principal.role is Role.ENTERPRISE and principal.sub == enterprise_id:
                pass  # its own data
            elif principal.role is Role.REGULATOR:
                log_entry = {"consent_id": None, "supervisory": True}
            else:
                scope = Scope.DISCLOSURE_READ.value
                decision = decide(load_consents(conn, enterprise_id, principal.sub), principal.sub, scope, now)
                if not decision.allowed:
                    raise Forbidden(decision.reason or "no_consent",
                                    f"reading this disclosure needs the enterprise's consent with scope {scope!r}")
                log_entry = {"consent_id": decision.consent_id, "supervisory": False}
            envelopes = conn.execute(select(events.c.envelope).where(
                events.c.enterprise_id == enterprise_id, events.c.type.in_(REPORT_TYPES))
                .order_by(events.c.stream_version)).scalars().all()
        report = domain.build_report(
            domain.Enterprise(enterprise.enterprise_id, enterprise.name, enterprise.industry, enterprise.region),
            envelopes, year, now=now)
        report["position"] = self.position()
        if log_entry is not None:
            self.access_log.record(enterprise_id, party=principal.sub, role=principal.role.value,
                                   what=f"disclosure:{year}", **log_entry)
        return report
