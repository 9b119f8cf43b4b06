"""Webhook delivery to a real receiver on loopback: signed CloudEvents, at least once, in order per
enterprise, retried, dead-lettered and replayed, stopped by a revocation, isolated per partner."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from carbon.account_client import AccountClient
from carbon.projection_runtime import replay
from services.disclosure.projection import create_projector
from tests.contract.test_disclosure_api import (  # noqa: F401 - fixtures
    OTHER_PARTNER,
    PARTNER,
    SECRET,
    Platform,
    Receiver,
    launcher,
    platform,
    start_receiver,
    verify,
    wait_for,
)


@pytest.fixture
def stack():
    with ExitStack() as s:
        yield s


def test_signed_cloudevents_arrive_in_order_and_only_with_consent(platform: Platform, stack: ExitStack) -> None:
    receiver = start_receiver(stack, Receiver())
    consenting, silent = platform.register(), platform.register()
    platform.activity(consenting, 2)  # before the grant: never leaves
    platform.grant(consenting, PARTNER, ["events:subscribe"])
    platform.activity(consenting, 2)  # after the grant, before the subscription: its history
    subscription_id, secret = platform.subscribe(receiver.url, ["ActivityReported", "ConsentGranted"])
    platform.activity(consenting, 3)
    platform.activity(silent, 3)
    stream = platform.stream(consenting)
    expected = [e for e in stream if e["type"] in ("ActivityReported", "ConsentGranted")][2:]
    assert [e["type"] for e in expected] == ["ConsentGranted"] + ["ActivityReported"] * 5

    wait_for(lambda: len(receiver.delivered()) >= len(expected), what="the deliveries")
    platform.caught_up()
    time.sleep(0.3)  # nothing else should follow
    received = [verify(a, secret) for a in receiver.all()]
    assert received == expected  # each event whole, once, in stream order, nothing of the silent enterprise
    assert all(a.headers["webhook-id"] == e["event_id"] for a, e in zip(receiver.all(), expected))

    deliveries = platform.deliveries(subscription_id)
    assert [(d["event_id"], d["status"], d["attempts"], d["last_status_code"]) for d in deliveries] == [
        (e["event_id"], "delivered", 1, 200) for e in expected]
    assert all(d["enterprise_id"] == consenting and d["delivered_at"] for d in deliveries)
    # The listing pages.
    first = platform.disclosure.get(f"/v1/subscriptions/{subscription_id}/deliveries", params={"limit": 4},
                                    headers=platform.auth("partner", PARTNER)).json()
    assert len(first["deliveries"]) == 4 and first["next"] is not None


def test_failures_are_retried_then_dead_lettered_then_replayed_in_order(launcher, stack: ExitStack) -> None:
    # Delays of 0.1–0.2 s, 0.2–0.4 s, 0.4–0.8 s: far enough apart to see them grow.
    platform = launcher(webhook_backoff_base_s=0.2, webhook_backoff_max_s=2.0)
    healthy = {"up": False}
    receiver = start_receiver(stack, Receiver(lambda envelope, n: (200, 0) if healthy["up"] else (500, 0)))
    enterprise = platform.register()
    platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, secret = platform.subscribe(receiver.url, ["ActivityReported"])
    platform.activity(enterprise, 3)
    events = [e for e in platform.stream(enterprise) if e["type"] == "ActivityReported"]

    def by_event() -> dict[str, dict]:
        return {d["event_id"]: d for d in platform.deliveries(subscription_id)}

    dead = wait_for(lambda: by_event().get(events[0]["event_id"], {}).get("status") == "dead" and by_event(),
                    what="the dead letter")
    head = dead[events[0]["event_id"]]
    assert (head["attempts"], head["last_status_code"]) == (4, 500)
    assert "500" in head["last_error"]
    # The later events wait behind it: queued, never attempted.
    assert [dead[e["event_id"]]["status"] for e in events[1:]] == ["pending", "pending"]
    assert receiver.tried(events[0]["event_id"]) == 4
    assert all(receiver.tried(e["event_id"]) == 0 for e in events[1:])
    # Exponential backoff: each wait is at least half its doubling ceiling (the rest is jitter).
    times = [a.at for a in receiver.all()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap >= floor for gap, floor in zip(gaps, (0.1, 0.2, 0.4))), gaps

    healthy["up"] = True
    time.sleep(0.3)
    assert receiver.delivered() == []  # a dead letter stays dead until the partner asks again
    other = platform.disclosure.post(f"/v1/subscriptions/{subscription_id}/deliveries/{head['delivery_id']}/retry",
                                     headers=platform.auth("partner", OTHER_PARTNER))
    assert other.status_code == 403
    retried = platform.disclosure.post(f"/v1/subscriptions/{subscription_id}/deliveries/{head['delivery_id']}/retry",
                                       headers=platform.auth("partner", PARTNER))
    assert retried.status_code == 202 and retried.json()["status"] == "pending"
    wait_for(lambda: len(receiver.delivered()) == 3, what="the replayed deliveries")
    assert [e["event_id"] for e in receiver.delivered()] == [e["event_id"] for e in events]
    for attempt in receiver.all():
        verify(attempt, secret)
    # The platform marks a delivery once the partner's answer is back, a moment after the receiver saw it.
    wait_for(lambda: {d["status"] for d in platform.deliveries(subscription_id)} == {"delivered"},
             what="every delivery marked delivered")
    again = platform.disclosure.post(f"/v1/subscriptions/{subscription_id}/deliveries/{head['delivery_id']}/retry",
                                     headers=platform.auth("partner", PARTNER))
    assert again.status_code == 202  # a delivered event can be asked for again


def test_replaying_every_dead_letter(platform: Platform, stack: ExitStack) -> None:
    healthy = {"up": False}
    receiver = start_receiver(stack, Receiver(lambda envelope, n: (200, 0) if healthy["up"] else (503, 0)))
    a, b = platform.register(), platform.register()
    for enterprise in (a, b):
        platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, _ = platform.subscribe(receiver.url, ["ActivityReported"])
    platform.activity(a, 2)
    platform.activity(b, 2)
    wait_for(lambda: sum(d["status"] == "dead" for d in platform.deliveries(subscription_id)) == 2,
             what="a dead letter per enterprise")
    dead = platform.deliveries(subscription_id, status="dead")
    assert {d["enterprise_id"] for d in dead} == {a, b}
    healthy["up"] = True
    replayed = platform.disclosure.post(f"/v1/subscriptions/{subscription_id}/deliveries/replay",
                                        headers=platform.auth("partner", PARTNER))
    assert replayed.status_code == 202 and replayed.json() == {"replayed": 2}
    wait_for(lambda: len(receiver.delivered()) == 4, what="everything, after the replay")
    for enterprise in (a, b):
        versions = [e["stream_version"] for e in receiver.delivered(enterprise)]
        assert versions == sorted(versions)


def test_order_per_enterprise_holds_under_retries(platform: Platform, stack: ExitStack) -> None:
    # Every third event fails its first two attempts; the others go through at once.
    def respond(envelope: dict, n: int) -> tuple[int, float]:
        return (502, 0) if envelope["stream_version"] % 3 == 0 and n <= 2 else (200, 0)

    receiver = start_receiver(stack, Receiver(respond))
    enterprises = [platform.register() for _ in range(3)]
    for enterprise in enterprises:
        platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, secret = platform.subscribe(receiver.url, ["ActivityReported"])
    for _ in range(4):
        for enterprise in enterprises:  # interleaved, like real traffic
            platform.activity(enterprise, 2)
    wait_for(lambda: len(receiver.delivered()) == 24, timeout_s=30, what="all deliveries")
    for enterprise in enterprises:
        stream = [e for e in platform.stream(enterprise) if e["type"] == "ActivityReported"]
        assert [e["event_id"] for e in receiver.delivered(enterprise)] == [e["event_id"] for e in stream]
        # No attempt at an event before every earlier event of its enterprise was delivered.
        versions = [e["stream_version"] for e in stream]
        done: set[int] = set()
        for attempt in receiver.all():
            envelope = verify(attempt, secret)
            if envelope["enterprise_id"] != enterprise:
                continue
            version = envelope["stream_version"]
            assert {v for v in versions if v < version} <= done, (version, sorted(done))
            if 200 <= attempt.status < 300:
                done.add(version)
    # Versions 3..10 carry the activities: 3, 6 and 9 of each enterprise needed three attempts.
    retried = [d for d in platform.deliveries(subscription_id) if d["attempts"] == 3]
    assert len(retried) == 9 and all(d["status"] == "delivered" for d in retried)


def test_revocation_cancels_what_is_queued_and_stops_everything(platform: Platform, stack: ExitStack) -> None:
    healthy = {"up": False}
    receiver = start_receiver(stack, Receiver(lambda envelope, n: (200, 0) if healthy["up"] else (503, 0)))
    # Fresh settings: many attempts so deliveries stay queued while the partner is down.
    revoking, staying = platform.register(), platform.register()
    consent_id = platform.grant(revoking, PARTNER, ["events:subscribe"])
    platform.grant(staying, PARTNER, ["events:subscribe"])
    subscription_id, _ = platform.subscribe(receiver.url, ["ActivityReported"])
    platform.activity(revoking, 3)
    platform.activity(staying, 1)
    wait_for(lambda: any(d["attempts"] >= 1 for d in platform.deliveries(subscription_id, enterprise_id=revoking)),
             what="a failed first attempt")
    platform.revoke(revoking, consent_id)
    platform.caught_up()
    queued = platform.deliveries(subscription_id, enterprise_id=revoking)
    assert len(queued) == 3
    assert {(d["status"], d["cancelled_reason"]) for d in queued} == {("cancelled", "consent_revoked")}

    healthy["up"] = True
    platform.activity(revoking, 2)  # after the revocation: never queued
    platform.activity(staying, 2)
    wait_for(lambda: len(receiver.delivered(staying)) == 3, what="the other enterprise's events")
    platform.caught_up()
    time.sleep(0.5)
    assert receiver.delivered(revoking) == []
    assert len(platform.deliveries(subscription_id, enterprise_id=revoking)) == 3
    assert platform.feed(subscription_id).json()["events"] and all(
        e["source"] == f"/enterprises/{staying}" for e in platform.feed(subscription_id).json()["events"])


def test_a_slow_partner_does_not_hold_back_another(launcher, stack: ExitStack) -> None:
    platform = launcher(webhook_timeout_s=1.0, webhook_max_attempts=20, webhook_workers=2)
    slow = start_receiver(stack, Receiver(lambda envelope, n: (200, 3.0)))
    fast = start_receiver(stack, Receiver())
    enterprise = platform.register()
    platform.grant(enterprise, PARTNER, ["events:subscribe"])
    platform.grant(enterprise, OTHER_PARTNER, ["events:subscribe"])
    stuck, _ = platform.subscribe(slow.url, ["ActivityReported"])
    platform.subscribe(fast.url, ["ActivityReported"], partner=OTHER_PARTNER)
    started = time.monotonic()
    platform.activity(enterprise, 10)
    wait_for(lambda: len(fast.delivered()) == 10, timeout_s=15, what="the fast partner's deliveries")
    assert time.monotonic() - started < 10
    assert all(d["status"] == "pending" for d in platform.deliveries(stuck))
    timed_out = wait_for(lambda: [d for d in platform.deliveries(stuck) if d["last_error"]], what="a timed-out attempt")
    assert "no answer within 1 s" in timed_out[0]["last_error"]


def test_the_address_is_checked_again_before_each_delivery(launcher, stack: ExitStack) -> None:
    """A partner name that re-points at the platform's own network after subscribing (DNS rebinding)."""
    receiver = start_receiver(stack, Receiver())
    port = receiver.url.split(":")[2].split("/")[0]
    answers = iter(["93.184.215.14"])  # public when the subscription is made, loopback ever after

    def resolve(host: str, _port: int) -> list[str]:
        assert host == "partner.example.com"
        return [next(answers, "127.0.0.1")]

    platform = launcher(webhook_allow_private=False, resolve=resolve, webhook_max_attempts=2)
    enterprise = platform.register()
    platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, _ = platform.subscribe(f"https://partner.example.com:{port}/hooks/carbon", ["ActivityReported"])
    platform.activity(enterprise, 1)
    dead = wait_for(lambda: platform.deliveries(subscription_id, status="dead"), what="the refused delivery")
    assert "loopback" in dead[0]["last_error"] and dead[0]["last_status_code"] is None
    assert receiver.all() == []  # nothing was sent


def test_deleting_a_subscription_cancels_its_queue(platform: Platform, stack: ExitStack) -> None:
    receiver = start_receiver(stack, Receiver(lambda envelope, n: (503, 0)))
    enterprise = platform.register()
    platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, _ = platform.subscribe(receiver.url, ["ActivityReported"])
    platform.activity(enterprise, 2)
    wait_for(lambda: len(platform.deliveries(subscription_id)) == 2, what="the queue")
    assert platform.disclosure.delete(f"/v1/subscriptions/{subscription_id}",
                                      headers=platform.auth("partner", PARTNER)).status_code == 200
    assert {(d["status"], d["cancelled_reason"]) for d in platform.deliveries(subscription_id)} == {
        ("cancelled", "subscription_deleted")}


def test_a_replayed_projection_sends_nothing_twice(platform: Platform, stack: ExitStack, database_url: str) -> None:
    receiver = start_receiver(stack, Receiver())
    enterprise = platform.register()
    platform.grant(enterprise, PARTNER, ["events:subscribe"])
    subscription_id, _ = platform.subscribe(receiver.url, ["ActivityReported"])
    platform.activity(enterprise, 3)
    wait_for(lambda: len(receiver.delivered()) == 3, what="the deliveries")
    owner = platform.auth("enterprise", enterprise)
    before = platform.disclosure.get(f"/v1/disclosures/{enterprise}/2024", headers=owner).json()
    deliveries = platform.deliveries(subscription_id)

    # What `carbon replay disclosure` does, with the service's own projection stopped first.
    platform.app.state.projection.stop()
    projector = create_projector(database_url)
    client = AccountClient(str(platform.account.base_url), jwt_secret=SECRET, service_name="disclosure")
    try:
        assert replay(projector, client) == len(platform.log())
    finally:
        client.close()
        projector.engine.dispose()
    time.sleep(0.3)
    assert platform.deliveries(subscription_id) == deliveries
    assert len(receiver.all()) == 3
    after = platform.disclosure.get(f"/v1/disclosures/{enterprise}/2024", headers=owner).json()
    assert {k: v for k, v in after.items() if k != "generated_at"} == {k: v for k, v in before.items() if k != "generated_at"}
