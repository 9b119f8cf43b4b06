"""Append throughput of the event store on PostgreSQL, against a peer and the database's own ceiling.

Workloads, each on a fresh database:
  (a) one event per transaction (the shape of one HTTP request), 1/4/16 writer threads;
  (b) 100 events per transaction, 1/4 writer threads;
  each through our ``EventStore`` and through the ``eventsourcing`` library's PostgreSQL
  application recorder (the peer: it serialises writers with a table lock to keep its
  notification log gap-free, where ours locks only the writer's stream row);
  the ceiling: pgbench, one single-row INSERT per transaction, with 16 clients and with 1
  (the rate of commits made one after another, which bounds any writer behind a table lock);
  (c) appends through the account service's HTTP API, 16 concurrent clients.
Writers append to their own streams, so no writer waits for another's stream.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from glob import glob
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.common import (
    BUSY_CORES,
    REPO_ROOT,
    CpuProbe,
    Measurement,
    checkpoint,
    console,
    drive,
    figure,
    fresh_database,
    libpq_url,
    machine,
    markdown_table,
    server_facts,
    server_url,
    source_revision,
    utc_now,
    wait_until_quiet,
    warn_if_suspect,
    write_section,
)

NAME = "append"


@dataclass(frozen=True)
class Plan:
    warmup: float = 1.0
    duration: float = 5.0
    pgbench_seconds: int = 10
    http_warmup: float = 2.0
    http_duration: float = 10.0


FULL, QUICK = Plan(), Plan(warmup=0.3, duration=1.0, pgbench_seconds=2, http_warmup=0.5, http_duration=2.0)

# (label, events per transaction, writer counts); TARGETS: (label, writers) -> minimum ours/peer.
WORKLOADS = [
    ("(a) 1 event/tx", 1, (1, 4, 16)),
    ("(b) 100 events/tx", 100, (1, 4)),
]
TARGETS = {("(a) 1 event/tx", 16): 5.0, ("(b) 100 events/tx", 1): 2.0, ("(b) 100 events/tx", 4): 2.0}
PGBENCH_CLIENTS = 16
HTTP_CLIENTS = 16
HTTP_ENTERPRISES = 64  # four per client, so each stream stays a realistic length

# A valid EmissionRecorded in wire form, as the accounting service writes it (~300 bytes of JSON).
EMISSION = {
    "calculation_id": "calc-2024-cement-01",
    "period": "2024",
    "scope": 1,
    "category": "process",
    "gas": "CO2",
    "tco2e": "642000.25",
    "factor_ref": "GB/T 32151.8-2015 clinker default",
    "methodology": "GB/T 32151.8-2015",
    "data_quality": 4,
    "supersedes": "6f1c2b7e-3d4a-4e5f-8a9b-0c1d2e3f4a5b",  # a correction: the longest form of the event
}
METADATA = {
    "actor": {"sub": "accounting", "role": "service"},
    "idempotency_key": None,
    "traceparent": None,
    "causation_id": None,
    "correlation_id": None,
}
ACTIVITY = {
    "expected_version": None,
    "events": [
        {"type": "ActivityReported", "data": {"period": "2024", "revenue_10k_cny": "100", "output": {"quantity": "10", "unit": "t"}}}
    ],
}


def emission(n: int) -> dict[str, Any]:
    return {**EMISSION, "calculation_id": f"calc-2024-cement-{n:06d}"}


# ---- our store -------------------------------------------------------------------------------


def run_ours(db_url: str, per_tx: int, writers: int, plan: Plan) -> Measurement:
    from carbon.db import make_engine
    from carbon.eventstore import EventStore, NewEvent, migrate
    from carbon.eventstore.schema import events

    engine = make_engine(db_url, pool_size=writers)  # as a service builds it
    try:
        migrate(engine)
        store = EventStore(engine)

        def make_step(index: int):
            stream, counter = f"bench-{index:04d}", iter(range(1, 10**12))

            def step() -> int:
                batch = [NewEvent("EmissionRecorded", emission(next(counter)), METADATA) for _ in range(per_tx)]
                store.append_events(stream, batch)
                return per_tx

            return step

        checkpoint(db_url)
        measured = drive(writers, make_step, warmup=plan.warmup, duration=plan.duration)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
    finally:
        engine.dispose()
    _check_stored("ours", stored, measured)
    return measured


# ---- the peer: eventsourcing's PostgresApplicationRecorder ------------------------------------


def run_peer(db_url: str, per_tx: int, writers: int, plan: Plan) -> Measurement:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    url = make_url(db_url)
    datastore = PostgresDatastore(
        dbname=url.database,
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password or "",
        pool_size=writers,
    )
    try:
        recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
        recorder.create_table()
        topic = "carbon.events:EmissionRecorded"

        def make_step(_index: int):
            originator, state = uuid.uuid4(), {"version": 0}
            counter = iter(range(1, 10**12))

            def step() -> int:
                first = state["version"] + 1
                batch = [
                    StoredEvent(
                        originator_id=originator,
                        originator_version=first + k,
                        topic=topic,
                        # Same content as ours: the event's data and metadata, serialised as JSON.
                        state=json.dumps({"data": emission(next(counter)), "metadata": METADATA}).encode(),
                    )
                    for k in range(per_tx)
                ]
                recorder.insert_events(batch)
                state["version"] += per_tx
                return per_tx

            return step

        checkpoint(db_url)
        measured = drive(writers, make_step, warmup=plan.warmup, duration=plan.duration)
        with psycopg.connect(libpq_url(db_url)) as conn:
            stored = conn.execute("SELECT count(*) FROM stored_events").fetchone()[0]
    finally:
        datastore.close()
    _check_stored("peer", stored, measured)
    return measured


def _check_stored(who: str, stored: int, measured: Measurement) -> None:
    # Figures only count if the rows are really there.
    if stored < measured.events:
        raise RuntimeError(f"{who}: counted {measured.events} events but the table holds {stored}")


# ---- the ceiling: pgbench --------------------------------------------------------------------


def find_pgbench() -> str | None:
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/pgbench"), key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else shutil.which("pgbench")


def run_pgbench(db_url: str, seconds: int, clients: int) -> float:
    pgbench = find_pgbench()
    if pgbench is None:
        raise RuntimeError("pgbench not found (Debian: apt-get install postgresql-client; it is in /usr/lib/postgresql/*/bin)")
    # json.dumps puts a space after every colon, so pgbench never reads ":name" in it as a variable.
    payload = json.dumps({"data": emission(0), "metadata": METADATA}).replace("'", "''")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE ceiling (id bigserial PRIMARY KEY, data jsonb NOT NULL)")
    checkpoint(db_url)
    url = make_url(db_url)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(f"INSERT INTO ceiling (data) VALUES ('{payload}');\n")
        done = subprocess.run(
            [pgbench, "-n", "-T", str(seconds), "-c", str(clients), "-j", str(min(clients, 2)), "-f", str(script),
             "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres", url.database],
            env={**os.environ, "PGPASSWORD": url.password or ""},
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    match = re.search(r"^tps = ([\d.]+)", done.stdout, re.M)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


# ---- (c) through the HTTP API -----------------------------------------------------------------


def uscc(n: int) -> str:
    from contracts.types import uscc_check_character

    first17 = f"91510100MA{n:07d}"  # Chengdu, with a serial number standing in for the organisation code
    return first17 + uscc_check_character(first17)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HttpResult:
    measured: Measurement
    enterprises: int
    longest_stream: int
    sessions: int  # database sessions opened during the whole run (registration included)


def run_http(db_url: str, plan: Plan) -> HttpResult:
    from carbon.auth import mint_token

    secret = uuid.uuid4().hex + uuid.uuid4().hex
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CARBON_DATABASE_URL": db_url, "CARBON_JWT_SECRET": secret}
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "services.account.api:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(server, base, log)
            operator = {"Authorization": f"Bearer {mint_token(secret, sub='bench-operator', role='operator')}"}
            ids = [uscc(n) for n in range(1, HTTP_ENTERPRISES + 1)]
            with httpx.Client(base_url=base, headers=operator, timeout=30) as client:
                for enterprise in ids:
                    body = {"uscc": enterprise, "name": f"Bench Enterprise {enterprise}", "industry": "C3011", "region": "510100"}
                    _expect(client.post("/v1/enterprises", json=body), 201)
            clients: list[httpx.Client] = []

            def make_step(index: int):
                mine = ids[index::HTTP_CLIENTS]
                tokens = {e: f"Bearer {mint_token(secret, sub=e, role='enterprise')}" for e in mine}
                client = httpx.Client(base_url=base, timeout=30)
                clients.append(client)
                turn = iter(range(10**12))

                def step() -> int:
                    enterprise = mine[next(turn) % len(mine)]
                    response = client.post(
                        f"/v1/enterprises/{enterprise}/events", json=ACTIVITY, headers={"Authorization": tokens[enterprise]}
                    )
                    _expect(response, 201)
                    return 1

                return step

            checkpoint(db_url)
            try:
                measured = drive(
                    HTTP_CLIENTS, make_step, warmup=plan.http_warmup, duration=plan.http_duration,
                    probe=CpuProbe({"service": server.pid}),
                )
            finally:
                for client in clients:
                    client.close()
            with psycopg.connect(libpq_url(db_url)) as conn:
                stored = conn.execute("SELECT count(*) FROM events WHERE type = 'ActivityReported'").fetchone()[0]
                longest = conn.execute("SELECT max(version) FROM streams").fetchone()[0]
                # Sessions the service opened: more than its pool means connections made and dropped per request.
                sessions = conn.execute(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                ).fetchone()[0]
            _check_stored("http", stored, measured)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return HttpResult(measured, len(ids), longest, sessions)


def _wait_ready(server: subprocess.Popen, base: str, log) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the account service exited with {server.returncode}:\n{log.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the account service did not become ready within 60 s")


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:500]}")


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Point:
    label: str
    per_tx: int
    writers: int
    ours: Measurement
    peer: Measurement

    @property
    def ratio(self) -> float:
        return self.ours.rate / self.peer.rate

    @property
    def target(self) -> float | None:
        return TARGETS.get((self.label, self.writers))


def run(quick: bool = False) -> None:
    plan = QUICK if quick else FULL
    server = server_url()
    pg = server_facts(server)
    console.print(f"[dim]{machine(pg)}[/dim]")
    points: list[Point] = []
    for label, per_tx, writer_counts in WORKLOADS:
        for writers in writer_counts:
            figures: dict[str, Measurement] = {}
            for who, runner in (("ours", run_ours), ("peer", run_peer)):
                wait_until_quiet()
                with fresh_database(server) as db_url:
                    figures[who] = m = runner(db_url, per_tx, writers, plan)
                console.print(
                    f"  {label:<18} {writers:>2} writers  {who}: {m.rate:>9,.0f} events/s  "
                    f"p50 {m.percentile(50) * 1000:5.1f} ms  cores bench {m.cpu['bench']:.2f} postgres {m.cpu['postgres']:.2f}"
                )
            points.append(Point(label, per_tx, writers, figures["ours"], figures["peer"]))
    ceilings: dict[int, float] = {}
    for clients, seconds in ((PGBENCH_CLIENTS, plan.pgbench_seconds), (1, max(2, plan.pgbench_seconds // 2))):
        wait_until_quiet()
        with fresh_database(server) as db_url:
            ceilings[clients] = run_pgbench(db_url, seconds, clients)
        console.print(f"  pgbench {clients:>2} client(s): {ceilings[clients]:,.0f} tps")
    wait_until_quiet()
    with fresh_database(server) as db_url:
        http = run_http(db_url, plan)
    console.print(f"  HTTP: {http.measured.rate:,.0f} events/s")
    report(points, ceilings, http, pg, plan, quick)


def _writers(n: int) -> str:
    return f"{n} writer" + ("s" if n != 1 else "")


def _cores(m: Measurement) -> str:
    return f"{m.cpu.get('bench', 0):.2f}+{m.cpu.get('postgres', 0):.2f}"


def _busy(m: Measurement) -> bool:
    return m.cpu.get("other", 0.0) > BUSY_CORES


def report(points: list[Point], ceilings: dict[int, float], http: HttpResult, pg: dict[str, str], plan: Plan, quick: bool) -> None:
    ceiling, serial = ceilings[PGBENCH_CLIENTS], ceilings[1]
    header = [
        "workload", "writers", "ours events/s", "peer events/s", "ours/peer", "target",
        "p50 ms ours / peer", "cores ours / peer", "ours tx/s of ceiling",
    ]
    cells: list[list[str]] = []
    for p in points:
        verdict = "" if p.target is None else f"≥ {p.target:g}×: {'met' if p.ratio >= p.target else 'MISSED'}"
        flag = " ⚠" if _busy(p.ours) or _busy(p.peer) else ""
        cells.append([
            p.label, str(p.writers), f"{p.ours.rate:,.0f}", f"{p.peer.rate:,.0f}", f"{p.ratio:.2f}×{flag}", verdict,
            f"{p.ours.percentile(50) * 1000:.1f} / {p.peer.percentile(50) * 1000:.1f}",
            f"{_cores(p.ours)} / {_cores(p.peer)}",
            f"{p.ours.rate / p.per_tx / ceiling:.0%}",
        ])
    table = Table(title="Event store appends on PostgreSQL (cores: bench process + PostgreSQL)")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 or name == "target" else "right", no_wrap=True)
    for line in cells:
        table.add_row(*[c.replace("MISSED", "[red]MISSED[/red]").replace("met", "[green]met[/green]") for c in line])
    console.print(table)

    m = http.measured
    http_header = [
        "clients", "enterprises", "events/s", "p50 ms", "p99 ms", "of ceiling", "longest stream",
        "cores service / clients / pg", "db sessions opened",
    ]
    http_cells = [[
        str(m.workers), str(http.enterprises), f"{m.rate:,.0f}" + (" ⚠" if _busy(m) else ""),
        f"{m.percentile(50) * 1000:.1f}", f"{m.percentile(99) * 1000:.1f}", f"{m.rate / ceiling:.0%}",
        str(http.longest_stream), f"{m.cpu.get('service', 0):.2f} / {m.cpu['bench']:.2f} / {m.cpu['postgres']:.2f}",
        f"{http.sessions:,}",
    ]]
    http_table = Table(title="(c) POST /v1/enterprises/{id}/events, one ActivityReported per request")
    for name in http_header:
        http_table.add_column(name, justify="right", no_wrap=True)
    http_table.add_row(*http_cells[0])
    console.print(http_table)

    ceiling_line = (
        f"pgbench, one single-row INSERT per transaction: {ceiling:,.0f} tps with {PGBENCH_CLIENTS} clients (the ceiling),"
        f" {serial:,.0f} tps with 1 client (commits one at a time, as writers behind a table lock must)"
    )
    console.print(ceiling_line)
    verdicts = [p for p in points if p.target is not None]
    for p in verdicts:
        colour, word = ("green", "met") if p.ratio >= p.target else ("red", "MISSED")
        console.print(f"target {p.label}, {_writers(p.writers)}: ours/peer {p.ratio:.2f}× (≥ {p.target:g}×) [{colour}]{word}[/{colour}]")
    suspect = [
        f"{p.label} × {p.writers} ({max(p.ours.cpu.get('other', 0), p.peer.cpu.get('other', 0)):.2f} cores)"
        for p in points if _busy(p.ours) or _busy(p.peer)
    ] + ([f"HTTP ({m.cpu['other']:.2f} cores)"] if _busy(m) else [])
    warn_if_suspect(suspect)

    if quick:
        console.print("[dim]--quick: docs/benchmarks.md left as it was[/dim]")
        return
    body = "\n".join([
        "## Appends (`python -m bench append`)",
        "",
        f"Run {utc_now()} at {source_revision()}, on {machine(pg)}.",
        "",
        f"Each point on a fresh database; {plan.warmup:g} s warm-up, then {plan.duration:g} s measured. Each writer is a"
        " thread appending to its own stream; an event is an EmissionRecorded of ~300 bytes of JSON plus metadata."
        " *Ours* is `carbon.eventstore.EventStore` (engine from `carbon.db.make_engine`); the *peer* is"
        f" `eventsourcing` {version('eventsourcing')}'s `PostgresApplicationRecorder`, which takes `LOCK TABLE … IN EXCLUSIVE MODE` in every"
        " write transaction. Latencies are per transaction. *Cores* are CPU used during the window by the benchmark"
        " process (all writer threads: Python's GIL caps it near one core) and by PostgreSQL.",
        "",
        markdown_table(header, cells, "lrrrrlrrr"),
        "",
        f"The database alone — {ceiling_line}. The last column is our transactions per second as a fraction of the"
        " ceiling.",
        "",
        "Targets (ours/peer): "
        + "; ".join(
            f"{p.label}, {_writers(p.writers)} ≥ {p.target:g}×: {p.ratio:.2f}× **{'met' if p.ratio >= p.target else 'missed'}**"
            for p in verdicts
        )
        + ".",
        "",
        *(
            [f"⚠ Something else used over {BUSY_CORES} cores during: {', '.join(suspect)}; those figures are suspect.", ""]
            if suspect else []
        ),
        "### (c) Through the HTTP API",
        "",
        f"The account service under uvicorn (one process), {m.workers} client threads (httpx, one process, on the"
        f" same machine), {http.enterprises} registered enterprises shared round-robin, each request one"
        f" ActivityReported as the enterprise; {plan.http_warmup:g} s warm-up, {plan.http_duration:g} s measured."
        " Each append folds the enterprise's whole stream to check the account's rules, so the cost per request grows"
        " with the stream (longest stream: its length at the end). *db sessions opened* counts connections made"
        " during the whole run; the service's pool keeps 10, so many more means connections opened and closed per"
        " request.",
        "",
        markdown_table(http_header, http_cells, "rrrrrrrrr"),
    ])
    figures = {
        "run": utc_now(), "revision": source_revision(), "machine": machine(pg),
        "figures": [
            *[figure(f"{p.label}, {_writers(p.writers)}: ours/peer", p.ratio, "×", at_least=p.target,
                     suspect=_busy(p.ours) or _busy(p.peer)) for p in verdicts],
            figure("appends through HTTP, 16 clients", m.rate, "events/s", suspect=_busy(m)),
        ],
    }
    write_section(NAME, body, figures=figures)
    console.print(f"[dim]wrote the '{NAME}' section of docs/benchmarks.md[/dim]")
