"""The disclosure page (Jinja2). Kept as a module so it ships with the package like any code."""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Environmental information disclosure {{ r.year }} — {{ r.overview.name }}</title>
<style>
  @page { size: A4; margin: 18mm 16mm 20mm;
          @bottom-right { content: "Page " counter(page) " of " counter(pages); font-size: 8pt; color: #666;
                          font-family: "DejaVu Sans", sans-serif; }
          @bottom-left { content: "{{ r.enterprise_id }} · {{ r.year }}"; font-size: 8pt; color: #666;
                         font-family: "DejaVu Sans", sans-serif; } }
  body { font-family: "DejaVu Sans", "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif; color: #1d2421;
         font-size: 10pt; line-height: 1.45; max-width: 60rem; margin: 0 auto; padding: 1rem; }
  h1 { font-size: 18pt; margin: 0 0 .2rem; color: #17583a; }
  h2 { font-size: 12.5pt; margin: 1.4rem 0 .3rem; color: #17583a; border-bottom: 1px solid #cfe0d5;
       padding-bottom: .15rem; break-after: avoid; }
  h3 { font-size: 10.5pt; margin: .8rem 0 .2rem; }
  .refs { font-size: 8pt; color: #5b6b62; margin: 0 0 .4rem; }
  .lede { color: #4a5a51; margin: 0 0 .8rem; }
  table { border-collapse: collapse; width: 100%; margin: .3rem 0 .6rem; break-inside: auto; }
  th, td { text-align: left; padding: .22rem .45rem; border-bottom: 1px solid #e3e8e4; vertical-align: top; }
  th { background: #f2f7f3; font-weight: 600; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  tr { break-inside: avoid; }
  .status { display: inline-block; padding: 0 .4rem; border-radius: .2rem; background: #eef3ef; }
  .status.verified { background: #d6f0de; } .status.stale { background: #fbe8c8; }
  .status.unverified { background: #f6d9d9; }
  .kpis { display: flex; flex-wrap: wrap; gap: .6rem; margin: .6rem 0; }
  .kpi { border: 1px solid #cfe0d5; border-radius: .3rem; padding: .4rem .6rem; min-width: 9rem; }
  .kpi .v { font-size: 12pt; font-weight: 600; } .kpi .l { font-size: 8pt; color: #5b6b62; }
  .empty { color: #7a8680; font-style: italic; }
  svg.chart { max-width: 100%; height: auto; }
  .keep { break-inside: avoid; }
  footer { margin-top: 1.5rem; font-size: 8pt; color: #5b6b62; }
</style>
</head>
<body>
<header>
  <h1>Environmental information disclosure {{ r.year }}</h1>
  <p class="lede">{{ r.overview.name }} · USCC {{ r.enterprise_id }} · industry {{ r.overview.industry }} ·
  region {{ r.overview.region }}<br>Prepared after
  {% for f in r.frameworks %}{{ f.id }}{% if not loop.last %}, {% endif %}{% endfor %} · generated {{ r.generated_at | moment }}</p>
</header>
{% macro heading(key) %}
<h2 id="{{ key }}">{{ titles[key].title }}</h2>
<p class="refs">{{ titles[key].references | join(" · ") }}</p>
{% endmacro %}

<section>
{{ heading("overview") }}
<div class="kpis">
  <div class="kpi"><div class="v" id="kpi-scope1">{{ r.overview.scope1_tco2e | figure }}</div><div class="l">Scope 1 (tCO2e)</div></div>
  <div class="kpi"><div class="v" id="kpi-scope2">{{ r.overview.scope2_tco2e | figure }}</div><div class="l">Scope 2 (tCO2e)</div></div>
  <div class="kpi"><div class="v" id="kpi-scope12">{{ r.overview.scope1_2_tco2e | figure }}</div><div class="l">Scope 1 + 2 (tCO2e)</div></div>
  <div class="kpi"><div class="v">{{ r.overview.retired_credits_t | figure }}</div><div class="l">Credits retired (t)</div></div>
  <div class="kpi"><div class="v">{{ r.overview.net_scope1_2_tco2e | figure }}</div><div class="l">Net of retired credits (tCO2e)</div></div>
  <div class="kpi"><div class="v"><span class="status {{ r.overview.verification_status }}">{{ r.overview.verification_status | replace("_", " ") }}</span></div><div class="l">Verification</div></div>
</div>
{% if not r.has_data %}<p class="empty">Nothing has been recorded for {{ r.year }}.</p>{% endif %}
</section>

<section>
{{ heading("ghg_emissions") }}
<table>
  <thead><tr><th>Scope</th><th>Gas / category</th><th class="n">tCO2e</th></tr></thead>
  <tbody>
  {% for key, label in [("scope1", "Scope 1 — direct"), ("scope2", "Scope 2 — purchased energy"), ("scope3", "Scope 3 — other indirect (reported apart)")] %}
    {% set block = r.ghg_emissions[key] %}
    {% if block %}
    <tr><th>{{ label }}</th><th>total</th><th class="n">{{ block.total_tco2e | figure }}</th></tr>
    {% for gas, t in block.by_gas.items() %}<tr><td></td><td>gas {{ gas }}</td><td class="n">{{ t | figure }}</td></tr>{% endfor %}
    {% for category, t in block.by_category.items() %}<tr><td></td><td>{{ category | replace("_", " ") }}</td><td class="n">{{ t | figure }}</td></tr>{% endfor %}
    {% endif %}
  {% endfor %}
  <tr><th>Scope 1 + 2</th><th>total</th><th class="n">{{ r.ghg_emissions.scope1_2_tco2e | figure }}</th></tr>
  {% for gas, t in r.ghg_emissions.scope1_2_by_gas.items() %}<tr><td></td><td>gas {{ gas }}</td><td class="n">{{ t | figure }}</td></tr>{% endfor %}
  </tbody>
</table>
<p class="refs">{{ r.ghg_emissions.lines }} emission records for periods {{ r.ghg_emissions.periods | join(", ") or "—" }}; corrections replace the records they supersede.</p>
</section>

<section>
{{ heading("intensity") }}
<table>
  <thead><tr><th>Indicator</th><th class="n">Denominator</th><th class="n">Value</th></tr></thead>
  <tbody>
    <tr><td>tCO2e per 10,000 CNY revenue</td><td class="n">{{ r.intensity.revenue_10k_cny | figure }}</td><td class="n">{{ r.intensity.tco2e_per_10k_cny_revenue | figure }}</td></tr>
    {% for o in r.intensity.output %}
    <tr><td>tCO2e per {{ o.unit }} of output</td><td class="n">{{ o.quantity | figure }} {{ o.unit }}</td><td class="n">{{ o.tco2e_per_unit | figure }}</td></tr>
    {% endfor %}
  </tbody>
</table>
<p class="refs">Basis: {{ r.intensity.basis }}; activity periods {{ r.intensity.activity_periods | join(", ") or "—" }}.</p>
</section>

<section>
<div class="keep">
{{ heading("trend") }}
{% if r.trend.years %}
{{ chart }}
</div>
<table>
  <thead><tr><th>Year</th><th class="n">Scope 1</th><th class="n">Scope 2</th><th class="n">Scope 1 + 2</th><th class="n">Scope 3</th><th>Verification</th></tr></thead>
  <tbody>
  {% for y in r.trend.years %}
    <tr><td>{{ y.year }}</td><td class="n">{{ y.scope1_tco2e | figure }}</td><td class="n">{{ y.scope2_tco2e | figure }}</td>
        <td class="n">{{ y.scope1_2_tco2e | figure }}</td><td class="n">{{ y.scope3_tco2e | figure }}</td><td>{{ y.verification_status | replace("_", " ") }}</td></tr>
  {% endfor %}
  </tbody>
</table>
{% else %}<p class="empty">No emissions recorded in any year.</p></div>{% endif %}
</section>

<section>
{{ heading("verification") }}
<table>
  <tbody>
    <tr><th>Status</th><td><span class="status {{ r.verification.status }}">{{ r.verification.status | replace("_", " ") }}</span></td></tr>
    <tr><th>Verifier</th><td>{{ r.verification.verifier or "—" }}</td></tr>
    <tr><th>Verified emissions (tCO2e)</th><td class="n">{{ r.verification.verified_tco2e | figure }}</td></tr>
    <tr><th>Verification report</th><td>{{ r.verification.report_ref or "—" }}</td></tr>
    <tr><th>Verified on</th><td>{{ r.verification.verified_at | moment }}</td></tr>
    <tr><th>Reported minus verified (tCO2e)</th><td class="n">{{ r.verification.reported_minus_verified_tco2e | figure }}</td></tr>
  </tbody>
</table>
{% if r.verification.verifications | length > 1 %}
<h3>All verifications of {{ r.year }}</h3>
<table><thead><tr><th>Period</th><th>Verifier</th><th class="n">tCO2e</th><th>Report</th><th>Status</th></tr></thead><tbody>
{% for v in r.verification.verifications %}<tr><td>{{ v.period }}</td><td>{{ v.verifier }}</td><td class="n">{{ v.verified_tco2e | figure }}</td><td>{{ v.report_ref }}</td><td>{{ v.status }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}
</section>

<section>
{{ heading("reductions") }}
{% if r.reductions.projects %}
<table>
  <thead><tr><th>Project</th><th>Methodology</th><th class="n">Baseline</th><th class="n">Project</th><th class="n">Reduction</th><th class="n">Verified</th><th>Verifier</th></tr></thead>
  <tbody>
  {% for p in r.reductions.projects %}
    <tr><td>{{ p.project_id }}</td><td>{{ p.methodologies | join(", ") }}</td><td class="n">{{ p.baseline_tco2e | figure }}</td>
        <td class="n">{{ p.project_tco2e | figure }}</td><td class="n">{{ p.reduction_tco2e | figure }}</td>
        <td class="n">{{ p.verified_reduction_tco2e | figure }}</td><td>{{ p.verifiers | join(", ") or "—" }}</td></tr>
  {% endfor %}
    <tr><th colspan="4">Total (tCO2e)</th><th class="n">{{ r.reductions.total_reduction_tco2e | figure }}</th><th class="n">{{ r.reductions.total_verified_reduction_tco2e | figure }}</th><th></th></tr>
  </tbody>
</table>
{% if r.reductions.benefits %}
<h3>Environmental benefits</h3>
<table><tbody>{% for name, amount in r.reductions.benefits.items() %}<tr><td>{{ name | replace("_", " ") }}</td><td class="n">{{ amount | figure }}</td></tr>{% endfor %}</tbody></table>
{% endif %}
{% else %}<p class="empty">No reduction project recorded for {{ r.year }}.</p>{% endif %}
</section>

<section>
{{ heading("neutralisation") }}
{% if r.neutralisation.retirements %}
<table>
  <thead><tr><th>Asset</th><th>Batch</th><th class="n">Retired (t)</th><th>Purpose</th><th>Reference</th></tr></thead>
  <tbody>
  {% for x in r.neutralisation.retirements %}
    <tr><td>{{ x.asset }}</td><td>{{ x.batch }}</td><td class="n">{{ x.quantity_t | figure }}</td><td>{{ x.purpose }}</td><td>{{ x.retirement_ref }}</td></tr>
  {% endfor %}
  </tbody>
</table>
{% else %}<p class="empty">No credits retired for {{ r.year }}.</p>{% endif %}
<p>Scope 1 + 2 {{ r.neutralisation.scope1_2_tco2e | figure }} tCO2e, less {{ r.neutralisation.retired_t | figure }} t retired:
<strong>{{ r.neutralisation.net_scope1_2_tco2e | figure }} tCO2e</strong> net. Retired credits are reported apart from the inventory.</p>
</section>

<section>
{{ heading("carbon_assets") }}
<p class="refs">Positions as recorded at {{ r.generated_at | moment }}.</p>
{% if r.carbon_assets.holdings %}
<table>
  <thead><tr><th>Asset</th><th>Batch</th><th class="n">Held (t)</th><th class="n">Pledged (t)</th><th class="n">Free (t)</th></tr></thead>
  <tbody>{% for h in r.carbon_assets.holdings %}<tr><td>{{ h.asset }}</td><td>{{ h.batch }}</td><td class="n">{{ h.held_t | figure }}</td><td class="n">{{ h.pledged_t | figure }}</td><td class="n">{{ h.free_t | figure }}</td></tr>{% endfor %}</tbody>
</table>
{% else %}<p class="empty">No carbon assets held.</p>{% endif %}
{% if r.carbon_assets.pledges %}
<h3>Pledged carbon assets</h3>
<table>
  <thead><tr><th>Pledge</th><th>Asset / batch</th><th class="n">Quantity (t)</th><th>Pledgee</th><th>Loan</th></tr></thead>
  <tbody>{% for p in r.carbon_assets.pledges %}<tr><td>{{ p.pledge_id }}</td><td>{{ p.asset }} {{ p.batch }}</td><td class="n">{{ p.quantity_t | figure }}</td><td>{{ p.pledgee }}</td><td>{{ p.loan_ref }}</td></tr>{% endfor %}</tbody>
</table>
{% endif %}
</section>

<section>
{{ heading("data_quality") }}
{% if r.data_quality.level is not none %}
<p>Level <strong>{{ r.data_quality.level }}</strong> (weighted average {{ r.data_quality.weighted_average }}; best {{ r.data_quality.best }}, worst {{ r.data_quality.worst }}). Scale: {{ r.data_quality.scale }}.</p>
<table><thead><tr><th>Level</th><th class="n">tCO2e</th></tr></thead>
<tbody>{% for level, t in r.data_quality.by_level.items() %}<tr><td>{{ level }}</td><td class="n">{{ t | figure }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="empty">No emission records to assess.</p>{% endif %}
</section>

<section>
{{ heading("methodology") }}
{% if r.methodology.emission_methodologies %}
<table><thead><tr><th>Accounting methodology</th><th class="n">tCO2e</th></tr></thead>
<tbody>{% for m in r.methodology.emission_methodologies %}<tr><td>{{ m.methodology }}</td><td class="n">{{ m.tco2e | figure }}</td></tr>{% endfor %}</tbody></table>
<table><thead><tr><th>Emission-factor source</th><th>Scope</th><th class="n">tCO2e</th></tr></thead>
<tbody>{% for f in r.methodology.factor_sources %}<tr><td>{{ f.factor_ref }}</td><td>{{ f.scope }}</td><td class="n">{{ f.tco2e | figure }}</td></tr>{% endfor %}</tbody></table>
{% endif %}
{% if r.methodology.reduction_methodologies %}<p>Reduction methodologies: {{ r.methodology.reduction_methodologies | join(", ") }}.</p>{% endif %}
{% if r.methodology.verification_reports %}<p>Verification reports: {{ r.methodology.verification_reports | join(", ") }}.</p>{% endif %}
</section>

<footer>Figures are taken from the enterprise's hash-chained carbon account as recorded at the time of generation.
Tonnes are tCO2e unless stated; credits are in tonnes (1 credit = 1 tCO2e).</footer>
</body>
</html>
"""
