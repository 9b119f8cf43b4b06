"""The environmental-information disclosure of one enterprise for one year: a pure fold over its events.

The sections follow JR/T 0227-2021 (金融机构环境信息披露指南) and the GHG Protocol Corporate
Standard / IFRS S2 data points, so a bank can carry the figures straight into its own disclosure.
Tonnes stay ``Decimal`` throughout; corrections (``supersedes``) replace the line they name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from contracts import period_contains, period_year

ZERO = Decimal(0)
RATIO_PLACES = Decimal("0.000001")

FRAMEWORKS = [
    {"id": "JR/T 0227-2021", "title": "金融机构环境信息披露指南 — Guidelines for environmental information disclosure"},
    {"id": "GHG Protocol", "title": "A Corporate Accounting and Reporting Standard (revised edition)"},
    {"id": "IFRS S2", "title": "Climate-related Disclosures"},
]

# Section key → (title, references). The same titles head the HTML and PDF renderings.
SECTIONS: dict[str, tuple[str, list[str]]] = {
    "overview": ("Annual overview", ["JR/T 0227-2021 年度概况"]),
    "ghg_emissions": ("Greenhouse-gas emissions — Scope 1 and Scope 2",
                      ["JR/T 0227-2021 经营活动的环境影响", "GHG Protocol ch. 4 and 9", "IFRS S2 ¶29(a)"]),
    "intensity": ("Emission intensity", ["JR/T 0227-2021 经营活动的环境影响", "GHG Protocol ch. 9 (ratio indicators)"]),
    "trend": ("Emissions over time", ["GHG Protocol ch. 5"]),
    "verification": ("Verification", ["JR/T 0227-2021 数据梳理、校验及保护", "GHG Protocol ch. 10", "ISO 14064-3"]),
    "reductions": ("Emission-reduction projects and environmental benefits",
                   ["JR/T 0227-2021 投融资活动的环境影响", "GHG Protocol ch. 8"]),
    "neutralisation": ("Carbon credits retired (neutralisation)",
                       ["GHG Protocol ch. 9 (offsets reported apart from the inventory)", "IFRS S2 ¶36 (carbon credits)"]),
    "carbon_assets": ("Carbon assets and pledges", ["JR/T 0227-2021 环境相关产品与服务创新"]),
    "data_quality": ("Data quality", ["JR/T 0227-2021 数据梳理、校验及保护", "GHG Protocol ch. 7"]),
    "methodology": ("Methodology and emission-factor sources", ["GHG Protocol ch. 6", "IFRS S2 ¶29(a)(iii)"]),
}

DATA_QUALITY_SCALE = "1 (estimated, lowest) to 5 (measured and verified, highest); tonne-weighted"


@dataclass(frozen=True, slots=True)
class Enterprise:
    enterprise_id: str
    name: str
    industry: str
    region: str


@dataclass(frozen=True, slots=True)
class Event:
    """What the fold needs of an envelope."""

    event_id: str
    type: str
    stream_version: int
    recorded_at: datetime
    data: dict[str, Any]

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Event:
        recorded_at = datetime.fromisoformat(envelope["recorded_at"].replace("Z", "+00:00")).astimezone(UTC)
        return cls(envelope["event_id"], envelope["type"], envelope["stream_version"], recorded_at, envelope["data"])


def dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def plain(value: Decimal) -> str:
    """A decimal as the platform writes it: fixed point, no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator == 0:
        return None
    return (numerator / denominator).quantize(RATIO_PLACES, rounding=ROUND_HALF_UP)


def _in_year(period: str, year: int) -> bool:
    return period_year(period) == year


# ---- the fold --------------------------------------------------------------------------------

@dataclass(slots=True)
class _Line:
    event: Event
    scope: int
    category: str
    gas: str
    tco2e: Decimal
    period: str
    factor_ref: str
    methodology: str
    data_quality: int


def _emission_lines(events: Sequence[Event]) -> list[_Line]:
    superseded = {e.data["supersedes"] for e in events if e.type == "EmissionRecorded" and e.data.get("supersedes")}
    return [
        _Line(e, int(e.data["scope"]), e.data["category"], e.data["gas"], dec(e.data["tco2e"]), e.data["period"],
              e.data["factor_ref"], e.data["methodology"], int(e.data["data_quality"]))
        for e in events
        if e.type == "EmissionRecorded" and e.event_id not in superseded
    ]


def _scope_block(lines: Iterable[_Line]) -> dict[str, Any]:
    by_gas: dict[str, Decimal] = defaultdict(Decimal)
    by_category: dict[str, Decimal] = defaultdict(Decimal)
    total = ZERO
    for line in lines:
        total += line.tco2e
        by_gas[line.gas] += line.tco2e
        by_category[line.category] += line.tco2e
    return {"total_tco2e": total, "by_gas": dict(sorted(by_gas.items())),
            "by_category": dict(sorted(by_category.items()))}


def _verifications(events: Sequence[Event], year: int) -> list[dict[str, Any]]:
    """Every verification of a period in the year, each marked current or stale.

    A verification is stale once an emission of a period it covers is recorded after it (SPEC §7).
    """
    out = []
    for v in events:
        if v.type != "EmissionVerified" or not _in_year(v.data["period"], year):
            continue
        stale = any(e.type == "EmissionRecorded" and e.stream_version > v.stream_version
                    and period_contains(v.data["period"], e.data["period"]) for e in events)
        out.append({"period": v.data["period"], "verifier": v.data["verifier"],
                    "verified_tco2e": dec(v.data["verified_tco2e"]), "report_ref": v.data["report_ref"],
                    "verified_at": v.recorded_at, "status": "stale" if stale else "current"})
    return out


def _verification_status(verifications: list[dict[str, Any]], year: int) -> tuple[str, dict[str, Any] | None]:
    whole_year = [v for v in verifications if v["period"] == str(year)]
    if whole_year:
        latest = whole_year[-1]
        return ("verified" if latest["status"] == "current" else "stale"), latest
    if any(v["status"] == "current" for v in verifications):
        return "partially_verified", verifications[-1]
    if verifications:
        return "stale", verifications[-1]
    return "unverified", None


def _activity(events: Sequence[Event], year: int) -> dict[str, Any]:
    """Revenue and output of the year: the latest annual report, else the latest per quarter, else per month."""
    latest: dict[str, Event] = {}
    for e in events:
        if e.type == "ActivityReported" and _in_year(e.data["period"], year):
            latest[e.data["period"]] = e  # a later report of the same period replaces the earlier one
    annual = [e for p, e in latest.items() if p == str(year)]
    quarters = [e for p, e in latest.items() if "-Q" in p]
    months = [e for p, e in latest.items() if p != str(year) and "-Q" not in p]
    chosen = annual or quarters or months
    revenue = sum((dec(e.data["revenue_10k_cny"]) for e in chosen), ZERO)
    output: dict[str, Decimal] = defaultdict(Decimal)
    for e in chosen:
        output[e.data["output"]["unit"]] += dec(e.data["output"]["quantity"])
    return {"periods": sorted(e.data["period"] for e in chosen), "revenue_10k_cny": revenue if chosen else None,
            "output": [{"quantity": q, "unit": u} for u, q in sorted(output.items())]}


def _reductions(events: Sequence[Event], year: int) -> dict[str, Any]:
    projects: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.type not in ("ReductionRecorded", "ReductionVerified") or not _in_year(e.data["period"], year):
            continue
        p = projects.setdefault(e.data["project_id"], {
            "project_id": e.data["project_id"], "periods": [], "methodologies": [], "baseline_tco2e": ZERO,
            "project_tco2e": ZERO, "reduction_tco2e": ZERO, "verified_reduction_tco2e": None, "verifiers": [],
            "report_refs": [], "benefits": defaultdict(Decimal)})
        if e.type == "ReductionRecorded":
            if e.data["period"] not in p["periods"]:
                p["periods"].append(e.data["period"])
            if e.data["methodology"] not in p["methodologies"]:
                p["methodologies"].append(e.data["methodology"])
            p["baseline_tco2e"] += dec(e.data["baseline_tco2e"])
            p["project_tco2e"] += dec(e.data["project_tco2e"])
            p["reduction_tco2e"] += dec(e.data["reduction_tco2e"])
            for name, amount in (e.data.get("benefits") or {}).items():
                p["benefits"][name] += dec(amount)
        else:
            p["verified_reduction_tco2e"] = (p["verified_reduction_tco2e"] or ZERO) + dec(e.data["verified_reduction_tco2e"])
            if e.data["verifier"] not in p["verifiers"]:
                p["verifiers"].append(e.data["verifier"])
            p["report_refs"].append(e.data["report_ref"])
    rows = []
    benefits: dict[str, Decimal] = defaultdict(Decimal)
    for p in sorted(projects.values(), key=lambda p: p["project_id"]):
        p["benefits"] = dict(sorted(p["benefits"].items()))
        for name, amount in p["benefits"].items():
            benefits[name] += amount
        rows.append(p)
    return {
        "total_reduction_tco2e": sum((p["reduction_tco2e"] for p in rows), ZERO),
        "total_verified_reduction_tco2e": sum((p["verified_reduction_tco2e"] or ZERO for p in rows), ZERO),
        "benefits": dict(sorted(benefits.items())),
        "projects": rows,
    }


def _retirements(events: Sequence[Event], year: int) -> list[dict[str, Any]]:
    return [{"asset": e.data["asset"], "batch": e.data["batch"], "quantity_t": dec(e.data["quantity_t"]),
             "period": e.data["period"], "purpose": e.data["purpose"], "retirement_ref": e.data["retirement_ref"],
             "retired_at": e.recorded_at}
            for e in events if e.type == "CreditsRetired" and _in_year(e.data["period"], year)]


def _assets(events: Sequence[Event], as_of: datetime) -> dict[str, Any]:
    """Holdings and the pledges outstanding at ``as_of``."""
    held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    pledges: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.recorded_at > as_of:
            continue
        d = e.data
        if e.type == "CarbonAssetAcquired":
            held[(d["asset"], d["batch"])] += dec(d["quantity_t"])
        elif e.type in ("CarbonAssetTransferred", "CreditsRetired"):
            held[(d["asset"], d["batch"])] -= dec(d["quantity_t"])
        elif e.type == "CarbonAssetPledged":
            pledges[d["pledge_id"]] = {"pledge_id": d["pledge_id"], "asset": d["asset"], "batch": d["batch"],
                                       "quantity_t": dec(d["quantity_t"]), "pledgee": d["pledgee"],
                                       "loan_ref": d["loan_ref"], "pledged_at": e.recorded_at}
        elif e.type == "CarbonAssetReleased":
            pledges.pop(d["pledge_id"], None)
    pledged: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for p in pledges.values():
        pledged[(p["asset"], p["batch"])] += p["quantity_t"]
    holdings = [{"asset": a, "batch": b, "held_t": q, "pledged_t": pledged[(a, b)], "free_t": q - pledged[(a, b)]}
                for (a, b), q in sorted(held.items()) if q != 0 or pledged[(a, b)] != 0]
    outstanding = sorted(pledges.values(), key=lambda p: p["pledged_at"])
    return {"holdings": holdings, "pledges": outstanding,
            "pledged_total_t": sum((p["quantity_t"] for p in outstanding), ZERO),
            "held_total_t": sum((h["held_t"] for h in holdings), ZERO)}


def _data_quality(lines: Sequence[_Line]) -> dict[str, Any]:
    by_level: dict[int, Decimal] = defaultdict(Decimal)
    for line in lines:
        by_level[line.data_quality] += line.tco2e
    total = sum(by_level.values(), ZERO)
    if not lines:
        return {"level": None, "weighted_average": None, "worst": None, "best": None, "by_level": {},
                "scale": DATA_QUALITY_SCALE}
    if total > 0:
        average = (sum((Decimal(level) * t for level, t in by_level.items()), ZERO) / total)
    else:
        average = Decimal(sum(line.data_quality for line in lines)) / len(lines)
    average = average.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return {"level": int(average.quantize(Decimal(1), rounding=ROUND_HALF_UP)), "weighted_average": average,
            "worst": min(by_level), "best": max(by_level),
            "by_level": {str(level): t for level, t in sorted(by_level.items())}, "scale": DATA_QUALITY_SCALE}


def _methodology(lines: Sequence[_Line], reductions: dict[str, Any], verifications: list[dict[str, Any]]) -> dict[str, Any]:
    methods: dict[str, Decimal] = defaultdict(Decimal)
    factors: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for line in lines:
        methods[line.methodology] += line.tco2e
        factors[(line.factor_ref, line.scope)] += line.tco2e
    return {
        "emission_methodologies": [{"methodology": m, "tco2e": t} for m, t in sorted(methods.items())],
        "factor_sources": [{"factor_ref": f, "scope": s, "tco2e": t} for (f, s), t in sorted(factors.items())],
        "reduction_methodologies": sorted({m for p in reductions["projects"] for m in p["methodologies"]}),
        "verification_reports": sorted({v["report_ref"] for v in verifications}),
    }


def year_totals(lines: Iterable[_Line]) -> dict[int, dict[int, Decimal]]:
    totals: dict[int, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for line in lines:
        totals[period_year(line.period)][line.scope] += line.tco2e
    return totals


def build_report(enterprise: Enterprise, envelopes: Iterable[dict[str, Any]], year: int, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """The disclosure of ``enterprise`` for ``year`` from its events (any order; all years)."""
    now = now or datetime.now(UTC)
    events = sorted((Event.from_envelope(e) for e in envelopes), key=lambda e: e.stream_version)
    lines = _emission_lines(events)
    year_lines = [line for line in lines if _in_year(line.period, year)]
    scopes = {scope: _scope_block(line for line in year_lines if line.scope == scope) for scope in (1, 2, 3)}
    scope12_lines = [line for line in year_lines if line.scope in (1, 2)]
    scope12 = scopes[1]["total_tco2e"] + scopes[2]["total_tco2e"]
    by_gas: dict[str, Decimal] = defaultdict(Decimal)
    for line in scope12_lines:
        by_gas[line.gas] += line.tco2e

    verifications = _verifications(events, year)
    status, headline = _verification_status(verifications, year)
    activity = _activity(events, year)
    reductions = _reductions(events, year)
    retirements = _retirements(events, year)
    retired = sum((r["quantity_t"] for r in retirements), ZERO)
    # Holdings and pledges are positions, not flows of a period: they are shown as they stand now.
    assets = _assets(events, now)

    totals = year_totals(lines)
    trend_years = []
    for y in sorted(totals):
        s1, s2, s3 = (totals[y].get(s, ZERO) for s in (1, 2, 3))
        y_status, _ = _verification_status(_verifications(events, y), y)
        trend_years.append({"year": y, "scope1_tco2e": s1, "scope2_tco2e": s2, "scope3_tco2e": s3,
                            "scope1_2_tco2e": s1 + s2, "verification_status": y_status})

    intensity_output = [{"unit": o["unit"], "quantity": o["quantity"], "tco2e_per_unit": ratio(scope12, o["quantity"])}
                        for o in activity["output"]]
    report: dict[str, Any] = {
        "enterprise_id": enterprise.enterprise_id,
        "year": year,
        "generated_at": now,
        "frameworks": FRAMEWORKS,
        "has_data": bool(year_lines or activity["periods"] or reductions["projects"] or retirements),
        "overview": {
            "name": enterprise.name, "industry": enterprise.industry, "region": enterprise.region,
            "scope1_tco2e": scopes[1]["total_tco2e"], "scope2_tco2e": scopes[2]["total_tco2e"],
            "scope1_2_tco2e": scope12, "retired_credits_t": retired, "net_scope1_2_tco2e": scope12 - retired,
            "verification_status": status,
        },
        "ghg_emissions": {
            "scope1": scopes[1], "scope2": scopes[2],
            # Scope 3 is reported apart, and only when recorded.
            "scope3": scopes[3] if any(line.scope == 3 for line in year_lines) else None,
            "scope1_2_tco2e": scope12, "scope1_2_by_gas": dict(sorted(by_gas.items())),
            "lines": len(year_lines), "periods": sorted({line.period for line in year_lines}),
        },
        "intensity": {
            "basis": "Scope 1 + Scope 2",
            "activity_periods": activity["periods"],
            "revenue_10k_cny": activity["revenue_10k_cny"],
            "tco2e_per_10k_cny_revenue": ratio(scope12, activity["revenue_10k_cny"]) if activity["revenue_10k_cny"] is not None else None,
            "output": intensity_output,
        },
        "trend": {"years": trend_years},
        "verification": {
            "status": status,
            "verifier": headline["verifier"] if headline else None,
            "verified_tco2e": headline["verified_tco2e"] if headline else None,
            "report_ref": headline["report_ref"] if headline else None,
            "verified_at": headline["verified_at"] if headline else None,
            "period": headline["period"] if headline else None,
            "reported_minus_verified_tco2e": (scope12 + scopes[3]["total_tco2e"] - headline["verified_tco2e"])
            if headline and headline["period"] == str(year) else None,
            "verifications": verifications,
        },
        "reductions": reductions,
        "neutralisation": {"retired_t": retired, "retirements": retirements, "scope1_2_tco2e": scope12,
                           "net_scope1_2_tco2e": scope12 - retired},
        "carbon_assets": assets,
        "data_quality": _data_quality(year_lines),
        "methodology": _methodology(year_lines, reductions, verifications),
    }
    report["sections"] = [{"key": key, "title": title, "references": refs} for key, (title, refs) in SECTIONS.items()]
    return report


def jsonable(value: Any) -> Any:
    """The report in wire form: decimals as strings, times as RFC 3339 UTC (SPEC §6)."""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
