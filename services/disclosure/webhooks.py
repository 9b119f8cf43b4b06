"""Webhook messages per Standard Webhooks: secrets, signed headers, and the retry schedule."""

from __future__ import annotations

import base64
import random
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from carbon import cloudevents

SECRET_BYTES = 32
USER_AGENT = "carbon-disclosure/1"


def new_secret() -> str:
    """A signing secret in Standard Webhooks form: ``whsec_`` + base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def message(envelope: dict, secret: str, now: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    """The body (a structured CloudEvent carrying the envelope) and the signed headers of one attempt.

    ``webhook-id`` is the event id: the same on every retry and replay, so the partner can de-duplicate.
    """
    body = cloudevents.encode(envelope)
    moment = now or datetime.now(UTC)
    msg_id = envelope["event_id"]
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=body.decode("utf-8"))
    headers = {
        "content-type": cloudevents.CONTENT_TYPE,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "user-agent": USER_AGENT,
    }
    return body, headers


def backoff_s(attempts: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds before the next try after ``attempts`` failures: exponential, capped, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so retries of many deliveries that
    failed together spread out, yet the schedule still grows.
    """
    ceiling = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
