"""The disclosure report as a pure fold over an enterprise's events, and its HTML/PDF renderings."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pypdf
import pytest

from services.disclosure import domain, render

ENTERPRISE = domain.Enterprise("91510100MA6CN3011R", "四川示例水泥有限公司", "C3011", "510100")
T0 = datetime(2025, 2, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 30, tzinfo=UTC)


class Stream:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def add(self, type_: str, **data) -> str:
        event_id = str(uuid.uuid4())
        version = len(self.events) + 1
        self.events.append({"event_id": event_id, "type": type_, "stream_version": version,
                            "recorded_at": (T0 + timedelta(hours=version)).isoformat().replace("+00:00", "Z"),
                            "data": data})
        return event_id


def emission(stream: Stream, tco2e: str, *, period: str = "2024", scope: int = 1, category: str = "fuel_combustion",
             gas: str = "CO2", quality: int = 2, factor: str = "GB/T 32150-2015 Appendix A",
             methodology: str = "GB/T 32150-2015", supersedes: str | None = None) -> str:
    data = {"calculation_id": f"calc-{len(stream.events)}", "period": period, "scope": scope, "category": category,
            "gas": gas, "tco2e": tco2e, "factor_ref": factor, "methodology": methodology, "data_quality": quality}
    if supersedes:
        data["supersedes"] = supersedes
    return stream.add("EmissionRecorded", **data)


@pytest.fixture
def stream() -> Stream:
    s = Stream()
    s.add("EnterpriseRegistered", uscc=ENTERPRISE.enterprise_id, name=ENTERPRISE.name, industry="C3011", region="510100")
    s.add("ActivityReported", period="2024", revenue_10k_cny="50000", output={"quantity": "1000000", "unit": "t"})
    emission(s, "500000.5", category="fuel_combustion", quality=2)
    wrong = emission(s, "999", category="process", quality=4)
    emission(s, "300000.25", category="process", quality=4, supersedes=wrong,
             factor="GB/T 32151.8-2015 clinker default", methodology="GB/T 32151.8-2015")
    emission(s, "12.123456", gas="CH4", category="fuel_combustion", quality=3)
    emission(s, "80000", scope=2, category="purchased_electricity", quality=1,
             factor="Sichuan grid 2022 (MEE 2024 announcement)")
    emission(s, "700000", period="2023", quality=3)
    emission(s, "60000", period="2023", scope=2, category="purchased_electricity")
    emission(s, "1000", period="2024", scope=3, category="business_travel", quality=5)
    s.add("EmissionVerified", period="2024", verifier="verifier-cq", verified_tco2e="881012.873456",
          report_ref="VR-2025-0031")
    s.add("ReductionRecorded", project_id="whr-1", period="2024", methodology="CCER-14-001-V01",
          baseline_tco2e="52000", project_tco2e="4000.5", reduction_tco2e="47999.5",
          benefits={"standard_coal_saved_t": "18250", "so2_reduced_t": "12.4"})
    s.add("ReductionVerified", project_id="whr-1", period="2024", verifier="verifier-cq",
          verified_reduction_tco2e="47000", report_ref="VR-2025-0032")
    s.add("CarbonAssetAcquired", asset="CCER", batch="B1", quantity_t="20000", source="issuance")
    s.add("CarbonAssetPledged", pledge_id="PL-1", asset="CCER", batch="B1", quantity_t="8000", pledgee="bank-a",
          loan_ref="LOAN-1")
    s.add("CarbonAssetPledged", pledge_id="PL-2", asset="CCER", batch="B1", quantity_t="1000", pledgee="bank-b",
          loan_ref="LOAN-2")
    s.add("CarbonAssetReleased", pledge_id="PL-2")
    s.add("CreditsRetired", asset="CCER", batch="B1", quantity_t="500", period="2024", purpose="neutralise travel",
          retirement_ref="RET-1")
    s.add("CreditsRetired", asset="CCER", batch="B1", quantity_t="100", period="2023", purpose="neutralise 2023",
          retirement_ref="RET-0")
    return s


def test_scope_totals_by_gas_and_category(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    g = r["ghg_emissions"]
    assert g["scope1"]["total_tco2e"] == Decimal("800012.873456")  # the superseded 999 is gone
    assert g["scope1"]["by_gas"] == {"CH4": Decimal("12.123456"), "CO2": Decimal("800000.75")}
    assert g["scope1"]["by_category"] == {"fuel_combustion": Decimal("500012.623456"), "process": Decimal("300000.25")}
    assert g["scope2"]["total_tco2e"] == Decimal("80000")
    assert g["scope3"]["total_tco2e"] == Decimal("1000")
    assert g["scope1_2_tco2e"] == Decimal("880012.873456")
    assert g["scope1_2_by_gas"] == {"CH4": Decimal("12.123456"), "CO2": Decimal("880000.75")}
    assert g["lines"] == 5 and g["periods"] == ["2024"]
    assert r["overview"]["scope1_2_tco2e"] == Decimal("880012.873456")


def test_intensity_trend_and_verification(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    assert r["intensity"]["revenue_10k_cny"] == Decimal("50000")
    assert r["intensity"]["tco2e_per_10k_cny_revenue"] == Decimal("17.600257")
    assert r["intensity"]["output"] == [{"unit": "t", "quantity": Decimal("1000000"), "tco2e_per_unit": Decimal("0.880013")}]
    assert [(y["year"], y["scope1_tco2e"], y["scope2_tco2e"], y["verification_status"]) for y in r["trend"]["years"]] == [
        (2023, Decimal("700000"), Decimal("60000"), "unverified"),
        (2024, Decimal("800012.873456"), Decimal("80000"), "verified"),
    ]
    v = r["verification"]
    assert (v["status"], v["verifier"], v["verified_tco2e"], v["report_ref"]) == (
        "verified", "verifier-cq", Decimal("881012.873456"), "VR-2025-0031")
    assert v["reported_minus_verified_tco2e"] == Decimal("0")


def test_a_later_record_makes_the_verification_stale(stream: Stream) -> None:
    emission(stream, "5", period="2024-Q4")
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    assert r["verification"]["status"] == "stale"
    assert r["overview"]["verification_status"] == "stale"


def test_reductions_neutralisation_assets_and_quality(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    [project] = r["reductions"]["projects"]
    assert (project["project_id"], project["reduction_tco2e"], project["verified_reduction_tco2e"], project["verifiers"]) == (
        "whr-1", Decimal("47999.5"), Decimal("47000"), ["verifier-cq"])
    assert r["reductions"]["benefits"] == {"so2_reduced_t": Decimal("12.4"), "standard_coal_saved_t": Decimal("18250")}
    n = r["neutralisation"]
    assert n["retired_t"] == Decimal("500") and [x["retirement_ref"] for x in n["retirements"]] == ["RET-1"]
    assert n["net_scope1_2_tco2e"] == Decimal("879512.873456")
    a = r["carbon_assets"]
    assert a["holdings"] == [{"asset": "CCER", "batch": "B1", "held_t": Decimal("19400"), "pledged_t": Decimal("8000"),
                              "free_t": Decimal("11400")}]
    assert [(p["pledge_id"], p["pledgee"], p["quantity_t"]) for p in a["pledges"]] == [("PL-1", "bank-a", Decimal("8000"))]
    q = r["data_quality"]
    # (500000.5*2 + 300000.25*4 + 12.123456*3 + 80000*1 + 1000*5) / 881012.873456
    assert q["by_level"] == {"1": Decimal("80000"), "2": Decimal("500000.5"), "3": Decimal("12.123456"),
                             "4": Decimal("300000.25"), "5": Decimal("1000")}
    assert (q["level"], q["weighted_average"], q["best"], q["worst"]) == (3, Decimal("2.59"), 5, 1)
    m = r["methodology"]
    assert {x["methodology"] for x in m["emission_methodologies"]} == {"GB/T 32150-2015", "GB/T 32151.8-2015"}
    assert {x["factor_ref"] for x in m["factor_sources"]} >= {"Sichuan grid 2022 (MEE 2024 announcement)"}
    assert m["reduction_methodologies"] == ["CCER-14-001-V01"]


def test_an_empty_year_and_wire_form(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2019, now=NOW)
    assert r["has_data"] is False
    assert r["verification"]["status"] == "unverified"
    assert r["intensity"]["tco2e_per_10k_cny_revenue"] is None
    wire = domain.jsonable(domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW))
    assert wire["overview"]["scope1_2_tco2e"] == "880012.873456"
    assert wire["generated_at"] == "2025-06-30T00:00:00Z"
    assert [s["key"] for s in wire["sections"]][:2] == ["overview", "ghg_emissions"]


def test_figures_for_people() -> None:
    assert render.figure(Decimal("812345.123456")) == "812,345.123456"
    assert render.figure(Decimal("1000.500")) == "1,000.5"
    assert render.figure(Decimal("-48500")) == "-48,500"
    assert render.figure(Decimal("0E-6")) == "0"
    assert render.figure(None) == "—"


def test_chart_is_inline_svg_with_a_bar_per_year_and_scope(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    svg = render.emissions_chart(r["trend"]["years"])
    assert svg.startswith("<svg") and "<script" not in svg
    assert svg.count("<rect") == 5 + 3  # a bar per year and scope with emissions (2023 has no scope 3) + legend
    assert "2024 Scope 1: 800,012.873456 tCO2e" in svg
    assert render.emissions_chart([]) == ""


def _figures(text: str) -> list[str]:
    return re.findall(r"-?\d{1,3}(?:,\d{3})*(?:\.\d+)?", text)


def test_pdf_carries_the_html_figures(stream: Stream) -> None:
    r = domain.build_report(ENTERPRISE, stream.events, 2024, now=NOW)
    html = render.render_html(r)
    assert "<script" not in html and "<svg" in html
    pdf = render.render_pdf(html)
    assert pdf.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    for figure in ("880,012.873456", "800,012.873456", "80,000", "17.600257", "47,999.5", "879,512.873456",
                   "881,012.873456", "VR-2025-0031", "PL-1", ENTERPRISE.name):
        assert figure in html and figure in text.replace("\n", " "), figure
    for title, _ in domain.SECTIONS.values():
        assert title in html and title in text.replace("\n", " ")
