"""The outbox relay: sends committed events to the broker in position order, marks them after the ack.

Guarantees: nothing uncommitted is ever sent (rows are written in the event's own transaction);
nothing committed is lost (a row stays pending until the broker acknowledged it); per enterprise,
events leave in stream order (one relay at a time, pending rows in position order, a failed batch
is retried whole). A crash between the ack and the mark re-sends that batch: consumers deduplicate.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, select, text, update

from carbon.db import is_sqlite, read_transaction, write_transaction
from carbon.eventstore.schema import events, outbox
from carbon.eventstore.store import recorded_from_row

log = logging.getLogger("carbon.outbox")
# Session-level advisory lock: the one relay per PostgreSQL database that may send.
RELAY_LOCK_KEY = 7202


class Publisher(Protocol):
    def publish(self, envelopes: Sequence[dict[str, Any]]) -> None:
        """Return only once every envelope is acknowledged; raise otherwise."""

    def close(self) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        idle_wait_s: float = 0.05,
        max_backoff_s: float = 10.0,
        keep_published: timedelta = timedelta(hours=24),
    ) -> None:
        self.engine, self.publisher = engine, publisher
        self.batch_size, self.idle_wait_s, self.max_backoff_s = batch_size, idle_wait_s, max_backoff_s
        self.keep_published = keep_published
        self.published_total = 0
        self._stop = threading.Event()

    # ---- one step ------------------------------------------------------------------------

    def pending(self) -> int:
        with read_transaction(self.engine) as conn:
            return conn.execute(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))).scalar_one()

    def relay_once(self) -> int:
        """Send one batch of pending events; return how many were sent (0: nothing pending)."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(events)
                .join(outbox, outbox.c.position == events.c.position)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.position)
                .limit(self.batch_size)
            ).all()
        if not rows:
            return 0
        envelopes = [recorded_from_row(row).envelope() for row in rows]
        self.publisher.publish(envelopes)
        positions = [e["position"] for e in envelopes]
        with write_transaction(self.engine) as conn:
            conn.execute(update(outbox).where(outbox.c.position.in_(positions)).values(published_at=datetime.now(UTC)))
        self.published_total += len(positions)
        return len(positions)

    def purge_published(self) -> int:
        """Forget rows sent long ago (the events themselves stay in the store)."""
        horizon = datetime.now(UTC) - self.keep_published
        with write_transaction(self.engine) as conn:
            return conn.execute(delete(outbox).where(outbox.c.published_at < horizon)).rowcount

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Relay until ``stop()``; retries with exponential backoff and jitter while the broker is away."""
        leader = None
        try:
            failures, last_purge = 0, datetime.now(UTC)
            while not self._stop.is_set():
                try:
                    if not is_sqlite(self.engine) and not self._leads(leader):
                        # The lock lives in one session: a database restart ends it, and another relay
                        # may take it. Send nothing until this relay holds it again.
                        if leader is not None:
                            self._release(leader)
                        leader = self._become_leader()
                        continue
                    sent = self.relay_once()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the relay must outlive broker and database outages
                    failures += 1
                    delay = min(self.max_backoff_s, 0.1 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                    log.warning("outbox relay: %s; retrying in %.1f s", exc, delay)
                    self._stop.wait(delay)
                    continue
                if datetime.now(UTC) - last_purge > timedelta(minutes=10):
                    self.purge_published()
                    last_purge = datetime.now(UTC)
                if sent < self.batch_size:
                    self._stop.wait(self.idle_wait_s)
        finally:
            if leader is not None:
                self._release(leader)
            self.publisher.close()

    def _become_leader(self):
        """Wait for the advisory lock that makes this the only relay of the database."""
        while not self._stop.is_set():
            conn = None
            try:
                conn = self.engine.connect()  # inside the try: a database away must not end the relay
                if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": RELAY_LOCK_KEY}).scalar_one():
                    conn.commit()
                    return conn
            except Exception:  # noqa: BLE001 - database away: try again
                log.warning("outbox relay: cannot reach the database to take the relay lock", exc_info=True)
            if conn is not None:
                self._release(conn)
            self._stop.wait(1.0)
        return None

    @staticmethod
    def _leads(conn) -> bool:
        """Whether this session still holds the relay lock (False once its connection is gone)."""
        if conn is None:
            return False
        try:
            held = conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND classid = 0 AND objid = :k AND objsubid = 1 AND granted)"), {"k": RELAY_LOCK_KEY}).scalar_one()
            conn.commit()
            return bool(held)
        except Exception:  # noqa: BLE001 - a broken session holds nothing
            return False

    @staticmethod
    def _release(conn) -> None:
        """End the session (back in the pool it would keep holding the lock)."""
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not end the relay
            log.debug("closing the relay lock's connection failed", exc_info=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
