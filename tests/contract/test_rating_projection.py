"""The rating projection on SQLite and PostgreSQL: exactly once, rebuildable, answering as of a moment."""

from __future__ import annotations

import gc
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from carbon.identity import Principal
from carbon import projection as carbon_projection
from carbon.projection import (
    REPLAY_GC_THRESHOLDS,
    GapDetected,
    Projector,
    RebuildInterfered,
    RebuildUnfinished,
    stream_checkpoints,
)
from contracts import Role
from contracts.envelope import format_time
from contracts.examples import CEMENT_MAKER_USCC, POWER_PLANT_USCC
from services.rating.api import ProjectionHealth
from services.rating.config import load_reference_data
from carbon.db import upsert
from services.rating import projection as rating_projection
from services.rating.projection import RatingProjection, create_projector
from services.rating.schema import rating_facts, ratings
from services.rating.service import RatingService

CEMENT, POWER = CEMENT_MAKER_USCC, POWER_PLANT_USCC
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class Log:
    """Envelopes as the account service would publish them: per-stream versions, global positions."""

    def __init__(self) -> None:
        self.positions = itertools.count(101)
        self.versions: dict[str, int] = {}
        self.clock = T0
        self.events: list[dict] = []

    def add(self, enterprise: str, event_type: str, *, same_append: bool = False, **data) -> dict:
        """An event; ``same_append``: written in the same append as the one before (same knowledge instant)."""
        self.versions[enterprise] = self.versions.get(enterprise, 0) + 1
        if not same_append:
            self.clock += timedelta(hours=1)
        envelope = {"event_id": str(uuid.uuid4()), "type": event_type, "schema_version": 1,
                    "enterprise_id": enterprise, "stream_version": self.versions[enterprise],
                    "position": next(self.positions), "recorded_at": format_time(self.clock), "data": data,
                    "metadata": {"actor": {"sub": "x", "role": "operator"}}, "prev_hash": "0" * 64, "hash": "0" * 64}
        self.events.append(envelope)
        return envelope


def story(log: Log) -> None:
    for enterprise, industry in ((CEMENT, "C3011"), (POWER, "D4411")):
        log.add(enterprise, "EnterpriseRegistered", uscc=enterprise, name="Example", industry=industry, region="510100")
    log.add(CEMENT, "ConsentGranted", consent_id=str(uuid.uuid4()), grantee="bank-a", scopes=["rating:read"],
            purpose="loan", expires_at="2099-01-01T00:00:00Z")
    log.add(CEMENT, "ActivityReported", period="2024", revenue_10k_cny="50000",
            output={"quantity": "1000000", "unit": "t"})
    log.add(POWER, "ActivityReported", period="2024", revenue_10k_cny="200000",
            output={"quantity": "5000000", "unit": "MWh"})
    log.add(CEMENT, "EmissionRecorded", calculation_id="c1", period="2024", scope=1, category="process", gas="CO2",
            tco2e="450000", factor_ref="f", methodology="m", data_quality=4)
    log.add(POWER, "EmissionRecorded", calculation_id="p1", period="2024", scope=1, category="fuel_combustion",
            gas="CO2", tco2e="3900000", factor_ref="f", methodology="m", data_quality=5)
    log.add(CEMENT, "CarbonAssetAcquired", asset="CCER", batch="b", quantity_t="100", source="issuance")
    log.add(CEMENT, "EmissionVerified", period="2024", verifier="v", verified_tco2e="440000", report_ref="VR")
    log.add(CEMENT, "CreditsRetired", asset="CCER", batch="b", quantity_t="100", period="2024", purpose="p",
            retirement_ref="r")


@pytest.fixture
def projector(database_url: str):
    projector = create_projector(database_url)
    yield projector
    projector.engine.dispose()


def snapshot(projector: Projector) -> list[tuple]:
    with projector.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(ratings).order_by(ratings.c.enterprise_id, ratings.c.seq))]


def test_create_projector_migrates_once_and_again(database_url: str, projector: Projector) -> None:
    again = create_projector(database_url)  # a second start finds the schema in place
    assert again.position() is None and again.name == "rating"
    again.engine.dispose()


def test_redelivery_has_no_second_effect(projector: Projector) -> None:
    log = Log()
    story(log)
    first = projector.handle(log.events)
    assert first.applied == len(log.events) and first.position == log.events[-1]["position"]
    before = snapshot(projector)
    again = projector.handle(log.events)
    assert (again.applied, again.skipped) == (0, len(log.events))
    projector.handle(log.events[3:6])  # a partial redelivery
    assert snapshot(projector) == before


def test_rebuilding_gives_identical_ratings_whatever_the_batches(projector: Projector) -> None:
    log = Log()
    story(log)
    projector.handle(log.events)
    before = snapshot(projector)
    assert [row[0] for row in before].count(CEMENT) >= 3
    projector.reset()
    assert snapshot(projector) == [] and projector.position() is None
    for envelope in log.events:  # one at a time this time
        projector.handle([envelope])
    assert snapshot(projector) == before
    with projector.engine.connect() as conn:
        stored = json.loads(conn.execute(select(rating_facts.c.facts).where(rating_facts.c.enterprise_id == CEMENT)).scalar_one())
    assert stored["retirements"][0][2] == "100"


def planner_row_counts(projector: Projector) -> dict[str, int]:
    """What the database's query planner believes each table of the projection holds."""
    names = [t.name for t in projector.projection.tables]
    with projector.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
                return {}
            rows = conn.exec_driver_sql("SELECT tbl, MAX(CAST(stat AS INTEGER)) FROM sqlite_stat1 GROUP BY tbl")
        else:
            rows = conn.exec_driver_sql("SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r'")
        return {name: count for name, count in rows if name in names and count > 0}


def test_analyze_gives_the_planner_the_rebuilt_tables(projector: Projector) -> None:
    log = Log()
    story(log)
    projector.handle(log.events)
    assert "ratings" not in planner_row_counts(projector)  # as after a rebuild: never looked at
    projector.analyze()
    counts = planner_row_counts(projector)
    assert counts["ratings"] == len(snapshot(projector)) and counts["rating_facts"] == 2


def test_a_long_historys_facts_are_stored_whole_in_their_row(projector: Projector) -> None:
    log = Log()
    story(log)
    for n in range(60):  # fifteen years of quarterly lines: a facts document of several kilobytes
        log.add(CEMENT, "EmissionRecorded", calculation_id=f"q{n}", period=f"{2010 + n // 4}-Q{n % 4 + 1}", scope=1,
                category="process", gas="CO2", tco2e="1000.5", factor_ref="f", methodology="m", data_quality=3)
    projector.handle(log.events)
    with projector.engine.connect() as conn:
        document = conn.execute(select(rating_facts.c.facts).where(rating_facts.c.enterprise_id == CEMENT)).scalar_one()
        assert len(document) > 4000 and len(json.loads(document)["lines"]) == 61
        if conn.dialect.name == "postgresql":
            # Neither compressed nor moved out of line: rewriting it costs no compression and no TOAST chunks.
            assert conn.exec_driver_sql("SELECT pg_column_size(facts) FROM rating_facts WHERE enterprise_id = %s",
                                        (CEMENT,)).scalar_one() >= len(document)
            assert conn.exec_driver_sql("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                                        "WHERE relname = 'rating_facts'").scalar_one() == 0


def test_only_rating_changes_enter_the_history_with_their_knowledge_time(projector: Projector) -> None:
    log = Log()
    story(log)
    projector.handle(log.events)
    rows = [r for r in snapshot(projector) if r[0] == CEMENT]
    by_position = {e["position"]: e for e in log.events}
    for row in rows:
        envelope = by_position[row[3]]
        assert envelope["enterprise_id"] == CEMENT
        assert format_time(row[2]) == envelope["recorded_at"]
    causes = [by_position[row[3]]["type"] for row in rows]
    # The consent and the asset acquisition change no rating, so they leave no row.
    assert "ConsentGranted" not in causes and "CarbonAssetAcquired" not in causes
    assert causes[-2:] == ["EmissionVerified", "CreditsRetired"]


def appends_story(log: Log) -> None:
    """Appends of several events, one of which changes the rating only half way through."""
    story(log)
    line = dict(gas="CO2", factor_ref="f", methodology="m", data_quality=3)
    log.add(POWER, "ActivityReported", period="2023", revenue_10k_cny="180000",
            output={"quantity": "4500000", "unit": "MWh"})
    log.add(POWER, "EmissionRecorded", same_append=True, calculation_id="p0", period="2023", scope=1,
            category="fuel_combustion", tco2e="3600000", **line)
    log.add(POWER, "EmissionRecorded", same_append=True, calculation_id="p0b", period="2023", scope=2,
            category="purchased_electricity", tco2e="20000", **line)
    extra = log.add(POWER, "EmissionRecorded", calculation_id="p2", period="2024", scope=2,
                    category="purchased_electricity", tco2e="10000", **line)
    # Withdrawn in the same append: the instant ends where it began, so it leaves no row.
    log.add(POWER, "EmissionRecorded", same_append=True, calculation_id="p3", period="2024", scope=2,
            category="purchased_electricity", tco2e="0", supersedes=extra["event_id"], **line)
    log.add(CEMENT, "CarbonAssetAcquired", asset="CCER", batch="c", quantity_t="50", source="issuance")
    log.add(CEMENT, "CreditsRetired", same_append=True, asset="CCER", batch="c", quantity_t="50", period="2024",
            purpose="p", retirement_ref="r2")


def test_a_rating_speaks_for_an_instant_however_batches_cut_the_appends(projector: Projector) -> None:
    log = Log()
    appends_story(log)
    projector.handle(log.events)
    whole = snapshot(projector)
    # One row per instant at which the rating changed, stamped with the instant's last rating event.
    instants = [(r[0], r[2]) for r in whole]
    assert len(instants) == len(set(instants))
    last_of_instant = {}
    for e in log.events:
        if e["type"] not in ("ConsentGranted", "CarbonAssetAcquired"):
            last_of_instant[(e["enterprise_id"], e["recorded_at"])] = e["position"]
    assert all(r[3] == last_of_instant[(r[0], format_time(r[2]))] for r in whole)
    withdrawn = next(e for e in log.events if e["data"].get("calculation_id") == "p3")
    assert withdrawn["recorded_at"] not in {format_time(r[2]) for r in whole}
    for size in (1, 2, 3, 5):
        projector.reset()
        for start in range(0, len(log.events), size):
            projector.handle(log.events[start:start + size])
        assert snapshot(projector) == whole, f"batches of {size}"
    for cut in range(1, len(log.events)):  # every place a batch boundary can fall
        projector.reset()
        projector.handle(log.events[:cut])
        projector.handle(log.events[cut:])
        assert snapshot(projector) == whole, f"cut after event {cut}"


def test_two_projectors_taking_turns_on_one_database_agree_with_one(database_url: str, projector: Projector) -> None:
    log = Log()
    appends_story(log)
    projector.handle(log.events)
    whole = snapshot(projector)
    projector.reset()
    other = create_projector(database_url)  # another process: its memory knows nothing of the first's batches
    try:
        for turn, start in enumerate(range(0, len(log.events), 2)):
            (projector if turn % 2 == 0 else other).handle(log.events[start:start + 2])
        assert snapshot(projector) == whole
    finally:
        other.engine.dispose()


def test_a_failed_batch_leaves_nothing_behind_in_memory_either(projector: Projector) -> None:
    log = Log()
    appends_story(log)
    projector.handle(log.events)
    whole = snapshot(projector)
    projector.reset()
    projector.handle(log.events[:4])
    # The cement's last event without the one before it: a gap, found after five events were applied.
    assert log.events[-1]["stream_version"] == log.events[-2]["stream_version"] + 1
    with pytest.raises(GapDetected):
        projector.handle([*log.events[4:9], log.events[-1]])
    projector.handle(log.events[4:])
    assert snapshot(projector) == whole


class ListSource:
    """The log handed over ``size`` events at a time, as a rebuild's source; counts acknowledgements."""

    def __init__(self, events: list[dict], size: int) -> None:
        self.events, self.size, self.next, self.acknowledged = events, size, 0, 0

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        batch = self.events[self.next:self.next + min(self.size, max_events)]
        self.next += len(batch)
        return batch

    def acknowledge(self) -> None:
        self.acknowledged += 1

    def redeliver(self, position: int | None) -> None:
        raise AssertionError("a rebuild is never rewound")

    def close(self) -> None:
        pass


def stored_state(projector: Projector) -> tuple[list[tuple], list[tuple], list[tuple], int | None]:
    """The rating rows, the facts documents, the projected consents and the head."""
    with projector.engine.connect() as conn:
        facts = [tuple(r) for r in conn.execute(select(rating_facts).order_by(rating_facts.c.enterprise_id))]
        consents = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM consents ORDER BY consent_id")]
    return snapshot(projector), facts, consents, projector.position()


def test_a_rebuild_with_writes_behind_stores_what_batch_by_batch_does(database_url: str, projector: Projector) -> None:
    assert projector.projection.writes_behind
    log = Log()
    appends_story(log)
    projector.handle(log.events)
    whole = stored_state(projector)
    for cached in (1, 20_000):  # one enterprise in memory: the other is read back while its batch is in flight
        for size in (1, 2, 3, 5, 100):
            rebuilt = Projector(RatingProjection(load_reference_data().benchmarks, cached_enterprises=cached),
                                projector.engine)
            source, progress, thresholds = ListSource(log.events, size), [], set()
            assert rebuilt.rebuild(source, batch_size=size, progress=lambda result: (
                progress.append(result), thresholds.add(gc.get_threshold()))) == len(log.events)
            assert thresholds == {REPLAY_GC_THRESHOLDS}  # the collector runs less often meanwhile
            assert stored_state(rebuilt) == whole, f"batches of {size}, {cached} cached"
            assert source.acknowledged == len(progress) == -(-len(log.events) // size)
            assert progress[-1].position == log.events[-1]["position"]


def checkpoint_rows(projector: Projector) -> list[tuple]:
    with projector.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(stream_checkpoints.c.stream_id, stream_checkpoints.c.version)
                                               .order_by(stream_checkpoints.c.stream_id))]


def facts_rows(projector: Projector) -> int:
    with projector.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(rating_facts)).scalar_one()


def test_a_rebuild_writes_each_enterprises_facts_once_at_its_end_unless_they_leave_memory(projector: Projector) -> None:
    log = Log()
    appends_story(log)
    seen = []
    projector.rebuild(ListSource(log.events, 3), batch_size=3, progress=lambda _: seen.append(facts_rows(projector)))
    assert len(seen) > 3 and set(seen) == {0}  # not rewritten batch after batch as the history grows
    assert facts_rows(projector) == 2
    small = Projector(RatingProjection(load_reference_data().benchmarks, cached_enterprises=1), projector.engine)
    seen.clear()
    small.rebuild(ListSource(log.events, 3), batch_size=3, progress=lambda _: seen.append(facts_rows(small)))
    assert max(seen) >= 1  # the enterprise that left memory had its facts written, to be read back


def test_a_failed_write_behind_ends_the_rebuild_with_its_error(projector: Projector, monkeypatch) -> None:
    log = Log()
    appends_story(log)
    writes = []

    def failing_upsert(conn, table, rows, keys):  # the third batch's checkpoints cannot be written
        writes.append(table.name)
        if writes.count("projection_stream_checkpoints") == 3:
            raise RuntimeError("disk full")
        return upsert(conn, table, rows, keys)

    monkeypatch.setattr(carbon_projection, "upsert", failing_upsert)
    source = ListSource(log.events, 2)
    with pytest.raises(RuntimeError, match="disk full"):
        projector.rebuild(source, batch_size=2)
    assert projector.projection._known == {}  # memory ran ahead of the database: forgotten
    assert source.acknowledged == 2
    assert writes.count("projection_stream_checkpoints") == 3  # nothing was written after the failure
    # The facts were kept in memory for the rest of the rebuild, and the head says it did not finish:
    # nothing follows the log into this read model, and nobody takes it for a whole one.
    assert facts_rows(projector) == 0
    with pytest.raises(RebuildUnfinished, match="run `carbon replay rating`"):
        projector.position()
    with pytest.raises(RebuildUnfinished):
        create_projector(str(projector.engine.url.render_as_string(hide_password=False))).handle(log.events[:4])
    monkeypatch.undo()
    projector.rebuild(ListSource(log.events, 2), batch_size=2)  # run again from the start, it completes
    assert projector.position() == log.events[-1]["position"]
    projector_again = create_projector(str(projector.engine.url.render_as_string(hide_password=False)))
    try:
        projector_again.handle(log.events)
        assert snapshot(projector) == snapshot(projector_again)
    finally:
        projector_again.engine.dispose()


def test_a_second_writer_during_a_rebuild_is_refused(database_url: str, projector: Projector) -> None:
    log = Log()
    story(log)
    other = create_projector(database_url)  # the owning service, left running by mistake
    refused = []

    def after_each_commit(result) -> None:
        if not refused:  # the next batch is applied in memory, not yet written: the service tries to go ahead
            with pytest.raises(RebuildUnfinished):
                other.handle(log.events[:8])
            refused.append(result)

    try:
        assert projector.rebuild(ListSource(log.events, 2), batch_size=2, progress=after_each_commit) == len(log.events)
    finally:
        other.engine.dispose()
    assert refused and projector.position() == log.events[-1]["position"]


def test_a_writer_that_ignores_the_rebuild_fails_it_loudly(database_url: str, projector: Projector) -> None:
    log = Log()
    story(log)
    committed = []

    def after_each_commit(result) -> None:
        committed.append(result)
        if len(committed) == 2:  # a writer that does not know the rebuild marker moves a stream on
            with projector.engine.begin() as conn:
                upsert(conn, stream_checkpoints, [{"projection": "rating", "stream_id": CEMENT, "version": 7,
                                                   "position": log.events[7]["position"]}], ["projection", "stream_id"])

    with pytest.raises(RebuildInterfered, match="another writer"):
        projector.rebuild(ListSource(log.events, 2), batch_size=2, progress=after_each_commit)
    assert len(committed) == 2 and projector.projection._known == {}


def test_a_gap_ends_a_rebuild_once_the_batch_in_flight_is_written(projector: Projector) -> None:
    log = Log()
    story(log)
    assert (log.events[6]["enterprise_id"], log.events[6]["stream_version"]) == (POWER, 3)
    source = ListSource([*log.events[:4], log.events[6]], 2)  # the power plant's second event is missing
    with pytest.raises(GapDetected):
        projector.rebuild(source, batch_size=2)
    assert checkpoint_rows(projector) == [(CEMENT, 3), (POWER, 1)] and projector.projection._known == {}
    with pytest.raises(RebuildUnfinished):
        projector.position()


def test_a_gap_is_refused(projector: Projector) -> None:
    log = Log()
    story(log)
    with pytest.raises(GapDetected):
        projector.handle([log.events[0], log.events[4]])  # cement version 1, then version 3
    assert snapshot(projector) == []


def test_as_of_answers_from_what_was_recorded_then_and_a_correction_never_rewrites_it(projector: Projector) -> None:
    log = Log()
    story(log)
    projector.handle(log.events)
    service = RatingService(projector.engine, load_reference_data(), clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    owner = Principal(CEMENT, Role.ENTERPRISE)
    verification = next(e for e in log.events if e["type"] == "EmissionVerified")
    just_before = datetime.fromisoformat(verification["recorded_at"]) - timedelta(seconds=1)

    def read(as_of: datetime | None = None) -> dict:
        answer = json.loads(service.rating(owner, CEMENT, as_of))
        return {k: v for k, v in answer.items() if k not in ("decision_id", "as_of")}

    before, after = read(just_before), read()
    assert (before["score"], after["score"]) == (50, 57) and before["position"] < after["position"]
    quality = {f["name"]: f for f in after["factors"]}["data_quality"]
    assert quality["value"] == "1"

    moment = log.clock + timedelta(minutes=30)
    line = next(e for e in log.events if e["type"] == "EmissionRecorded" and e["enterprise_id"] == CEMENT)
    projector.handle([log.add(CEMENT, "EmissionRecorded", calculation_id="c2", period="2024", scope=1,
                              category="process", gas="CO2", tco2e="470000", factor_ref="f", methodology="m",
                              data_quality=4, supersedes=line["event_id"])])
    assert read(moment) == after  # the past answer stands
    corrected = {f["name"]: f for f in read()["factors"]}
    assert corrected["data_quality"]["detail"]["stale_verification"] is True
    assert corrected["carbon_efficiency"]["value"] == "0.470000"
    # Before the account existed, and a future as_of (answers as of now).
    assert read(T0)["missing"] == [{"code": "account", "detail": "the account had not been opened by then"}]
    assert read(datetime(2999, 1, 1, tzinfo=UTC)) == read()


def test_readiness_fails_only_when_the_projection_keeps_failing() -> None:
    class Fake:
        last_error: BaseException | None = None

    now = [0.0]
    fake = Fake()
    health = ProjectionHealth(fake, 30, monotonic=lambda: now[0])  # type: ignore[arg-type]
    health.check()
    fake.last_error = RuntimeError("account unreachable")
    health.check()
    now[0] = 29
    health.check()
    now[0] = 31
    with pytest.raises(RuntimeError, match="keeps failing"):
        health.check()
    fake.last_error = None
    health.check()  # recovered
    fake.last_error = RuntimeError("again")
    health.check()  # a new streak starts its own clock
