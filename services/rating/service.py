"""The rating service's use cases: who may read what, the decisions it issues, the access log, claims.

Each answer is issued as a decision (kept byte for byte under its ``decision_id``) and, when a third
party reads, logged for the enterprise — in the same transaction, so no answer leaves unlogged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select, tuple_
from sqlalchemy.exc import IntegrityError

from carbon.consent import REASON_TEXT, decide
from carbon.consent_projection import load_consents
from carbon.db import read_transaction, write_transaction
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.identity import Principal
from contracts import Role, Scope
from contracts.envelope import format_time
from services.rating import domain
from services.rating.config import ReferenceData
from services.rating.projection import canonical
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


@dataclass(frozen=True, slots=True)
class Grant:
    """Under what a read is allowed; the owner's own reads are not logged."""

    third_party: bool
    consent_id: str | None = None
    supervisory: bool = False


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

    def _grant(self, conn: Connection, principal: Principal, enterprise_id: str, scope: Scope, now: datetime) -> Grant:
        if principal.role is Role.ENTERPRISE:
            return Grant(third_party=False)
        if principal.role is Role.REGULATOR:
            return Grant(third_party=True, supervisory=True)
        decision = decide(load_consents(conn, enterprise_id, principal.sub), principal.sub, scope.value, now)
        if not decision.allowed:
            reason = decision.reason or "no_consent"
            raise Forbidden(reason, f"{REASON_TEXT[reason]} ({scope.value})")
        return Grant(third_party=True, consent_id=decision.consent_id)

    @staticmethod
    def _facts(conn: Connection, enterprise_id: str) -> domain.Facts:
        row = conn.execute(select(rating_facts.c.facts).where(rating_facts.c.enterprise_id == enterprise_id)).first()
        if row is None:
            raise NotFound(f"enterprise {enterprise_id!r} is not known to the rating service")
        return domain.Facts.from_json(json.loads(row.facts))

    @staticmethod
    def _require_known(conn: Connection, enterprise_id: str) -> None:
        if conn.execute(select(rating_facts.c.enterprise_id).where(rating_facts.c.enterprise_id == enterprise_id)).first() is None:
            raise NotFound(f"enterprise {enterprise_id!r} is not known to the rating service")

    # ---- decisions and the access log ----------------------------------------------------------------

    def _issue(self, conn: Connection, kind: str, enterprise_id: str, principal: Principal, grant: Grant,
               now: datetime, answer: dict[str, Any], what: str) -> bytes:
        decision_id = str(uuid.uuid4())
        answer["decision_id"] = decision_id
        body = canonical(answer)
        conn.execute(decisions.insert().values(
            decision_id=decision_id, kind=kind, enterprise_id=enterprise_id, issued_to=principal.sub,
            issued_to_role=principal.role.value, issued_at=now, consent_id=grant.consent_id, body=body))
        if grant.third_party:
            self._log(conn, enterprise_id, now, AccessEntry(principal.sub, principal.role.value, what,
                                                            grant.consent_id, grant.supervisory), decision_id, "rating")
        return body.encode()

    @staticmethod
    def _log(conn: Connection, enterprise_id: str, at: datetime, entry: AccessEntry, decision_id: str | None,
             reported_by: str) -> int:
        result = conn.execute(access_log.insert().values(
            enterprise_id=enterprise_id, at=at, party=entry.party, role=entry.role, what=entry.what,
            consent_id=entry.consent_id, supervisory=entry.supervisory, decision_id=decision_id,
            reported_by=reported_by))
        return int(result.inserted_primary_key[0])

    # ---- ratings ------------------------------------------------------------------------------

    @staticmethod
    def _rating_row(conn: Connection, enterprise_id: str, knowledge: datetime | None):
        query = select(ratings).where(ratings.c.enterprise_id == enterprise_id)
        if knowledge is not None:
            query = query.where(ratings.c.recorded_at <= knowledge)
        return conn.execute(query.order_by(ratings.c.seq.desc()).limit(1)).first()

    @staticmethod
    def _rating_answer(enterprise_id: str, row, as_of: datetime) -> dict[str, Any]:
        if row is None:
            stored = domain.Rating(enterprise_id, "not_rated", None, None, None, (), (
                domain.Missing("account", "the account had not been opened by then"),), None).to_dict()
            recorded_at, position = None, None
        else:
            stored = json.loads(row.body)
            recorded_at, position = format_time(row.recorded_at), row.position
        # SPEC §6's fields first, in its order; then what explains them.
        return {
            "enterprise_id": enterprise_id, "status": stored["status"], "grade": stored["grade"],
            "score": stored["score"], "as_of": format_time(as_of), "methodology_version": stored["methodology_version"],
            "factors": stored["factors"], "missing": stored["missing"], "position": position,
            "period": stored["period"], "benchmark": stored["benchmark"], "recorded_at": recorded_at,
        }

    def rating(self, principal: Principal, enterprise_id: str, as_of: datetime | None = None) -> bytes:
        now = self.clock()
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        # Knowledge beyond the present is not knowledge yet: a future as_of answers as of now.
        knowledge = now if as_of is None or as_of > now else as_of
        with write_transaction(self.engine) as conn:
            self._require_known(conn, enterprise_id)
            grant = self._grant(conn, principal, enterprise_id, Scope.RATING_READ, now)
            answer = self._rating_answer(enterprise_id, self._rating_row(conn, enterprise_id, knowledge), knowledge)
            what = "rating" if as_of is None else f"rating as of {format_time(knowledge)}"
            return self._issue(conn, "rating", enterprise_id, principal, grant, now, answer, what)

    def history(self, principal: Principal, enterprise_id: str) -> bytes:
        now = self.clock()
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=True)
        with write_transaction(self.engine) as conn:
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
            return self._issue(conn, "rating_history", enterprise_id, principal, grant, now, answer, "rating history")

    # ---- pricing --------------------------------------------------------------------------------

    def pricing(self, principal: Principal, enterprise_id: str, product: str) -> bytes:
        now = self.clock()
        self._gate(principal, enterprise_id, consented=CONSENTED_READERS, supervisory=False)
        with write_transaction(self.engine) as conn:
            self._require_known(conn, enterprise_id)
            grant = self._grant(conn, principal, enterprise_id, Scope.PRICING_READ, now)
            rating = self._rating_answer(enterprise_id, self._rating_row(conn, enterprise_id, now), now)
            priced = domain.price_answer(rating, product, self.reference.pricing, now)
            answer = {
                "enterprise_id": enterprise_id, "product": product, "grade": priced["grade"], "tier": priced["tier"],
                "adjustment_bp": priced["adjustment_bp"], "valid_until": format_time(priced["valid_until"]),
                "status": priced["status"], "score": priced["score"], "as_of": format_time(now),
                "explanation": priced["explanation"], "pricing_table_version": priced["pricing_table_version"],
                "methodology_version": priced["methodology_version"], "position": rating["position"],
            }
            return self._issue(conn, "pricing", enterprise_id, principal, grant, now, answer, f"pricing ({product})")

    # ---- carbon-reduction bill re-discounting ----------------------------------------------------------

    def eligibility(self, principal: Principal, issuer_id: str, bills: Sequence[domain.Bill]) -> bytes:
        now = self.clock()
        if principal.role not in (Role.REGULATOR, Role.BANK):
            raise Forbidden("wrong_role", "re-discount eligibility is for the regulator (and banks pre-checking)")
        with write_transaction(self.engine) as conn:
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
            return self._issue(conn, "rediscount_eligibility", issuer_id, principal, grant, now, answer,
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
