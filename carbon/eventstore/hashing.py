"""The per-stream SHA-256 hash chain.

An event's ``hash`` is SHA-256 over the RFC 8785 canonical JSON of its envelope without
``position`` and ``hash`` (so it covers ``prev_hash``, the data, the metadata and the time it was
recorded). Anyone holding the envelopes can recompute the chain without trusting the platform.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785

from contracts.envelope import GENESIS_HASH, format_time

__all__ = ["GENESIS_HASH", "canonical_json", "event_hash", "format_time", "request_fingerprint", "unhashable"]


_SAFE_INT = 2**53


def _orjson_is_canonical(value: Any) -> bool:
    """True when orjson with sorted keys writes exactly RFC 8785's bytes for ``value``.

    That holds for JSON without floats, with integers a double represents exactly and ASCII keys
    (sorting by UTF-16 code units then equals orjson's order). The platform's events are such JSON
    (decimals travel as strings); anything else takes the reference implementation.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str) or not key.isascii():
                    return False
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not -_SAFE_INT < item < _SAFE_INT:
                return False
        else:
            return False
    return True


MAX_DEPTH = 32


def unhashable(value: Any) -> str | None:
    """Why ``value`` (parsed JSON) cannot be fingerprinted, or None: RFC 8785 writes integers only within
    I-JSON's ±(2**53 - 1), and nesting is bounded well below the serialisers' recursion limits."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((inner, f"{where}.{key}" if where else str(key), depth + 1) for key, inner in item.items())
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]", depth + 1) for i, inner in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and not -_SAFE_INT < item < _SAFE_INT:
            return f"{where + ': ' if where else ''}integers must lie within ±{_SAFE_INT - 1}"
    return None


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of ``value``."""
    if _orjson_is_canonical(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return rfc8785.dumps(value)


def event_hash(envelope: dict[str, Any]) -> str:
    body = {k: v for k, v in envelope.items() if k not in ("position", "hash")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def request_fingerprint(payload: Any) -> str:
    """Fingerprint of a request body, to tell a true retry from a reused idempotency key."""
    return hashlib.sha256(canonical_json(payload)).hexdigest()
