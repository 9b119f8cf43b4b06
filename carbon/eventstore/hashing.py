"""The per-stream SHA-256 hash chain.

An event's ``hash`` is SHA-256 over the RFC 8785 canonical JSON of its envelope without
``position`` and ``hash`` (so it covers ``prev_hash``, the data, the metadata and the time it was
recorded). Anyone holding the envelopes can recompute the chain without trusting the platform.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from contracts.envelope import GENESIS_HASH, format_time

__all__ = ["GENESIS_HASH", "event_hash", "format_time", "request_fingerprint"]


def event_hash(envelope: dict[str, Any]) -> str:
    body = {k: v for k, v in envelope.items() if k not in ("position", "hash")}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def request_fingerprint(payload: Any) -> str:
    """Fingerprint of a request body, to tell a true retry from a reused idempotency key."""
    return hashlib.sha256(rfc8785.dumps(payload)).hexdigest()
