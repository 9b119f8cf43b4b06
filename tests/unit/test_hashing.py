"""The hash chain's canonical JSON is RFC 8785, whichever serialiser produced it."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon.eventstore.hashing import canonical_json, event_hash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(json_values)
def test_canonical_json_equals_the_reference_implementation(value) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(min_value=2**53, max_value=2**60))
def test_values_outside_the_fast_path_still_canonicalise(number, big) -> None:
    assert canonical_json({"x": number}) == rfc8785.dumps({"x": number})
    assert canonical_json({"é": 1}) == rfc8785.dumps({"é": 1})


def test_hash_ignores_position_and_hash_but_covers_everything_else() -> None:
    envelope = {"event_id": "e", "type": "T", "data": {"a": "1"}, "metadata": {}, "prev_hash": "0" * 64}
    base = event_hash(envelope)
    assert event_hash({**envelope, "position": 9, "hash": "x"}) == base
    assert event_hash({**envelope, "data": {"a": "2"}}) != base
    assert event_hash({**envelope, "prev_hash": "1" * 64}) != base
