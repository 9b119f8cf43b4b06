"""Webhook delivery: a worker pool draining one queue per subscription.

- At least once: a delivery is done only when the partner answered 2xx; a crash mid-attempt leaves it
  queued (its lease expires) and it is sent again.
- In order per enterprise: only the earliest unfinished delivery of each (subscription, enterprise)
  is ever attempted, so event n+1 never leaves before n was delivered. A dead letter keeps holding
  the later events back until the partner replays it.
- Isolation: a subscription is worked by at most one worker at a time, each request is bounded by
  a timeout, and a worker hands its subscription back after a slice of time, so a slow or failing
  partner occupies one worker at most and never holds back the others.
- Consent and the callback's address are checked again right before each attempt.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, and_, func, or_, select

from carbon.consent_projection import load_consents
from carbon.db import read_transaction, write_transaction
from services.disclosure import queue, webhooks
from services.disclosure.callbacks import CallbackRefused, Resolver, check_callback, system_resolver
from services.disclosure.settings import DisclosureSettings
from services.disclosure.tables import deliveries, events, subscriptions

log = logging.getLogger("carbon.disclosure.delivery")

SLICE_S = 5.0  # how long one worker keeps a subscription before giving the others a turn
HEADS_PER_ROUND = 50


def head_rows(subscription_id: str | None = None):
    """The earliest unfinished delivery of each (subscription, enterprise): the only one that may go next."""
    inner = select(deliveries.c.subscription_id, deliveries.c.enterprise_id,
                   func.min(deliveries.c.stream_version).label("v")).where(deliveries.c.status.in_(queue.UNFINISHED))
    if subscription_id is not None:
        inner = inner.where(deliveries.c.subscription_id == subscription_id)
    heads = inner.group_by(deliveries.c.subscription_id, deliveries.c.enterprise_id).subquery()
    return heads, and_(deliveries.c.subscription_id == heads.c.subscription_id,
                       deliveries.c.enterprise_id == heads.c.enterprise_id,
                       deliveries.c.stream_version == heads.c.v)


def _ready(now: datetime):
    return and_(deliveries.c.status == queue.PENDING, deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now))


class Deadline:
    """Bounds a request as a whole: httpx's timeout bounds each read, so a partner answering a byte at
    a time would hold its worker for as long as it liked. At the deadline the socket is shut down,
    which ends the request with an error in the worker's own thread."""

    def __init__(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._done = False
        self.expired = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: learn the connection's socket once it is made."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                if self.expired and not self._done:
                    self._shut()

    def _expire(self) -> None:
        with self._lock:
            if not self._done:
                self.expired = True
                self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            try:
                # The plain socket's shutdown, also under TLS: the TLS layer's own would drop its state
                # under the reading thread's feet.
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None


class DeliveryWorkers:
    def __init__(self, engine: Engine, settings: DisclosureSettings, *, resolve: Resolver = system_resolver,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.settings, self.resolve, self.clock = engine, settings, resolve, clock
        self._pool = ThreadPoolExecutor(max(1, settings.webhook_workers), thread_name_prefix="webhook")
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # No keep-alive: requests go to a pinned address with their own TLS server name, and a pooled
        # connection must never carry one partner's request over another partner's TLS session.
        # trust_env=False: a proxy from the environment would resolve the name again, unchecked.
        self._http = httpx.Client(timeout=httpx.Timeout(settings.webhook_timeout_s), follow_redirects=False,
                                  trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
        self.last_error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._dispatch, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def wake(self) -> None:
        self._wake.set()

    # ---- dispatching -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                for subscription_id in self.due_subscriptions():
                    with self._lock:
                        if subscription_id in self._busy or self._stop.is_set():
                            continue
                        self._busy.add(subscription_id)
                    self._pool.submit(self._work, subscription_id)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the database may come back; keep dispatching
                self.last_error = exc
                log.warning("webhook dispatcher: %s", exc)
                self._stop.wait(1.0)
            self._wake.wait(self.settings.webhook_poll_interval_s)
            self._wake.clear()

    def due_subscriptions(self) -> list[str]:
        now = self.clock()
        heads, on = head_rows()
        query = select(deliveries.c.subscription_id).join(heads, on).where(_ready(now)).distinct()
        with read_transaction(self.engine) as conn:
            return list(conn.execute(query).scalars())

    def _work(self, subscription_id: str) -> None:
        try:
            until = time.monotonic() + SLICE_S
            while not self._stop.is_set() and time.monotonic() < until:
                heads = self.ready_heads(subscription_id)
                if not heads:
                    break
                for delivery_id in heads:
                    if self._stop.is_set():
                        break
                    self.attempt(delivery_id)
        except Exception:  # noqa: BLE001 - logged; the dispatcher hands the subscription out again
            log.exception("webhook worker for subscription %s", subscription_id)
        finally:
            with self._lock:
                self._busy.discard(subscription_id)

    def ready_heads(self, subscription_id: str) -> list[str]:
        now = self.clock()
        heads, on = head_rows(subscription_id)
        query = (select(deliveries.c.delivery_id).join(heads, on)
                 .where(deliveries.c.subscription_id == subscription_id, _ready(now))
                 .order_by(deliveries.c.next_attempt_at).limit(HEADS_PER_ROUND))
        with read_transaction(self.engine) as conn:
            return list(conn.execute(query).scalars())

    # ---- one attempt -----------------------------------------------------------------------

    def attempt(self, delivery_id: str) -> None:
        prepared = self._claim(delivery_id)
        if prepared is None:
            return
        subscription, envelope = prepared
        outcome = self._send(subscription, envelope)
        self._record(delivery_id, outcome)

    def _claim(self, delivery_id: str) -> tuple[Any, dict[str, Any]] | None:
        """Lease the delivery and check it may still go; None when it may not (or is not ours)."""
        now = self.clock()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_s * 3 + 30)
        with write_transaction(self.engine) as conn:
            claimed = conn.execute(deliveries.update().where(deliveries.c.delivery_id == delivery_id, _ready(now))
                                   .values(lease_until=lease)).rowcount
            if claimed != 1:
                return None
            row = conn.execute(select(deliveries).where(deliveries.c.delivery_id == delivery_id)).one()
            subscription = conn.execute(
                select(subscriptions).where(subscriptions.c.subscription_id == row.subscription_id)).one()
            if not subscription.active:
                queue.cancel(conn, [row.subscription_id], None, "subscription_deleted")
                return None
            consents = load_consents(conn, row.enterprise_id, subscription.partner)
            decision = queue.subscribed_now(consents, subscription.partner, now)
            if not decision.allowed:
                # Nothing more of this enterprise leaves for this subscription.
                queue.cancel(conn, [row.subscription_id], row.enterprise_id, decision.reason or "no_consent")
                return None
            envelope = conn.execute(select(events.c.envelope).where(events.c.event_id == row.event_id)).scalar()
            if envelope is None:  # the projection is being rebuilt: try again shortly
                conn.execute(deliveries.update().where(deliveries.c.delivery_id == delivery_id)
                             .values(lease_until=None, next_attempt_at=now + timedelta(seconds=1)))
                return None
        return subscription, envelope

    def _send(self, subscription: Any, envelope: dict[str, Any]) -> Outcome:
        try:
            target = check_callback(subscription.callback_url, allow_private=self.settings.webhook_allow_private,
                                    resolve=self.resolve)
        except CallbackRefused as exc:
            return Outcome(False, None, f"callback refused: {exc}")
        body, headers = webhooks.message(envelope, subscription.secret, self.clock())
        headers["host"] = target.host_header()
        extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
        deadline = Deadline(self.settings.webhook_timeout_s)
        extensions["trace"] = deadline.trace
        try:
            with deadline, self._http.stream("POST", target.pinned_url(), content=body, headers=headers,
                                             extensions=extensions) as response:
                status = response.status_code
        except httpx.TimeoutException:
            return Outcome(False, None, f"no answer within {self.settings.webhook_timeout_s:g} s")
        except httpx.HTTPError as exc:
            if deadline.expired:
                return Outcome(False, None, f"no answer within {self.settings.webhook_timeout_s:g} s")
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return Outcome(True, status)
        return Outcome(False, status, f"the callback answered {status}")

    def _record(self, delivery_id: str, outcome: Outcome) -> None:
        now = self.clock()
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(deliveries.c.attempts, deliveries.c.status)
                               .where(deliveries.c.delivery_id == delivery_id)).one()
            attempts = row.attempts + 1
            common = {"attempts": attempts, "last_attempt_at": now, "last_status_code": outcome.status_code,
                      "lease_until": None}
            if outcome.ok:
                # It left: say so, even if a revocation cancelled it while the request was under way.
                conn.execute(deliveries.update().where(deliveries.c.delivery_id == delivery_id)
                             .values(status=queue.DELIVERED, delivered_at=now, last_error=None,
                                     cancelled_reason=None, **common))
                return
            values: dict[str, Any] = {"last_error": (outcome.error or "failed")[:500], **common}
            if attempts >= self.settings.webhook_max_attempts:
                values["status"] = queue.DEAD
            else:
                delay = webhooks.backoff_s(attempts, self.settings.webhook_backoff_base_s,
                                           self.settings.webhook_backoff_max_s)
                values["next_attempt_at"] = now + timedelta(seconds=delay)
            # A delivery cancelled meanwhile stays cancelled.
            conn.execute(deliveries.update().where(deliveries.c.delivery_id == delivery_id,
                                                   deliveries.c.status == queue.PENDING).values(**values))

