"""The rating service's use cases: who may read what, the decisions it issues, the access log, claims.

Each answer is issued as a decision (kept byte for byte under its ``decision_id``) and, when a third
party reads, logged for the enterprise — in the same transaction, so no answer leaves unlogged.

The reads that issue decisions (rating, history, pricing, eligibility) are units of work for
``carbon.group_commit``: they read, decide and stage their decision and access-log rows; the HTTP
endpoints hand them to the service's group-commit writer (one commit for many concurrent answers,
each released only once it is stored), other callers run them in a transaction of their own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, bindparam, func, select, tuple_
from sqlalchemy.exc import IntegrityError

from carbon.consent import REASON_TEXT, ConsentRecord, decide
from carbon.consent_projection import load_consents, load_consents_of
from carbon.db import is_sqlite, make_async_engine, read_transaction, write_transaction
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.group_commit import GroupCommit, Staged
from carbon.identity import Principal
from contracts import Role, Scope
from contracts.envelope import format_time
from services.rating import domain
from services.rating.config import ReferenceData
from services.rating.projection import canonical_bytes
from services.rating.schema import (
    access_log,
    decisions,
    rating_facts,
    ratings,
    rediscount_claims,
    rediscount_reservations,
)

CONSENTED_READERS = (Role.BANK, Role.PARTNER)
DISCLOSURE_SERVICE = "disclosure"
# A read after a quiet spell waits this long for others to share its commit: a few milliseconds of
# latency for far fewer commits (each costs a transaction and, on PostgreSQL, a WAL flush).
GATHER_S = 0.002

# The hot reads' statements, built once: a statement object reused skips SQLAlchemy's per-call
# construction and cache-key work. Values are bound per execution.
#
# Whether enterprises are known and their latest ratings known by ``knowledge``, in one statement:
# the outer join yields a known enterprise with NULL rating columns when nothing was rated by then,
# and no row at all for an enterprise the projection has not seen.
_earlier = ratings.alias("earlier")
_LATEST = (
    select(rating_facts.c.enterprise_id.label("known"), ratings)
    .select_from(rating_facts.outerjoin(ratings, and_(
        ratings.c.enterprise_id == rating_facts.c.enterprise_id,
        ratings.c.seq == select(func.max(_earlier.c.seq))
        .where(_earlier.c.enterprise_id == rating_facts.c.enterprise_id,
               _earlier.c.recorded_at <= bindparam("knowledge"))
        .scalar_subquery())))
    .where(rating_facts.c.enterprise_id.in_(bindparam("enterprise_ids", expanding=True)))
)
_FACTS = select(rating_facts.c.facts).where(rating_facts.c.enterprise_id == bindparam("enterprise_id"))
_KNOWN = select(rating_facts.c.enterprise_id).where(rating_facts.c.enterprise_id == bindparam("enterprise_id"))


@dataclass(frozen=True, slots=True)
class Grant:
    """Under what a read is allowed; the owner's own reads are not logged."""

    third_party: bool
    consent_id: str | None = None
    supervisory: bool = False


@dataclass(eq=False, slots=True)
class LatestRead:
    """A read answered from the latest rating (a rating, a price), as a unit of work for the group-commit
    writer: ``answer(conn, read)``; ``ahead`` is left by the writer's read-ahead for the batch."""

    answer: Callable[[Connection, LatestRead], Staged[bytes]]
    principal: Principal
    enterprise_id: str
    scope: Scope
    as_of: datetime | None = None
    product: str | None = None
    ahead: _Ahead | None = None

    def __call__(self, conn: Connection) -> Staged[bytes]:
        return self.answer(conn, self)


@dataclass(frozen=True, slots=True)
class _Ahead:
    """What a batch's read-ahead found, at one moment ``now``."""

    now: datetime
    latest: dict[str, Any]  # each known enterprise: its latest rating row by now (None: not rated)
    consents: dict[tuple[str, str], list[ConsentRecord]]  # (enterprise, grantee): the grantee's consents


@dataclass(frozen=True, slots=True)
class AccessEntry:
    party: str
    role: str
    what: str
    consent_id: str | None
    supervisory: bool


class RatingService:
    def __init__(self, engine: Engine, reference: ReferenceData,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.reference, self.clock = engine, reference, clock
        # SQLite commits in a fraction of a millisecond (no flush per commit in WAL mode): on the
        # event loop itself. PostgreSQL's statements and commit (which waits for its WAL flush) are
        # awaited on the loop through psycopg's asyncio connection, so other requests go on meanwhile.
        self.async_engine = None if is_sqlite(engine) else make_async_engine(engine.url)
        self.writes = GroupCommit(engine, "rating", read_ahead=self._read_ahead, gather_s=GATHER_S,
                                  on_loop=is_sqlite(engine), async_engine=self.async_engine)

    async def aclose(self) -> None:
        """Commit the answers still queued, then stop the group-commit writer."""
        await self.writes.aclose()
        if self.async_engine is not None:
            await self.async_engine.dispose()

    # ---- authorisation --------------------------------------------------------------------------

    @staticmethod
    def _gate(principal: Principal, enterprise_id: str, *, consented: Sequence[Role], supervisory: bool) -> None:
        """Role and ownership, before anything is looked up."""
        if principal.role is Role.ENTERPRISE:
            if principal.sub != enterprise_id:
                raise Forbidden("not_owner", "an enterprise may read only its own rating")
            return
        if principal.role is Role.REGULATOR and supervisory:
            return
        if principal.role not in consented:
            allowed = ", ".join(["enterprise (its own)", *(["regulator"] if supervisory else []),
                                 *(r.value for r in consented)])
            raise Forbidden("wrong_role", f"role {principal.role.value!r} may not read this (allowed: {allowed})")

    def _grant(self, conn: Connection, principal: Principal, enterprise_id: str, scope: Scope, now: datetime,
               consents: list[ConsentRecord] | None = None) -> Grant:
        """Under what ``principal`` may read; ``consents``: theirs, when already read (else read here)."""
        if principal.role is Role.ENTERPRISE:
            return Grant(third_party=False)
        if principal.role is Role.REGULATOR:
            return Grant(third_party=True, supervisory=True)
        if consents is None:
            consents = load_consents(conn, enterprise_id, principal.sub)
        decision = decide(consents, principal.sub, scope.value, now)
        if not decision.allowed:
            reason = decision.reason or "no_consent"
            raise Forbidden(reason, f"{REASON_TEXT[reason]} ({scope.value})")
        return Grant(third_party=True, consent_id=decision.consent_id)

    @staticmethod
    def _facts(conn: Connection, enterprise_id: str) -> domain.Facts:
        row = conn.execute(_FACTS, {"enterprise_id": enterprise_id}).first()
        if row is None:
            raise _unknown(enterprise_id)
        return domain.Facts.from_json(json.loads(row.facts))

    @staticmethod
    def _require_known(conn: Connection, enterprise_id: str) -> None:
        if conn.execute(_KNOWN, {"enterprise_id": enterprise_id}).first() is None:
            raise _unknown(enterprise_id)

    # ---- decisions and the access log ----------------------------------------------------------------

    @staticmethod
    def _issue(kind: str, enterprise_id: str, principal: Principal, grant: Grant, now: datetime,
               answer: dict[str, Any], what: str) -> Staged[bytes]:
        """The answer under a fresh decision_id, with the rows that keep it (and log a third party's read)."""
        decision_id = str(uuid.uuid4())
        answer["decision_id"] = decision_id
        encoded = canonical_bytes(answer)
        body = encoded.decode()
        rows = [(decisions, {
            "decision_id": decision_id, "kind": kind, "enterprise_id": enterprise_id, "issued_to": principal.sub,
            "issued_to_role": principal.role.value, "issued_at": now, "consent_id": grant.consent_id, "body": body})]
        if grant.third_party:
            entry = AccessEntry(principal.sub, principal.role.value, what, grant.consent_id, grant.supervisory)
            rows.append((access_log, _access_row(enterprise_id, now, entry, decision_id, "rating")))
        return Staged(encoded, rows)

    @staticmethod
    def _log(conn: Connection, enterprise_id: str, at: datetime, entry: AccessEntry, decision_id: str | None,
             reported_by: str) -> int:
        result = conn.execute(access_log.insert().values(**_access_row(enterprise_id, at, entry, decision_id,
                                                                       reported_by)))
        return int(result.inserted_primary_key[0])

    # ---- ratings ------------------------------------------------------------------------------

    @staticmethod
    def _rating_row(conn: Connection, enterprise_id: str, knowledge: datetime):
        """The latest rating known by ``knowledge`` (None: not rated then); NotFound for an unknown enterprise."""
        latest = _latest_rows(conn, [enterprise_id], knowledge)
        if enterprise_id not in latest:
            raise _unknown(enterprise_id)
        return latest[enterprise_id]

    def _read_ahead(self, conn: Connection, works: list[Any]) -> None:
        """For a batch of the group-commit writer: the latest ratings and consents its current reads need,
        one statement each for all of them, left on the reads (a lone read asks for itself)."""
        reads = [w for w in works if isinstance(w, LatestRead) and w.as_of is None]
        if len(reads) < 2:
            return
        now = self.clock()
        ahead = _Ahead(now, _latest_rows(conn, {r.enterprise_id for r in reads}, now), load_consents_of(
            conn, {(r.enterprise_id, r.principal.sub) for r in reads if r.principal.role in CONSENTED_READERS}))
        for read in reads:
            read.ahead = ahead

    def _latest(self, conn: Connection, read: LatestRead) -> tuple[datetime, datetime, Any, Grant]:
        """For a read of the latest rating: now, the knowledge time, the rating row and the grant."""
        ahead = read.ahead
        now = ahead.now if ahead is not None else self.clock()
        # Knowledge beyond the present is not knowledge yet: a future as_of answers as of now.
        knowledge = now if read.as_of is None or read.as_of > now else read.as_of
        if ahead is None:
            row = self._rating_row(conn, read.enterprise_id, knowledge)
            consents = None
        else:
            if read.enterprise_id not in ahead.latest:
                raise _unknown(read.enterprise_id)
            row, consents = ahead.latest[read.enterprise_id], ahead.consents.get((read.enterprise_id, read.principal.sub))
        # The 404 above comes before any consent question.
        return now, knowledge, row, self._grant(conn, read.principal, read.enterprise_id, read.scope, now, consents)

    @staticmethod
    def _rating_answer(enterprise_id: str, row, as_of: datetime) -> dict[str, Any]:
        if row is None:
            stored = domain.Rating(enterprise_id, "not_rated", None, None, None, (), (
                domain.Missing("account", "the account had not been opened by then"),), None).to_dict()
            recorded_at, position = None, None
        else:
            stored = orjson.loads(row.body)
            recorded_at, position = format_time(row.recorded_at), row.position
        # SPEC §6's fields first, in its order; then what explains them.
        return {
            "enterprise_id": enterprise_id, "status": stored["status"], "grade": stored["grade"],
            "score": stored["score"], "as_of": format_time(as_of), "methodology_version": stored["methodology_version"],
            "factors": stored["factors"], "missing": stored["missing"], "position": position,
            "period": stored["period"], "benchmark": stored["benchmark"], "recorded_at": recorded_at,
        }

    # Each decision-issuing read comes three ways: ``_x(conn, …)`` is the unit of work (reads, decides,
    # stages its rows; the clock is read inside it, or by the batch's read-ahead, at the moment the
    # data is read); ``x(…)`` runs it in a transaction of its own; ``x_async(…)`` hands it to the
    # group-commit writer (the HTTP path). The role and ownership gate runs first, before anything is queued.

    def rating(self, principal: Principal, enterprise_id: str, as_of: datetime | None = None) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        return self.writes.run(LatestRead(self._rating, principal, enterprise_id, Scope.RATING_READ, as_of))

    async def rating_async(self, principal: Principal, enterprise_id: str, as_of: datetime | None = None) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        return await self.writes.submit(LatestRead(self._rating, principal, enterprise_id, Scope.RATING_READ, as_of))

    def _rating(self, conn: Connection, read: LatestRead) -> Staged[bytes]:
        now, knowledge, row, grant = self._latest(conn, read)
        answer = self._rating_answer(read.enterprise_id, row, knowledge)
        what = "rating" if read.as_of is None else f"rating as of {format_time(knowledge)}"
        return self._issue("rating", read.enterprise_id, read.principal, grant, now, answer, what)

    def history(self, principal: Principal, enterprise_id: str) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        return self.writes.run(partial(self._history, principal=principal, enterprise_id=enterprise_id))

    async def history_async(self, principal: Principal, enterprise_id: str) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        return await self.writes.submit(partial(self._history, principal=principal, enterprise_id=enterprise_id))

    def _history(self, conn: Connection, *, principal: Principal, enterprise_id: str) -> Staged[bytes]:
        now = self.clock()
        self._require_known(conn, enterprise_id)
        grant = self._grant(conn, principal, enterprise_id, Scope.RATING_READ, now)
        rows = conn.execute(select(ratings).where(ratings.c.enterprise_id == enterprise_id)
                            .order_by(ratings.c.seq)).all()
        items = []
        for row in rows:
            item = self._rating_answer(enterprise_id, row, row.recorded_at)
            del item["as_of"]
            items.append(item)
        answer = {"enterprise_id": enterprise_id, "ratings": items, "next": None, "as_of": format_time(now)}
        return self._issue("rating_history", enterprise_id, principal, grant, now, answer, "rating history")

    # ---- pricing --------------------------------------------------------------------------------

    def pricing(self, principal: Principal, enterprise_id: str, product: str) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=False)
        return self.writes.run(LatestRead(self._pricing, principal, enterprise_id, Scope.PRICING_READ, product=product))

    async def pricing_async(self, principal: Principal, enterprise_id: str, product: str) -> bytes:
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=False)
        return await self.writes.submit(LatestRead(self._pricing, principal, enterprise_id, Scope.PRICING_READ,
                                                   product=product))

    def _pricing(self, conn: Connection, read: LatestRead) -> Staged[bytes]:
        now, _, row, grant = self._latest(conn, read)
        principal, enterprise_id, product = read.principal, read.enterprise_id, read.product
        rating = self._rating_answer(enterprise_id, row, now)
        priced = domain.price_answer(rating, product, self.reference.pricing, now)
        answer = {
            "enterprise_id": enterprise_id, "product": product, "grade": priced["grade"], "tier": priced["tier"],
            "adjustment_bp": priced["adjustment_bp"], "valid_until": format_time(priced["valid_until"]),
            "status": priced["status"], "score": priced["score"], "as_of": format_time(now),
            "explanation": priced["explanation"], "pricing_table_version": priced["pricing_table_version"],
            "methodology_version": priced["methodology_version"], "position": rating["position"],
        }
        return self._issue("pricing", enterprise_id, principal, grant, now, answer, f"pricing ({product})")

    # ---- carbon-reduction bill re-discounting ----------------------------------------------------------

    @staticmethod
    def _gate_eligibility(principal: Principal) -> None:
        if principal.role not in (Role.REGULATOR, Role.BANK):
            raise Forbidden("wrong_role", "re-discount eligibility is for the regulator (and banks pre-checking)")

    def eligibility(self, principal: Principal, issuer_id: str, bills: Sequence[domain.Bill]) -> bytes:
        self._gate_eligibility(principal)
        return self.writes.run(partial(self._eligibility, principal=principal, issuer_id=issuer_id, bills=bills))

    async def eligibility_async(self, principal: Principal, issuer_id: str, bills: Sequence[domain.Bill]) -> bytes:
        self._gate_eligibility(principal)
        return await self.writes.submit(partial(self._eligibility, principal=principal, issuer_id=issuer_id,
                                                bills=bills))

    def _eligibility(self, conn: Connection, *, principal: Principal, issuer_id: str,
                     bills: Sequence[domain.Bill]) -> Staged[bytes]:
        now = self.clock()
        facts = self._facts(conn, issuer_id)
        grant = self._grant(conn, principal, issuer_id, Scope.RATING_READ, now)
        row = self._rating_row(conn, issuer_id, now)
        grade = row.grade if row is not None else None
        reserved = conn.execute(select(rediscount_reservations.c.project_id, rediscount_reservations.c.year)
                                .where(rediscount_reservations.c.enterprise_id == issuer_id)).all()
        terms = self.reference.rediscount
        result = domain.assess_eligibility(facts, grade, bills, now.date(), terms, [tuple(r) for r in reserved])
        answer = {
            "eligible": result.eligible, "reasons": [r.to_dict() for r in result.reasons], "grade": result.grade,
            "estimated_reduction_tco2e": format(result.estimated_reduction_tco2e, "f"),
            "rediscount_rate": format(terms.rediscount_rate, "f"),
            "issuer_id": issuer_id, "as_of": format_time(now), "threshold_grade": terms.threshold_grade,
            "attributable": [a.to_dict() for a in result.attributable],
            "bills": [{"bill_no": b.bill_no, "amount_cny": format(b.amount_cny, "f"),
                       "maturity": b.maturity.isoformat(), "project_id": b.project_id} for b in bills],
            "rating_position": row.position if row is not None else None,
            "terms_version": terms.version, "methodology_version": domain.METHODOLOGY_VERSION,
        }
        return self._issue("rediscount_eligibility", issuer_id, principal, grant, now, answer,
                           "re-discount eligibility")

    def claim(self, principal: Principal, decision_id: str, reference: str | None) -> dict[str, Any]:
        now = self.clock()
        if principal.role is not Role.REGULATOR:
            raise Forbidden("wrong_role", "only the regulator records re-discount claims")
        claim_id = str(uuid.uuid4())
        try:
            with write_transaction(self.engine) as conn:
                row = conn.execute(select(decisions).where(decisions.c.decision_id == decision_id,
                                                           decisions.c.kind == "rediscount_eligibility")).first()
                if row is None:
                    raise Invalid([{"field": "decision_id", "message": "names no re-discount eligibility decision"}])
                if row.issued_to_role != Role.REGULATOR.value:
                    raise Invalid([{"field": "decision_id", "message":
                                    "a bank's pre-check cannot back a claim; check eligibility as the regulator"}])
                decided = json.loads(row.body)
                if not decided["eligible"]:
                    raise Invalid([{"field": "decision_id", "message": "that decision found the bills not eligible"}])
                matured = [b["bill_no"] for b in decided["bills"] if date.fromisoformat(b["maturity"]) <= now.date()]
                if matured:
                    raise Invalid([{"field": "decision_id", "message":
                                    f"bill(s) {', '.join(matured)} have matured since; check eligibility again"}])
                earlier = conn.execute(select(rediscount_claims.c.claim_id)
                                       .where(rediscount_claims.c.decision_id == decision_id)).first()
                if earlier is not None:
                    raise Conflict(f"decision {decision_id} is already claimed under claim {earlier.claim_id}")
                issuer = row.enterprise_id
                units = decided["attributable"]
                keys = [(u["project_id"], u["year"]) for u in units]
                taken = conn.execute(select(rediscount_reservations.c.project_id, rediscount_reservations.c.year,
                                            rediscount_reservations.c.claim_id).where(
                    rediscount_reservations.c.enterprise_id == issuer,
                    tuple_(rediscount_reservations.c.project_id, rediscount_reservations.c.year).in_(keys),
                )).all() if keys else []
                if taken:
                    listed = ", ".join(f"{t.project_id} {t.year} (claim {t.claim_id})" for t in taken)
                    raise Conflict(f"the verified reduction is already reserved: {listed}")
                total = sum((Decimal(u["verified_reduction_tco2e"]) for u in units), domain.ZERO)
                conn.execute(rediscount_claims.insert().values(
                    claim_id=claim_id, decision_id=decision_id, enterprise_id=issuer, claimed_by=principal.sub,
                    claimed_at=now, reduction_tco2e=format(total, "f"), reference=reference))
                for unit in units:
                    conn.execute(rediscount_reservations.insert().values(
                        enterprise_id=issuer, project_id=unit["project_id"], year=unit["year"], claim_id=claim_id,
                        verified_reduction_tco2e=unit["verified_reduction_tco2e"]))
        except IntegrityError:
            # A concurrent claim reserved the same tonnes between our check and our insert.
            raise Conflict("the verified reduction was reserved by a concurrent claim") from None
        return {"claim_id": claim_id, "decision_id": decision_id, "issuer_id": issuer,
                "reserved_tco2e": format(total, "f"), "reservations": units, "claimed_at": format_time(now)}

    # ---- stored decisions -----------------------------------------------------------------------

    def decision(self, principal: Principal, decision_id: str) -> bytes:
        now = self.clock()
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(decisions).where(decisions.c.decision_id == decision_id)).first()
            if row is None:
                raise NotFound(f"no decision {decision_id!r}")
            owner = principal.role is Role.ENTERPRISE and principal.sub == row.enterprise_id
            issuee = principal.sub == row.issued_to and principal.role.value == row.issued_to_role
            if not (owner or issuee or principal.role is Role.REGULATOR):
                if principal.role is Role.ENTERPRISE:
                    raise Forbidden("not_owner", "this decision concerns another enterprise")
                raise Forbidden("wrong_role", "a decision is open to its enterprise, the regulator and the party it was issued to")
            if not owner:
                supervisory = principal.role is Role.REGULATOR
                self._log(conn, row.enterprise_id, now, AccessEntry(
                    principal.sub, principal.role.value, f"decision {decision_id} ({row.kind})",
                    None if supervisory else row.consent_id, supervisory), decision_id, "rating")
            return row.body.encode()

    # ---- the access log --------------------------------------------------------------------------

    def access_log(self, principal: Principal, enterprise_id: str, after: int | None, limit: int) -> dict[str, Any]:
        if principal.role is not Role.ENTERPRISE:
            raise Forbidden("wrong_role", "only the enterprise itself reads who read its data")
        if principal.sub != enterprise_id:
            raise Forbidden("not_owner", "an enterprise may read only its own access log")
        with read_transaction(self.engine) as conn:
            self._require_known(conn, enterprise_id)
            query = select(access_log).where(access_log.c.enterprise_id == enterprise_id)
            if after is not None:
                query = query.where(access_log.c.read_id > after)
            rows = conn.execute(query.order_by(access_log.c.read_id).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "reads": [{"read_id": r.read_id, "at": format_time(r.at), "party": r.party, "role": r.role, "what": r.what,
                       "consent_id": r.consent_id, "supervisory": r.supervisory, "decision_id": r.decision_id,
                       "reported_by": r.reported_by} for r in rows],
            "next": rows[-1].read_id if more else None,
        }

    def record_access(self, principal: Principal, enterprise_id: str, entry: AccessEntry) -> dict[str, Any]:
        """A read served by the disclosure service, so the enterprise sees every read in one log."""
        if principal.role is not Role.SERVICE or principal.sub != DISCLOSURE_SERVICE:
            raise Forbidden("wrong_role", "only the disclosure service reports reads to this log")
        now = self.clock()
        # Not refused for an enterprise this projection has not seen yet: the read has happened, so
        # losing its record to projection lag would be worse than logging it.
        with write_transaction(self.engine) as conn:
            read_id = self._log(conn, enterprise_id, now, entry, None, DISCLOSURE_SERVICE)
        return {"read_id": read_id, "at": format_time(now)}


def _latest_rows(conn: Connection, enterprise_ids: Iterable[str], knowledge: datetime) -> dict[str, Any]:
    """Each known enterprise of ``enterprise_ids``: its latest rating row known by ``knowledge`` (None: none)."""
    rows = conn.execute(_LATEST, {"enterprise_ids": sorted(enterprise_ids), "knowledge": knowledge})
    return {row.known: row if row.seq is not None else None for row in rows}


def _unknown(enterprise_id: str) -> NotFound:
    return NotFound(f"enterprise {enterprise_id!r} is not known to the rating service")


def _access_row(enterprise_id: str, at: datetime, entry: AccessEntry, decision_id: str | None,
                reported_by: str) -> dict[str, Any]:
    return {"enterprise_id": enterprise_id, "at": at, "party": entry.party, "role": entry.role, "what": entry.what,
            "consent_id": entry.consent_id, "supervisory": entry.supervisory, "decision_id": decision_id,
            "reported_by": reported_by}
