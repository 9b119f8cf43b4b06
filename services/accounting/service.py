"""The accounting service's use cases: calculate, measure benefits, record them on the account.

A calculation is stored under its calculation_id before anything is recorded, with a fingerprint of the
request. The same id with the same request returns the stored result (and records it if asked); the same
id with another request is refused. Recording appends to the account with the idempotency key
``calculation:<calculation_id>``, so a retry after a timeout, or a replay of the whole request, records
exactly once; the account's own key check refuses a key reused for different events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from carbon.account_client import AccountClient, AccountUnavailable
from carbon.db import read_transaction, write_transaction
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.eventstore.hashing import request_fingerprint
from carbon.identity import Principal
from contracts import Role
from services.accounting import domain
from services.accounting.catalogue import KINDS, Catalogue
from services.accounting.tables import calculations


class RecordingFailed(Exception):
    """The account did not take the events; ``retryable`` when it was unreachable or failing."""

    def __init__(self, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.detail, self.retryable = detail, retryable


@dataclass(frozen=True, slots=True)
class Stored:
    calculation_id: str
    kind: str
    request_hash: str
    result: dict[str, Any]
    events: list[dict[str, Any]]
    recorded_at: datetime | None
    record_result: dict[str, Any] | None


class AccountingService:
    def __init__(self, engine: Engine, catalogue: Catalogue, account: AccountClient, *,
                 yoy_threshold: Decimal = domain.DEFAULT_YOY_THRESHOLD,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.catalogue, self.account = engine, catalogue, account
        self.yoy_threshold, self.clock = yoy_threshold, clock

    # ---- factors -------------------------------------------------------------------------

    def factors(self, *, kind: str | None, fuel: str | None, region: str | None, year: int | None,
                edition: str | None, gas: str | None) -> list[dict[str, Any]]:
        errors = []
        if kind is not None and kind not in KINDS:
            errors.append({"field": "kind", "message": f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}"})
        editions = sorted({e.id for e in self.catalogue.editions})
        if edition is not None and edition not in editions:
            errors.append({"field": "edition", "message": f"unknown edition {edition!r}; accepted: {', '.join(editions)}"})
        if errors:
            raise Invalid(errors)
        if region is not None and len(region) == 6 and region.isdigit():
            region = region[:2] + "0000"  # a city or county is covered by its province's factors
        found = self.catalogue.filter(kind=kind, fuel=fuel, region=region, year=year, edition=edition, gas=gas)
        return [f.public() for f in found]

    # ---- calculations --------------------------------------------------------------------

    def calculate(self, actor: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` is the validated request (JSON form); returns the result, recorded if asked."""
        enterprise_id, period = body["enterprise_id"], body["period"]
        authorize(actor, enterprise_id)
        gwp = self._choice("gwp", body.get("gwp"))
        edition = self._choice("factor_edition", body.get("factor_edition"))
        calculation_id, fingerprint = self._identify(body, gwp=gwp, factor_edition=edition)

        def compute() -> tuple[dict[str, Any], list[dict[str, Any]], str]:
            result = domain.calculate(self.catalogue, domain.CalculationRequest(
                body.get("organisation") or "industrial", body["activities"], gwp, edition))
            output = body.get("output")
            domain.quality_checks(
                result,
                industry=body.get("industry"),
                revenue_10k_cny=Decimal(body["revenue_10k_cny"]) if body.get("revenue_10k_cny") is not None else None,
                output=domain.Output(Decimal(output["quantity"]), output["unit"]) if output else None,
                previous=self._previous(enterprise_id, period, calculation_id),
                yoy_threshold=self.yoy_threshold,
                period=period,
            )
            public = {"calculation_id": calculation_id, "enterprise_id": enterprise_id, "period": period,
                      **result.public()}
            return public, domain.emission_events(result, calculation_id, period), domain.present(result.gross)

        stored = self._store_or_reuse("emissions", calculation_id, fingerprint, actor, body, compute)
        return self._respond(stored, enterprise_id, record=bool(body.get("record")))

    def benefits(self, actor: Principal, body: dict[str, Any]) -> dict[str, Any]:
        enterprise_id, period = body["enterprise_id"], body["period"]
        authorize(actor, enterprise_id)
        edition = self._choice("factor_edition", body.get("factor_edition"))
        calculation_id, fingerprint = self._identify(body, factor_edition=edition)

        def compute() -> tuple[dict[str, Any], list[dict[str, Any]], str]:
            result = domain.measure_benefits(self.catalogue, body["project_type"], body["parameters"], edition)
            public = {"calculation_id": calculation_id, "enterprise_id": enterprise_id, "project_id": body["project_id"],
                      "period": period, **result.public()}
            return public, [result.event(body["project_id"], period)], public["reduction_tco2e"]

        stored = self._store_or_reuse("benefits", calculation_id, fingerprint, actor, body, compute)
        return self._respond(stored, enterprise_id, record=bool(body.get("record")))

    def read(self, actor: Principal, calculation_id: str) -> dict[str, Any]:
        stored = self._load(calculation_id)
        if stored is None:
            raise NotFound(f"no calculation {calculation_id!r}")
        authorize(actor, stored.result["enterprise_id"])
        return self._public(stored)

    # ---- internals -----------------------------------------------------------------------

    def _choice(self, selector: str, value: str | None) -> str:
        accepted = self.catalogue.selectable(selector)
        if value is None:
            return self.catalogue.default_edition(self.catalogue.edition_kind(selector))
        if value not in accepted:
            raise Invalid([{"field": selector, "message": f"unknown {selector} {value!r}; accepted: {', '.join(accepted)}"}])
        return value

    @staticmethod
    def _identify(body: dict[str, Any], **resolved: str) -> tuple[str, str]:
        """The calculation id (the client's, or a new UUID) and the fingerprint of what is calculated.

        ``record`` is not part of it: a result computed first and recorded later is the same calculation.
        Defaults are resolved first, so omitting a default and sending it explicitly are the same request.
        """
        calculation_id = body.get("calculation_id") or str(uuid.uuid4())
        content = {k: v for k, v in body.items() if k not in ("record", "calculation_id")}
        content.update(resolved)
        return calculation_id, request_fingerprint(content)

    def _store_or_reuse(self, kind: str, calculation_id: str, fingerprint: str, actor: Principal,
                        body: dict[str, Any], compute: Callable[[], tuple[dict, list, str]]) -> Stored:
        existing = self._load(calculation_id)
        if existing is None:
            result, events, gross = compute()
            row = {
                "calculation_id": calculation_id, "kind": kind, "enterprise_id": body["enterprise_id"],
                "period": body["period"], "request_hash": fingerprint, "request": body, "result": result,
                "events": events, "gross_tco2e": gross, "created_by": actor.sub, "created_at": self.clock(),
                "recorded_at": None, "record_result": None,
            }
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(calculations.insert().values(**row))
                return Stored(calculation_id, kind, fingerprint, result, events, None, None)
            except IntegrityError:  # a concurrent request with the same id won: compare with it
                existing = self._load(calculation_id)
                if existing is None:  # pragma: no cover - the winner's row is committed
                    raise
        if existing.kind != kind or existing.request_hash != fingerprint:
            raise Conflict(f"calculation_id {calculation_id!r} was already used for a different request; "
                           "use a new calculation_id for a new calculation")
        return existing

    def _respond(self, stored: Stored, enterprise_id: str, *, record: bool) -> dict[str, Any]:
        if record and stored.recorded_at is None:
            stored = self._record(stored, enterprise_id)
        return self._public(stored)

    @staticmethod
    def _public(stored: Stored) -> dict[str, Any]:
        return {**stored.result, "recorded": stored.recorded_at is not None, "record": stored.record_result}

    def _record(self, stored: Stored, enterprise_id: str) -> Stored:
        if stored.events:
            try:
                answer = self.account.append_events(enterprise_id, stored.events,
                                                    idempotency_key=f"calculation:{stored.calculation_id}")
            except AccountUnavailable as exc:
                raise RecordingFailed(f"the account service is unavailable ({exc}); nothing was recorded: "
                                      "retry with the same calculation_id", retryable=True) from None
            except NotFound:
                raise NotFound(f"enterprise {enterprise_id!r} is not registered") from None
            except Invalid as exc:
                if any(e.get("field") == "Idempotency-Key" for e in exc.errors):
                    raise Conflict(f"calculation_id {stored.calculation_id!r} was already recorded on this account "
                                   "with different content") from None
                raise RecordingFailed(f"the account refused the events: {exc}", retryable=False) from None
            except (Forbidden, Conflict) as exc:
                raise RecordingFailed(f"the account refused the events: {exc}", retryable=False) from None
            record = {"first_version": answer["first_version"], "last_version": answer["last_version"],
                      "positions": answer["positions"], "events": len(stored.events)}
        else:
            record = {"first_version": None, "last_version": None, "positions": [], "events": 0}
        now = self.clock()
        with write_transaction(self.engine) as conn:
            conn.execute(calculations.update()
                         .where(calculations.c.calculation_id == stored.calculation_id)
                         .values(recorded_at=now, record_result=record))
        return Stored(stored.calculation_id, stored.kind, stored.request_hash, stored.result, stored.events, now, record)

    def _load(self, calculation_id: str) -> Stored | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(sa.select(calculations).where(calculations.c.calculation_id == calculation_id)).first()
        if row is None:
            return None
        return Stored(row.calculation_id, row.kind, row.request_hash, row.result, row.events, row.recorded_at,
                      row.record_result)

    def _previous(self, enterprise_id: str, period: str, calculation_id: str) -> domain.Previous | None:
        """The comparable earlier period's calculation: a recorded one first, then the latest."""
        earlier = domain.previous_period(period)
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                sa.select(calculations.c.calculation_id, calculations.c.gross_tco2e, calculations.c.recorded_at,
                          calculations.c.created_at)
                .where(calculations.c.enterprise_id == enterprise_id, calculations.c.kind == "emissions",
                       calculations.c.period == earlier, calculations.c.calculation_id != calculation_id)
            ).all()
        if not rows:
            return None
        best = max(rows, key=lambda r: (r.recorded_at is not None, r.recorded_at or r.created_at, r.created_at))
        return domain.Previous(earlier, Decimal(best.gross_tco2e), best.calculation_id)


def authorize(actor: Principal, enterprise_id: str) -> None:
    """The enterprise for itself, or the operator; a verifier or bank would need consent, not checked here."""
    if actor.role is Role.OPERATOR:
        return
    if actor.role is Role.ENTERPRISE:
        if actor.sub != enterprise_id:
            raise Forbidden("not_owner", "an enterprise may calculate only for itself")
        return
    raise Forbidden("wrong_role", "only the enterprise itself or the operator may calculate for an enterprise")
