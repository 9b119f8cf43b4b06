"""Webhook messages verify with the Standard Webhooks package and parse with the CloudEvents SDK."""

from __future__ import annotations

import base64
import random

import pytest
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.disclosure import webhooks

ENVELOPE = {
    "event_id": "6f1c1c62-2b8f-4b1d-9d3e-0a1b2c3d4e5f", "type": "EmissionVerified", "schema_version": 1,
    "enterprise_id": "91510100MA6CN3011R", "stream_version": 7, "position": 42,
    "recorded_at": "2025-03-01T08:00:00.000000Z",
    "data": {"period": "2024", "verifier": "verifier-cq", "verified_tco2e": "810500.75", "report_ref": "VR-1"},
    "metadata": {"actor": {"sub": "verifier-cq", "role": "verifier"}, "idempotency_key": None,
                 "traceparent": None, "causation_id": None, "correlation_id": None},
    "prev_hash": "a" * 64, "hash": "b" * 64,
}


def test_secret_has_the_standard_form() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert webhooks.new_secret() != secret


def test_message_verifies_and_carries_the_envelope() -> None:
    secret = webhooks.new_secret()
    body, headers = webhooks.message(ENVELOPE, secret)
    Webhook(secret).verify(body, headers)
    assert headers["webhook-id"] == ENVELOPE["event_id"]
    assert headers["webhook-signature"].startswith("v1,")
    event = JSONFormat().read(None, body)
    assert event.get_id() == ENVELOPE["event_id"]
    assert event.get_type() == "EmissionVerified"
    assert event.get_source() == "/enterprises/91510100MA6CN3011R"
    assert event.get_data() == ENVELOPE


def test_a_tampered_body_or_another_secret_fails() -> None:
    secret = webhooks.new_secret()
    body, headers = webhooks.message(ENVELOPE, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"810500.75", b"810500.76"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [webhooks.backoff_s(attempts, 2.0, 60.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # spread, not one value
