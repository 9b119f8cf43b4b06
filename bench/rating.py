"""The rating service: reads under an open-loop load, and how fast its projection is rebuilt.

One account database on PostgreSQL is filled through the store with the histories of a few hundred
enterprises (registered, consent to a bank, quarterly activity and scope 1 and 2 emissions, yearly
verifications), then:
  (1) replay: the rating projection rebuilt from that log, directly (pages of ``EventStore.read_all_envelopes``
      into ``Projector.rebuild``: the projection's own speed) and as ``carbon replay rating`` does it
      (``carbon.projection_runtime.replay`` through the account service's ``GET /v1/events``); the
      peer is the tests' tally projection replayed directly (the same loop and checkpoints, almost
      no read model), the ceiling of any projection here;
  (2) reads: a rating service (uvicorn, one process) on the replayed database, PostgreSQL and a
      SQLite copy, serving ``GET /v1/ratings/{id}`` to a bank with consent at a fixed rate; the peer
      is the same service's ``/healthz`` at the same rate (the HTTP stack alone).
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import func, select

from bench.common import (
    BUSY_CORES,
    CpuProbe,
    busy_elsewhere,
    checkpoint,
    cleanest,
    console,
    database_from_template,
    database_name,
    figure,
    fresh_database,
    machine,
    markdown_table,
    percentile,
    postmaster_pid,
    progress_bar,
    rich_verdict,
    server_facts,
    server_url,
    service,
    settle_server,
    source_revision,
    utc_now,
    verdict,
    warn_if_suspect,
    write_section,
)
from carbon.eventstore import MAX_LOG_PAGE
from carbon.projection_runtime import REPLAY_BATCH_EVENTS, default_partitions

NAME = "rating"
READ_P99_MS = 20.0
REPLAY_RATE = 50_000.0
BANK = "bench-bank"


@dataclass(frozen=True)
class Plan:
    enterprises: int = 12_500
    events_each: int = 80  # 12,500 × 80: the log of 1,000,000 events the target speaks of
    rate: float = 500.0  # requests/s
    warmup: float = 2.0
    duration: float = 10.0
    profile_events: int = 30_000
    peer_events: int = 100_000  # the tally peer replays this much of the log (its rate does not depend on length)


FULL = Plan()
QUICK = Plan(enterprises=30, events_each=20, rate=100.0, warmup=0.5, duration=2.0, profile_events=300, peer_events=600)
CONNECTIONS = 64  # the load generator's keep-alive connections: more than are ever busy at once

METADATA = {"actor": {"sub": "bench", "role": "operator"}}


# ---- the account's histories ----------------------------------------------------------------------


def enterprise_id(n: int) -> str:
    from contracts.types import uscc_check_character

    first17 = f"91510100MB{n:07d}"
    return first17 + uscc_check_character(first17)


def history(n: int, length: int) -> list[list]:
    """An enterprise's stream, as the appends that write it (events of one append share a knowledge instant).

    Registration with a consent to the bank; then quarter after quarter a report: the activity and the
    five lines of the quarter's calculation (process, coal, gas and diesel in scope 1, electricity in
    scope 2), as the accounting service records one; after each fourth quarter the verifier's
    EmissionVerified of the year, appended on its own.
    """
    from carbon.eventstore import NewEvent

    e = enterprise_id(n)
    industry, unit = ("C3011", "t") if n % 2 else ("D4411", "MWh")
    appends = [[
        NewEvent("EnterpriseRegistered", {"uscc": e, "name": f"Bench Enterprise {n}", "industry": industry,
                                          "region": "510100"}, METADATA),
        NewEvent("ConsentGranted", {"consent_id": str(uuid.uuid5(uuid.NAMESPACE_URL, e)), "grantee": BANK,
                                    "scopes": ["rating:read", "pricing:read"], "purpose": "sustainability-linked loan",
                                    "expires_at": "2099-01-01T00:00:00Z"}, METADATA),
    ]]
    k, count = 0, 2
    while count < length:
        year, quarter = 2022 + k // 4, k % 4 + 1  # the benchmarks start in 2022
        period, seed = f"{year}-Q{quarter}", n * 31 + k

        def line(i: int, scope: int, category: str, tco2e: int, quality: int, ref: str) -> Any:
            return NewEvent("EmissionRecorded", {
                "calculation_id": f"calc-{k}-{i}", "period": period, "scope": scope, "category": category,
                "gas": "CO2", "tco2e": str(tco2e), "factor_ref": ref, "methodology": "GB/T 32150-2015",
                "data_quality": quality}, METADATA)

        appends.append([
            NewEvent("ActivityReported", {"period": period, "revenue_10k_cny": str(8000 + seed % 5000),
                                          "output": {"quantity": str(200000 + seed % 90000), "unit": unit}}, METADATA),
            line(1, 1, "process", 20000 + seed * 7919 % 15000, 3, "GB/T 32151.8-2015"),
            line(2, 1, "fuel_combustion", 8000 + seed * 104729 % 4000, 4, "GB/T 32150-2015 Appendix A: raw coal"),
            line(3, 1, "fuel_combustion", 1500 + seed * 613 % 900, 4, "GB/T 32150-2015 Appendix A: natural gas"),
            line(4, 1, "fuel_combustion", 200 + seed * 97 % 150, 3, "GB/T 32150-2015 Appendix A: diesel"),
            line(5, 2, "purchased_electricity", 5000 + seed * 31 % 3000, 2, "MEE 2022 grid"),
        ])
        if quarter == 4:
            appends.append([NewEvent("EmissionVerified", {"period": str(year), "verifier": "bench-verifier",
                                                          "verified_tco2e": str(150000 + seed % 40000),
                                                          "report_ref": f"VR-{year}-{n}"}, METADATA)])
        count += len(appends[-1]) + (len(appends[-2]) if quarter == 4 else 0)
        k += 1
    cut, kept = length, []
    for group in appends:  # exactly ``length`` events
        if cut <= 0:
            break
        kept.append(group[:cut])
        cut -= len(group)
    return kept


HISTORY_VERSION = 2  # change when ``history`` changes: the kept log is rebuilt
FILL_THREADS = 4


def fill(account_url: str, plan: Plan) -> float:
    """Append the histories quarter by quarter across all enterprises, as a year of reporting goes.

    Returns the rate the log was written at (events/s). Several writer threads, each with its share of
    the enterprises, so commits overlap."""
    from carbon.db import make_engine
    from carbon.eventstore import EventStore, migrate

    engine = make_engine(account_url)
    try:
        migrate(engine)
        store = EventStore(engine)
        histories = [(enterprise_id(n), history(n, plan.events_each)) for n in range(plan.enterprises)]
        rounds = max(len(h) for _, h in histories)
        began = time.perf_counter()
        with progress_bar("writing the account log", plan.enterprises * plan.events_each) as advance:
            def write(share: list[tuple[str, list]]) -> None:
                for step in range(rounds):
                    for stream_id, appends in share:
                        if step < len(appends):
                            store.append_events(stream_id, appends[step])
                            advance(len(appends[step]))

            with ThreadPoolExecutor(FILL_THREADS) as pool:
                for done in [pool.submit(write, histories[i::FILL_THREADS]) for i in range(FILL_THREADS)]:
                    done.result()
        seconds = time.perf_counter() - began
    finally:
        engine.dispose()
    return plan.enterprises * plan.events_each / seconds


# ---- (1) replay ---------------------------------------------------------------------------------


@dataclass
class Replay:
    label: str
    events: int
    seconds: float
    cpu: dict[str, float]
    runs: int = 1

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def rating_projector(url: str):
    from services.rating.projection import create_projector

    return create_projector(url)


def tally_projector(url: str):
    from carbon.db import make_engine
    from carbon.projection import Projector
    from tests.support.tally import TallyProjection, create_schema

    engine = make_engine(url)
    create_schema(engine)
    return Projector(TallyProjection(), engine)


def replay_direct(account_url: str, projector, probe: CpuProbe, label: str, limit: int | None = None) -> Replay:
    """The global log read in this process, rebuilt in batches as ``carbon replay`` rebuilds it."""
    from carbon.db import make_engine
    from carbon.eventstore import EventStore
    from carbon.subscriptions import StoreLogSource

    source = StoreLogSource(EventStore(make_engine(account_url)), limit=limit)
    try:
        before, began = probe.sample(), time.perf_counter()
        applied = projector.rebuild(source, batch_size=REPLAY_BATCH_EVENTS)
        projector.analyze()  # as ``carbon replay`` ends
        seconds = time.perf_counter() - began
        cpu = CpuProbe.cores(before, probe.sample(), seconds)
    finally:
        source.close()
    return Replay(label, applied, seconds, cpu)


def replay_direct_in_partitions(account_url: str, projection_url: str, projector, probe: CpuProbe, label: str,
                                partitions: int) -> Replay:
    """The global log cut into ``partitions``, each read and rebuilt in a process of its own."""
    from carbon.subscriptions import store_log_source

    before, began = probe.sample(), time.perf_counter()
    applied = projector.rebuild_in_partitions(partial(rating_projector, projection_url), partial(store_log_source, account_url),
                                              partitions, batch_size=REPLAY_BATCH_EVENTS)
    projector.analyze()
    seconds = time.perf_counter() - began
    return Replay(label, applied, seconds, CpuProbe.cores(before, probe.sample(), seconds))


def replay_http(account, secret: str, projection_url: str, projector, probe: CpuProbe, partitions: int) -> Replay:
    from carbon.account_client import AccountClient
    from carbon.projection_runtime import replay_in_partitions

    client = partial(AccountClient, account.url, jwt_secret=secret, service_name="rating")  # each process its own
    before, began = probe.sample(), time.perf_counter()
    applied = replay_in_partitions(projector, partial(rating_projector, projection_url), client, partitions)
    seconds = time.perf_counter() - began
    return Replay(http_label(partitions), applied, seconds, CpuProbe.cores(before, probe.sample(), seconds))


def direct_label(partitions: int) -> str:
    if partitions == 1:
        return "rating, direct, one process (store → Projector.rebuild)"
    return f"rating, direct, {partitions} processes (store → Projector.rebuild_in_partitions)"


def http_label(partitions: int) -> str:
    return f"rating, through GET /v1/events, {partitions} process{'es' if partitions > 1 else ''} (carbon replay)"


def ratings_of(projector) -> list[tuple]:
    from services.rating.schema import ratings

    with projector.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(ratings.c.enterprise_id, ratings.c.seq, ratings.c.position, ratings.c.grade, ratings.c.score,
                   ratings.c.body).order_by(ratings.c.enterprise_id, ratings.c.seq))]


def rated_enterprises(projector) -> int:
    from services.rating.schema import ratings

    latest = (select(ratings.c.enterprise_id, func.max(ratings.c.seq).label("seq"))
              .group_by(ratings.c.enterprise_id).subquery())
    with projector.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(ratings.join(
                latest, (ratings.c.enterprise_id == latest.c.enterprise_id) & (ratings.c.seq == latest.c.seq)))
            .where(ratings.c.status == "rated")
        ).scalar_one()


# ---- profiling the slowest path -----------------------------------------------------------------------


def profile_replay(account_url: str, projection_url: str, events: int) -> list[tuple[str, float]] | None:
    """Where a direct replay of the rating projection spends its time: self time by function, grouped."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        console.print("[dim]pyinstrument is not installed (the bench extra): no profile[/dim]")
        return None
    projector = rating_projector(projection_url)
    profiler = Profiler(interval=0.0005)
    try:
        profiler.start()
        replay_direct(account_url, projector, CpuProbe(), "profile", limit=events)
        profiler.stop()
    finally:
        projector.engine.dispose()
    totals: dict[str, float] = {}

    def walk(frame, inherited: str) -> None:
        # "[self]" frames have no file: their time is their parent's own.
        key = f"{frame.file_path}:{frame.function}" if frame.file_path else inherited
        own = frame.time - sum(child.time for child in frame.children)
        area = _area(key)
        totals[area] = totals.get(area, 0.0) + max(0.0, own)
        for child in frame.children:
            walk(child, key)

    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return None
    walk(root, "")
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


# (pattern on "path:function", area), first match wins; what is left is "other Python".
_AREAS = [
    (r"psycopg.*:(wait|_wait|.*_wait_.*)|:wait_c$|selectors|_sock|poll", "waiting for PostgreSQL (round trips)"),
    (r"psycopg", "psycopg (sending, converting)"),
    (r"sqlalchemy", "SQLAlchemy (statements, rows)"),
    (r"services/rating/domain\.py|contracts/types\.py:.*period", "rating methodology (domain.rate, facts)"),
    (r"pydantic|contracts/", "event validation (pydantic models)"),
    (r"json|orjson|services/rating/projection\.py:canonical", "JSON (facts and rating documents)"),
    (r"opentelemetry|carbon/telemetry", "telemetry (a span per event)"),
    (r"decimal", "decimal arithmetic"),
    (r"carbon/eventstore", "reading the log (store)"),
]


def _area(key: str) -> str:
    for pattern, area in _AREAS:
        if re.search(pattern, key):
            return area
    return "other Python"


# ---- (2) reads under an open-loop load --------------------------------------------------------------


@dataclass
class Load:
    label: str
    database: str
    offered: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # from the scheduled time
    service_ms: list[float] = field(default_factory=list, repr=False)  # from the moment it was sent
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    runs: int = 1

    answered_in_window: int = 0  # successful answers that arrived within the window, whenever due

    @property
    def achieved(self) -> float:
        return self.answered_in_window / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        """The service's CPU per answer: 1000 / this is what one process can serve at most."""
        return self.cpu.get("service", 0.0) * 1000 / self.achieved if self.achieved else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def _drive(url: str, requests: list[bytes], rate: float, warmup: float, duration: float,
                 on_window) -> tuple[list[tuple[float, float, float, int]], float]:
    """Send request i at start + i/rate whatever came back before (open loop).

    Returns (due, sent, done, status) per request, times from the start, and where the window begins.

    A minimal HTTP/1.1 keep-alive client: the requests are built once, so the load generator's own
    cost per request stays far below the service's.
    """
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection(host, int(port)))
    results: list[tuple[float, float, float, int]] = []

    async def one(due: float, request: bytes) -> None:
        reader, writer = await pool.get()
        sent = loop.time()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = -1
            writer.close()
            reader, writer = await asyncio.open_connection(host, int(port))
        results.append((due, sent, loop.time(), status))
        pool.put_nowait((reader, writer))

    total = int((warmup + duration) * rate)
    start = loop.time() + 0.05
    window = (start + warmup, start + warmup + duration)
    tasks, marked = [], False
    for i in range(total):
        due = start + i / rate
        if not marked and due >= window[0]:
            on_window("start")
            marked = True
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, requests[i % len(requests)])))
    await asyncio.sleep(max(0.0, window[1] - loop.time()))
    on_window("end")
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return [(due - start, sent - start, done - start, status) for due, sent, done, status in results], window[0] - start


def drive(label: str, database: str, url: str, requests: list[bytes], plan: Plan, probe: CpuProbe) -> Load:
    load = Load(label, database, plan.rate)
    marks: dict[str, Any] = {}

    def on_window(which: str) -> None:
        marks[which] = (probe.sample(), time.perf_counter())

    # The driver's own full collections (its heap grows with every result) would stall it for tens
    # of milliseconds and read as the service's latency: none while it drives.
    gc.collect()
    gc.disable()
    try:
        results, offset = asyncio.run(_drive(url, requests, plan.rate, plan.warmup, plan.duration, on_window))
    finally:
        gc.enable()
    (before, t0), (after, t1) = marks["start"], marks["end"]
    load.cpu = CpuProbe.cores(before, after, t1 - t0)
    load.seconds = plan.duration
    load.answered_in_window = sum(1 for _, _, done, status in results
                                  if status == 200 and offset <= done < offset + plan.duration)
    for due, sent, done, status in results:
        if not offset <= due < offset + plan.duration:
            continue  # warm-up, or scheduled after the window
        load.sent += 1
        load.statuses[status] = load.statuses.get(status, 0) + 1
        if status == 200:
            load.ok += 1
            load.latencies_ms.append((done - due) * 1000)
            load.service_ms.append((done - sent) * 1000)
        else:
            load.errors += 1
    return load


def build_requests(url: str, secret: str, enterprises: list[str], path: str | None = None) -> list[bytes]:
    from carbon.auth import mint_token
    from datetime import timedelta

    token = mint_token(secret, sub=BANK, role="bank", ttl=timedelta(hours=2))
    host = url.removeprefix("http://")
    order = random.Random(7).sample(enterprises, len(enterprises))
    paths = [path] if path else [f"/v1/ratings/{e}" for e in order]
    return [f"GET {p} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n".encode()
            for p in paths]


def copy_to_sqlite(source_engine, sqlite_path: Path) -> str:
    """The replayed read model, copied row for row into a migrated SQLite database."""
    from carbon.consent_projection import consents
    from carbon.db import make_engine
    from carbon.projection import projection_heads, stream_checkpoints
    from services.rating.projection import migrate
    from services.rating.schema import rating_facts, ratings

    url = f"sqlite:///{sqlite_path}"
    target = make_engine(url)
    try:
        migrate(target)
        with source_engine.connect() as src, target.begin() as dst:
            for table in (stream_checkpoints, projection_heads, consents, rating_facts, ratings):
                rows = [dict(r) for r in src.execute(select(table)).mappings()]
                if rows:
                    dst.execute(table.insert(), rows)
            dst.exec_driver_sql("ANALYZE")  # as a replay into it would end
    finally:
        target.dispose()
    return url


# ---- the run -------------------------------------------------------------------------------------


def run(quick: bool = False) -> None:
    plan = QUICK if quick else FULL
    server = server_url()
    pg = server_facts(server)
    postmaster = postmaster_pid(server)
    console.print(f"[dim]{machine(pg)}[/dim]")
    secret = uuid.uuid4().hex * 2
    replays: list[Replay] = []
    loads: list[Load] = []
    with ExitStack() as stack:
        written: list[float] = []
        template = f"carbon_bench_rating_log_v{HISTORY_VERSION}_{plan.enterprises}x{plan.events_each}"
        account_url = stack.enter_context(database_from_template(
            server, template, lambda url: written.append(fill(url, plan))))
        total = plan.enterprises * plan.events_each
        fill_rate = written[0] if written else None
        console.print(f"  account log: {total:,} events, {plan.enterprises:,} enterprises × {plan.events_each}, "
                      + (f"written at {fill_rate:,.0f} events/s" if fill_rate else f"copied from the kept {template}"))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        account = stack.enter_context(service("services.account.api:create_app", {
            "CARBON_DATABASE_URL": account_url, "CARBON_JWT_SECRET": secret, "CARBON_TRANSPORT": "store",
            "CARBON_DATA_DIR": str(tmp / "account"),
        }))

        # (1) replay, each into a fresh database
        direct_url = stack.enter_context(fresh_database(server))
        parallel_url = stack.enter_context(fresh_database(server))
        http_url = stack.enter_context(fresh_database(server))
        tally_url = stack.enter_context(fresh_database(server))
        databases = {database_name(u) for u in (account_url, direct_url, parallel_url, http_url, tally_url)}
        probe = CpuProbe({"account": account.pid}, postmaster=postmaster, databases=databases)
        direct = rating_projector(direct_url)
        stack.callback(direct.engine.dispose)
        parallel = rating_projector(parallel_url)
        stack.callback(parallel.engine.dispose)
        via_http = rating_projector(http_url)
        stack.callback(via_http.engine.dispose)
        tally = tally_projector(tally_url)
        stack.callback(tally.engine.dispose)
        partitions = default_partitions(parallel, parallel_url)  # as ``carbon replay rating`` chooses

        def flushed_first(replay):
            # Each replay writes about a gigabyte: the server's checkpoint of it, and any autovacuum it
            # set off, are done before the next replay starts, not paid for by that one.
            def run():
                settle_server(server)
                return replay()
            return run

        for label, do in (
            (direct_label(1), lambda: replay_direct(account_url, direct, probe, direct_label(1))),
            (direct_label(partitions), lambda: replay_direct_in_partitions(
                account_url, parallel_url, parallel, probe, direct_label(partitions), partitions)),
            (http_label(partitions), lambda: replay_http(account, secret, http_url, via_http, probe, partitions)),
            ("tally (peer), direct", lambda: replay_direct(account_url, tally, probe, "tally (peer), direct",
                                                           limit=min(plan.peer_events, total))),
        ):
            result, runs = cleanest(flushed_first(do), lambda r: r.cpu, label)
            result.runs = runs
            replays.append(result)
            console.print(f"  replay {label:<48} {result.events:>9,} events {result.rate:>8,.0f} events/s"
                          f"  other {result.cpu['other']:.2f} cores")
            if result.events != (min(plan.peer_events, total) if label.startswith("tally") else total):
                raise RuntimeError(f"replay {label}: applied {result.events} of {total} events")
        rows = ratings_of(direct)
        if rows != ratings_of(parallel) or rows != ratings_of(via_http):
            raise RuntimeError("the rating replays produced different ratings")
        rated = rated_enterprises(via_http)
        history_rows = len(rows)
        console.print(f"  the three replays give the same {history_rows:,} rating rows; {rated} of {plan.enterprises} enterprises rated")

        # (2) reads: the replayed PostgreSQL database, then a SQLite copy of it
        enterprises = [enterprise_id(n) for n in range(plan.enterprises)]
        sqlite_url = copy_to_sqlite(via_http.engine, tmp / "rating.db")
        via_http.engine.dispose()
        # The replays' dirty pages flushed now, not by a checkpoint in the middle of the reads.
        checkpoint(http_url)
        for database, url in (("PostgreSQL", http_url), ("SQLite", sqlite_url)):
            with service("services.rating.api:create_app", {
                "CARBON_DATABASE_URL": url, "CARBON_JWT_SECRET": secret, "CARBON_TRANSPORT": "store",
                "CARBON_ACCOUNT_URL": account.url, "CARBON_DATA_DIR": str(tmp / f"rating-{database}"),
            }) as rating:
                probe = CpuProbe({"service": rating.pid, "account": account.pid}, postmaster=postmaster,
                                 databases=databases)
                points = [("GET /v1/ratings/{id}", build_requests(rating.url, secret, enterprises))]
                if database == "SQLite":
                    points.append(("GET /healthz (peer)", build_requests(rating.url, secret, [], "/healthz")))
                for label, requests in points:
                    load, runs = cleanest(lambda: drive(label, database, rating.url, requests, plan, probe),
                                          lambda r: r.cpu, f"{label} on {database}")
                    load.runs = runs
                    loads.append(load)
                    console.print(f"  {label:<22} {database:<10} {load.achieved:>6,.0f} req/s  p50 {load.p(50):6.1f} ms"
                                  f"  p99 {load.p(99):7.1f} ms  errors {load.errors}  service CPU"
                                  f" {load.cpu_ms_per_request:.2f} ms/answer  other {load.cpu['other']:.2f} cores")
        profile = profile_replay(account_url, stack.enter_context(fresh_database(server)), min(plan.profile_events, total))
    appends = sum(len(history(n, plan.events_each)) for n in range(plan.enterprises))
    report(replays, loads, profile, plan, total, appends, fill_rate, rated, history_rows, pg, quick)


def _cores(cpu: dict[str, float], keys: tuple[str, ...]) -> str:
    return " / ".join(f"{cpu.get(k, 0):.2f}" for k in keys)


def report(replays: list[Replay], loads: list[Load], profile, plan: Plan, total: int, appends: int,
           fill_rate: float | None, rated: int, history_rows: int, pg: dict[str, str], quick: bool) -> None:
    direct, parallel, via_http, tally = replays
    parallel_count = int(re.search(r"(\d+) process", parallel.label)[1])
    floor = next(l for l in loads if l.label.startswith("GET /healthz"))
    reads = [l for l in loads if l is not floor]
    worst_read = max(reads, key=lambda l: l.p(99))

    replay_header = ["replay", "events", "events/s", "of tally (peer)", "target", "cores bench / pg / account",
                     "other", "runs"]
    replay_cells = []
    for r in replays:
        target = f"≥ {REPLAY_RATE:,.0f}/s: {verdict(r.rate >= REPLAY_RATE)}" if r is not tally else ""
        replay_cells.append([r.label, f"{r.events:,}", f"{r.rate:,.0f}" + (" ⚠" if busy_elsewhere(r.cpu) else ""),
                             f"{r.rate / tally.rate:.3f}×", target, _cores(r.cpu, ("bench", "postgres", "account")),
                             f"{r.cpu['other']:.2f}", str(r.runs)])
    read_header = ["request", "database", "offered/s", "answered/s", "requests", "errors", "p50 ms", "p90 ms", "p99 ms",
                   "max ms", "p99 sent→answer ms", "p99 of /healthz", "target p99", "cores service / client / pg",
                   "service CPU ms/answer", "other", "runs"]
    read_cells = []
    for l in loads:
        target = f"< {READ_P99_MS:g} ms: {verdict(l.p(99) < READ_P99_MS)}" if l is not floor else ""
        errors = f"{l.errors}" + (" (" + ", ".join(f"{s}: {n}" for s, n in sorted(l.statuses.items()) if s != 200) + ")"
                                  if l.errors else "")
        read_cells.append([
            l.label, l.database, f"{l.offered:,.0f}", f"{l.achieved:,.0f}", f"{l.sent:,}", errors, f"{l.p(50):.1f}",
            f"{l.p(90):.1f}", f"{l.p(99):.1f}" + (" ⚠" if busy_elsewhere(l.cpu) else ""), f"{l.p(100):.1f}",
            f"{percentile(l.service_ms, 99):.1f}", f"{l.p(99) / floor.p(99):.1f}×", target,
            _cores(l.cpu, ("service", "bench", "postgres")), f"{l.cpu_ms_per_request:.2f}", f"{l.cpu['other']:.2f}",
            str(l.runs),
        ])
    for title, header, cells in (("Rebuilding the rating projection", replay_header, replay_cells),
                                 (f"Rating reads, open loop at {plan.rate:,.0f} requests/s", read_header, read_cells)):
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 or name in ("target", "target p99", "database") else "right",
                             no_wrap=True)
        for line in cells:
            table.add_row(*[rich_verdict(c) for c in line])
        console.print(table)
    read_met = worst_read.p(99) < READ_P99_MS and worst_read.errors == 0
    console.print(f"target reads p99 < {READ_P99_MS:g} ms: worst {worst_read.p(99):.1f} ms ({worst_read.database}) "
                  + rich_verdict(verdict(read_met)))
    for r in (direct, parallel, via_http):
        console.print(f"target replay ≥ {REPLAY_RATE:,.0f} events/s, {r.label}: {r.rate:,.0f} " + rich_verdict(verdict(r.rate >= REPLAY_RATE)))
    if profile:
        console.print("profile of the direct replay (share of time): " + "; ".join(f"{a} {s:.0%}" for a, s in profile[:6]))
    suspect = [r.label for r in replays if busy_elsewhere(r.cpu)] + [f"{l.label} on {l.database}" for l in loads if busy_elsewhere(l.cpu)]
    warn_if_suspect(suspect)
    if quick:
        console.print("[dim]--quick: docs/benchmarks.md left as it was[/dim]")
        return

    body = "\n".join([
        "## Rating: replay and reads (`python -m bench rating`)",
        "",
        f"Run {utc_now()} at {source_revision()}, on {machine(pg)}.",
        "",
        f"The account log: {plan.enterprises:,} enterprises, {plan.events_each} events each ({total:,} events in"
        f" {appends:,} appends, "
        + (f"written through the store at {fill_rate:,.0f} events/s" if fill_rate else
           "copied from a template database written once through the store and kept between runs")
        + "): registration with a consent to the bank (`rating:read`, `pricing:read`) in one append, then quarter"
        " after quarter one append of an ActivityReported and the five EmissionRecorded lines of the quarter's"
        " calculation (process, coal, gas and diesel in scope 1, electricity in scope 2), and after each fourth"
        " quarter an append of the year's EmissionVerified; the appends go round the enterprises quarter by quarter,"
        " as reporting does. A rating speaks for a knowledge instant (an append), so the projection rates an"
        f" enterprise once per append that touches its rating. After the replay {rated:,} of the"
        f" {plan.enterprises:,} enterprises are rated, with {history_rows:,} rating changes in all.",
        "",
        "### Replay",
        "",
        "Each replay starts from an empty PostgreSQL database once the server has done what the last replay"
        " left it (a `CHECKPOINT`, then no autovacuum worker running), and ends with the tables analyzed. *Direct, one"
        f" process* pages `EventStore.read_log_page` ({MAX_LOG_PAGE:,} per page) in this process into `Projector.rebuild`, in"
        f" batches of {REPLAY_BATCH_EVENTS:,} events, one transaction each, committed on a writer thread while the"
        " next batch is applied, the garbage collector's thresholds raised: the projection's own speed on one core."
        f" *Direct, {parallel_count} processes* is `Projector.rebuild_in_partitions`: the log cut by stream into"
        f" {parallel_count} partitions, each read from the store and rebuilt the same way in a process of its own"
        " (spawned, so their start-up is in the time), then the head set and the tail applied by this process."
        f" *Through GET /v1/events* is `carbon.projection_runtime.replay_in_partitions` with {parallel_count}"
        " processes against the account service (uvicorn, one process), as `carbon replay rating` runs it on"
        " PostgreSQL (one process per core, up to four): each process pages its partition of the log"
        " (`?partition=&partitions=`), the next pages fetched on a thread while a batch is applied."
        " All three give the same rating rows, row for row (checked). *cores bench* counts the processes of a"
        " rebuild in parallel too. The peer is the tests'"
        f" tally projection (a read and an upsert per event) on the direct path, over the first"
        f" {min(plan.peer_events, total):,} events: a projection that does the least a projection can.",
        "",
        markdown_table(replay_header, replay_cells, "lrrrlrrr"),
        "",
        f"The whole log took {total / direct.rate:,.0f} s to rebuild in one process, {total / parallel.rate:,.0f} s in"
        f" {parallel_count}, and {total / via_http.rate:,.0f} s as `carbon replay rating` rebuilds it.",
        "",
        "### Reads",
        "",
        f"A rating service (uvicorn, one process, store transport following the account service) on the replayed"
        f" PostgreSQL database, then on a SQLite copy of it (the embedded default). A load generator in this process"
        f" (asyncio, {CONNECTIONS} keep-alive connections, requests built once) sends `GET /v1/ratings/{{id}}` as the"
        f" bank, over all {plan.enterprises:,} enterprises in a shuffled order, at a fixed {plan.rate:,.0f} requests/s"
        f" for {plan.warmup:g} s of warm-up and {plan.duration:g} s measured, whatever the answers (open loop)."
        " Latency runs from the moment a request was due, so a service that falls behind shows it; *sent→answer*"
        " leaves out time queued in the load generator; *answered/s* counts answers that arrived within the window."
        " *Service CPU ms/answer* is the service process's CPU over the answers: one process (one interpreter lock)"
        " serves at most 1,000 / that many per second, whatever the rate offered. Each answer is a decision: it is"
        " stored, with an access-log entry for the enterprise, before it is given; the reads waiting together share"
        " one write transaction and commit (group commit). The peer is the same service's"
        " `/healthz` (no database, not traced) at the same rate: the HTTP stack and the load generator alone.",
        "",
        markdown_table(read_header, read_cells, "llrrrrrrrrrrlrrrr"),
        "",
        f"Targets: reads p99 < {READ_P99_MS:g} ms: worst {worst_read.p(99):.1f} ms on {worst_read.database}"
        f" **{'met' if read_met else 'missed'}**; replay ≥ {REPLAY_RATE:,.0f} events/s: {direct.rate:,.0f} direct in one"
        f" process **{'met' if direct.rate >= REPLAY_RATE else 'missed'}**, {parallel.rate:,.0f} direct in"
        f" {parallel_count} **{'met' if parallel.rate >= REPLAY_RATE else 'missed'}**, {via_http.rate:,.0f} through"
        f" HTTP as `carbon replay rating` runs it **{'met' if via_http.rate >= REPLAY_RATE else 'missed'}**.",
        *(["", f"⚠ Something else used over {BUSY_CORES} cores during: {', '.join(suspect)}; those figures are suspect."]
          if suspect else []),
        *([
            "",
            f"### Profile of the direct replay ({min(plan.profile_events, total):,} events, pyinstrument)",
            "",
            "Self time by area, as a share of the replay's wall time:",
            "",
            markdown_table(["area", "share"], [[a, f"{s:.0%}"] for a, s in profile if s >= 0.005], "lr"),
        ] if profile else []),
    ])
    figures = {
        "run": utc_now(), "revision": source_revision(), "machine": machine(pg),
        "figures": [
            figure(f"rating reads p99 at {plan.rate:,.0f}/s (worst: {worst_read.database})", worst_read.p(99), "ms",
                   at_most=READ_P99_MS, suspect=busy_elsewhere(worst_read.cpu),
                   note=f"{worst_read.errors} errors" if worst_read.errors else ""),
            *[figure(f"rating reads answered at {l.offered:,.0f}/s offered ({l.database})", l.achieved, "requests/s",
                     at_least=l.offered * 0.99, suspect=busy_elsewhere(l.cpu)) for l in reads],
            figure("rating replay, direct, one process", direct.rate, "events/s", at_least=REPLAY_RATE,
                   suspect=busy_elsewhere(direct.cpu)),
            figure(f"rating replay, direct, {parallel_count} processes", parallel.rate, "events/s", at_least=REPLAY_RATE,
                   suspect=busy_elsewhere(parallel.cpu)),
            figure(f"rating replay, through GET /v1/events, {parallel_count} processes (carbon replay)", via_http.rate,
                   "events/s", at_least=REPLAY_RATE, suspect=busy_elsewhere(via_http.cpu)),
        ],
        "plot": {
            "throughput": {f"replay: {r.label}": r.rate for r in replays},
            "reads_ms": {f"{l.label} ({l.database})": {str(q): round(l.p(q), 1) for q in (50, 90, 99, 99.9, 100)}
                         for l in loads},
        },
    }
    write_section(NAME, body, figures=figures)
    console.print(f"[dim]wrote the '{NAME}' section of docs/benchmarks.md[/dim]")
