"""How many processes rebuild a projection when the operator does not say (``carbon replay``)."""

from __future__ import annotations

import pytest

from carbon.projection import Projection, Projector
from carbon.projection_runtime import MAX_AUTO_PARTITIONS, default_partitions


class PerStream(Projection):
    partitionable = True
    writes_behind = True


class Shared(Projection):
    writes_behind = True  # but its read model mixes streams: never cut


PG = "postgresql+psycopg://carbon:secret@127.0.0.1:5432/rating"


def projector(projection: Projection) -> Projector:
    return Projector(projection, engine=None)  # type: ignore[arg-type] - only the projection is read


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (4, 4), (16, MAX_AUTO_PARTITIONS), (None, 1)])
def test_one_process_per_core_up_to_a_few_on_postgresql(monkeypatch, cores: int | None, expected: int) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_partitions(projector(PerStream()), PG) == expected


def test_one_process_on_sqlite_or_for_a_projection_that_cannot_be_cut(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_partitions(projector(PerStream()), "sqlite:///var/rating.db") == 1
    assert default_partitions(projector(Shared()), PG) == 1
    assert default_partitions(projector(Projection()), PG) == 1


def test_the_rating_projection_can_be_cut_and_the_disclosure_projection_cannot() -> None:
    from services.disclosure.projection import DisclosureProjection
    from services.rating.projection import RatingProjection

    assert RatingProjection.partitionable and RatingProjection.writes_behind
    assert not DisclosureProjection.partitionable
