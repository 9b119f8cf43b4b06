"""A rebuild runs the cyclic garbage collector less often, and gives the thresholds back after."""

import gc

import pytest

from carbon.projection import REPLAY_GC_THRESHOLDS, fewer_collections


def test_the_thresholds_are_raised_for_the_duration_and_restored() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == REPLAY_GC_THRESHOLDS
        assert REPLAY_GC_THRESHOLDS[0] > before[0]
    assert gc.get_threshold() == before


def test_they_are_restored_when_the_rebuild_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections((5000, 10, 10)):
        raise RuntimeError("the log went away")
    assert gc.get_threshold() == before


def test_cycles_are_still_collected_meanwhile() -> None:
    class Node:
        def __init__(self) -> None:
            self.other = self

    with fewer_collections():
        gc.collect()
        tracked = len(gc.get_objects())
        for _ in range(300_000):  # three times the youngest generation's threshold, all cyclic garbage
            Node()
        assert len(gc.get_objects()) < tracked + REPLAY_GC_THRESHOLDS[0] + 1000
