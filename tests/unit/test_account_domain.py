"""The account's rules as pure functions: writer table, consent decisions, stream invariants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon.consent import ConsentRecord, decide
from carbon.errors import Forbidden, Invalid, NotFound
from carbon.identity import Principal
from contracts import Role, Scope, parse_event
from contracts.examples import CEMENT_MAKER_USCC as CEMENT
from contracts.examples import POWER_PLANT_USCC as POWER
from services.account import domain

NOW = datetime(2026, 6, 1, tzinfo=UTC)
REGISTRY = Principal("sceex", Role.REGISTRY)
OWNER = Principal(CEMENT, Role.ENTERPRISE)
VERIFIER = Principal("verifier-cq", Role.VERIFIER)


def event(event_type: str, **data):
    return event_type, parse_event(event_type, data)


def registered() -> domain.AccountState:
    state = domain.AccountState(CEMENT)
    domain.apply(state, *event("EnterpriseRegistered", uscc=CEMENT, name="C", industry="C3011", region="510100"),
                 NOW - timedelta(days=30), "e-1")
    return state


def accept(state: domain.AccountState, actor: Principal, *batch, now: datetime = NOW) -> None:
    domain.check_append(state, actor, list(batch), now)
    for event_type, data in batch:
        domain.apply(state, event_type, data, now, str(uuid.uuid4()))


def refused_field(state, actor, *batch) -> str:
    with pytest.raises(Invalid) as caught:
        domain.check_append(state, actor, list(batch), NOW)
    return caught.value.errors[0]["field"]


# ---- who writes what --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("actor", "event_type", "reason"),
    [
        (Principal(CEMENT, Role.ENTERPRISE), "CarbonAssetAcquired", "wrong_role"),
        (Principal(CEMENT, Role.ENTERPRISE), "EmissionVerified", "wrong_role"),
        (Principal(POWER, Role.ENTERPRISE), "ActivityReported", "not_owner"),
        (Principal("rating", Role.SERVICE), "EmissionRecorded", "wrong_role"),
        (Principal("accounting", Role.SERVICE), "ActivityReported", "wrong_role"),
        (Principal("bank-a", Role.BANK), "ActivityReported", "wrong_role"),
        (Principal("sceex", Role.REGISTRY), "EmissionRecorded", "wrong_role"),
        (Principal("ops", Role.OPERATOR), "EnterpriseRegistered", "wrong_role"),
        (Principal(CEMENT, Role.ENTERPRISE), "ConsentGranted", "wrong_role"),
    ],
)
def test_writer_table_refusals(actor: Principal, event_type: str, reason: str) -> None:
    with pytest.raises(Forbidden) as caught:
        domain.authorize_writer(actor, CEMENT, event_type)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("actor", "event_type"),
    [
        (Principal(CEMENT, Role.ENTERPRISE), "ActivityReported"),
        (Principal(CEMENT, Role.ENTERPRISE), "EmissionRecorded"),
        (Principal("accounting", Role.SERVICE), "EmissionRecorded"),
        (Principal("accounting", Role.SERVICE), "ReductionRecorded"),
        (Principal("verifier-cq", Role.VERIFIER), "EmissionVerified"),
        (Principal("sceex", Role.REGISTRY), "CreditsRetired"),
    ],
)
def test_writer_table_permissions(actor: Principal, event_type: str) -> None:
    domain.authorize_writer(actor, CEMENT, event_type)


# ---- consent decisions ------------------------------------------------------------------

def consent(grantee="bank-a", scopes=("rating:read",), days=30, revoked_days_ago=None, granted_days_ago=10):
    return ConsentRecord(
        consent_id=str(uuid.uuid4()), grantee=grantee, scopes=frozenset(scopes), purpose="p",
        expires_at=NOW + timedelta(days=days), granted_at=NOW - timedelta(days=granted_days_ago),
        revoked_at=None if revoked_days_ago is None else NOW - timedelta(days=revoked_days_ago),
    )


@pytest.mark.parametrize(
    ("consents", "expected"),
    [
        ([], "no_consent"),
        ([consent(grantee="bank-b")], "no_consent"),
        ([consent(scopes=("pricing:read",))], "scope_missing"),
        ([consent(revoked_days_ago=1)], "consent_revoked"),
        ([consent(days=-1)], "consent_expired"),
        ([consent(granted_days_ago=-1)], "no_consent"),  # granted only after the moment asked about
        ([consent(revoked_days_ago=1), consent()], None),  # a fresh grant after a revocation
    ],
)
def test_consent_decision_reasons(consents, expected) -> None:
    decision = decide(consents, "bank-a", "rating:read", NOW)
    assert decision.allowed is (expected is None)
    assert decision.reason == expected


# ---- invariants -------------------------------------------------------------------------

def test_unregistered_account_refuses_everything() -> None:
    with pytest.raises(NotFound):
        domain.check_append(domain.AccountState(CEMENT), OWNER, [event("ActivityReported", period="2024",
                            revenue_10k_cny="1", output={"quantity": "1", "unit": "t"})], NOW)


def test_pledge_release_and_balance_rules() -> None:
    state = registered()
    accept(state, REGISTRY, event("CarbonAssetAcquired", asset="CCER", batch="B", quantity_t="100", source="s"))
    accept(state, REGISTRY, event("CarbonAssetPledged", pledge_id="P", asset="CCER", batch="B", quantity_t="60",
                                  pledgee="bank-a", loan_ref="L"))
    assert state.free_balance("CCER", "B") == Decimal("40")
    assert refused_field(state, REGISTRY, event("CarbonAssetPledged", pledge_id="P", asset="CCER", batch="B",
                                                quantity_t="1", pledgee="b", loan_ref="L")) == "events[0].data.pledge_id"
    assert refused_field(state, REGISTRY, event("CreditsRetired", asset="CCER", batch="B", quantity_t="40.000001",
                                                period="2024", purpose="p", retirement_ref="r")) == "events[0].data.quantity_t"
    assert refused_field(state, REGISTRY, event("CarbonAssetTransferred", asset="VCU", batch="B", quantity_t="1",
                                                counterparty="x")) == "events[0].data.quantity_t"
    accept(state, REGISTRY, event("CarbonAssetReleased", pledge_id="P"))
    assert refused_field(state, REGISTRY, event("CarbonAssetReleased", pledge_id="P")) == "events[0].data.pledge_id"
    assert refused_field(state, REGISTRY, event("CarbonAssetReleased", pledge_id="nope")) == "events[0].data.pledge_id"
    accept(state, REGISTRY, event("CreditsRetired", asset="CCER", batch="B", quantity_t="100", period="2024",
                                  purpose="p", retirement_ref="r"))
    assert state.free_balance("CCER", "B") == 0


def test_batch_errors_name_the_failing_index() -> None:
    state = registered()
    acquire = event("CarbonAssetAcquired", asset="CCER", batch="B", quantity_t="10", source="s")
    retire = event("CreditsRetired", asset="CCER", batch="B", quantity_t="11", period="2024", purpose="p", retirement_ref="r")
    assert refused_field(state, REGISTRY, acquire, retire) == "events[1].data.quantity_t"
    assert state.holdings == {}  # the trial never touches the real state


def emission(period: str, supersedes: str | None = None, tco2e: str = "10"):
    data = dict(calculation_id="c", period=period, scope=1, category="fuel_combustion", gas="CO2", tco2e=tco2e,
                factor_ref="f", methodology="m", data_quality=2)
    if supersedes:
        data["supersedes"] = supersedes
    return event("EmissionRecorded", **data)


def with_verifier_consent(state: domain.AccountState) -> None:
    accept(state, OWNER, event("ConsentGranted", consent_id=str(uuid.uuid4()), grantee=VERIFIER.sub,
                               scopes=["account:verify"], purpose="verification", expires_at="2030-01-01T00:00:00Z"))


def test_verification_needs_recorded_emissions_and_goes_stale_on_new_records() -> None:
    state = registered()
    with_verifier_consent(state)
    verify = event("EmissionVerified", period="2024", verifier=VERIFIER.sub, verified_tco2e="10", report_ref="r")
    assert refused_field(state, VERIFIER, verify) == "events[0].data.period"
    accept(state, OWNER, emission("2024-03"))
    accept(state, VERIFIER, verify)
    assert state.verified_periods == {"2024": True}
    accept(state, OWNER, emission("2024-04"))
    assert state.verified_periods == {"2024": False}


def test_corrections_supersede_once_and_keep_the_period() -> None:
    state = registered()
    accept(state, OWNER, emission("2024"))
    original = next(iter(state.emission_records))
    assert refused_field(state, OWNER, emission("2023", supersedes=str(uuid.uuid4()))) == "events[0].data.supersedes"
    assert refused_field(state, OWNER, emission("2023", supersedes=original)) == "events[0].data.supersedes"
    accept(state, OWNER, emission("2024", supersedes=original, tco2e="12"))
    assert refused_field(state, OWNER, emission("2024", supersedes=original)) == "events[0].data.supersedes"


def test_reduction_verification_bounds() -> None:
    state = registered()
    with_verifier_consent(state)
    accept(state, OWNER, event("ReductionRecorded", project_id="PV-1", period="2024", methodology="CCER-14-001-V01",
                               baseline_tco2e="100", project_tco2e="20", reduction_tco2e="80"))
    too_much = event("ReductionVerified", project_id="PV-1", period="2024", verifier=VERIFIER.sub,
                     verified_reduction_tco2e="80.5", report_ref="r")
    assert refused_field(state, VERIFIER, too_much) == "events[0].data.verified_reduction_tco2e"
    other = event("ReductionVerified", project_id="PV-2", period="2024", verifier=VERIFIER.sub,
                  verified_reduction_tco2e="1", report_ref="r")
    assert refused_field(state, VERIFIER, other) == "events[0].data.project_id"
    accept(state, VERIFIER, event("ReductionVerified", project_id="PV-1", period="2024", verifier=VERIFIER.sub,
                                  verified_reduction_tco2e="80", report_ref="r"))


def test_consent_grant_and_revoke_rules() -> None:
    state = registered()
    past = event("ConsentGranted", consent_id=str(uuid.uuid4()), grantee="b", scopes=["rating:read"], purpose="p",
                 expires_at="2020-01-01T00:00:00Z")
    assert refused_field(state, OWNER, past) == "events[0].data.expires_at"
    consent_id = str(uuid.uuid4())
    accept(state, OWNER, event("ConsentGranted", consent_id=consent_id, grantee="b", scopes=["rating:read"],
                               purpose="p", expires_at="2030-01-01T00:00:00Z"))
    revoke = event("ConsentRevoked", consent_id=consent_id, reason="loan repaid")
    accept(state, OWNER, revoke)
    assert refused_field(state, OWNER, revoke) == "events[0].data.consent_id"
    with pytest.raises(NotFound):
        domain.check_append(state, OWNER, [event("ConsentRevoked", consent_id=str(uuid.uuid4()))], NOW)


def test_verifier_consent_is_checked_against_the_scope() -> None:
    state = registered()
    verify = event("EmissionVerified", period="2024", verifier=VERIFIER.sub, verified_tco2e="10", report_ref="r")
    with pytest.raises(Forbidden) as caught:
        domain.check_append(state, VERIFIER, [verify], NOW)
    assert caught.value.reason == "no_consent"
    with pytest.raises(Forbidden):
        domain.check_consent(state, VERIFIER.sub, Scope.ACCOUNT_VERIFY, NOW)


# ---- property: balances never go negative -----------------------------------------------

ASSETS = ["CCER", "VCU"]
BATCHES = ["B1", "B2"]
amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000"), places=6)
asset_events = st.one_of(
    st.builds(lambda a, b, q: ("CarbonAssetAcquired", dict(asset=a, batch=b, quantity_t=str(q), source="s")),
              st.sampled_from(ASSETS), st.sampled_from(BATCHES), amounts),
    st.builds(lambda p, a, b, q: ("CarbonAssetPledged", dict(pledge_id=p, asset=a, batch=b, quantity_t=str(q),
                                                               pledgee="bank", loan_ref="L")),
              st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(ASSETS), st.sampled_from(BATCHES), amounts),
    st.builds(lambda p: ("CarbonAssetReleased", dict(pledge_id=p)), st.sampled_from(["P1", "P2", "P3"])),
    st.builds(lambda a, b, q: ("CarbonAssetTransferred", dict(asset=a, batch=b, quantity_t=str(q), counterparty="x")),
              st.sampled_from(ASSETS), st.sampled_from(BATCHES), amounts),
    st.builds(lambda a, b, q: ("CreditsRetired", dict(asset=a, batch=b, quantity_t=str(q), period="2024",
                                                        purpose="p", retirement_ref="r")),
              st.sampled_from(ASSETS), st.sampled_from(BATCHES), amounts),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(asset_events, max_size=40))
def test_balances_never_go_negative_under_any_sequence(sequence) -> None:
    state = registered()
    for event_type, data in sequence:
        try:
            accept(state, REGISTRY, (event_type, parse_event(event_type, data)))
        except Invalid:
            continue  # refused events leave the state untouched
        for asset in ASSETS:
            for batch in BATCHES:
                held = state.holdings.get((asset, batch), Decimal(0))
                assert held >= 0
                assert Decimal(0) <= state.pledged(asset, batch) <= held
                assert state.free_balance(asset, batch) >= 0
