"""What every benchmark shares: the PostgreSQL server, a load driver, the machine, the results file."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from sqlalchemy.engine import make_url

from tests import infra  # the server is found as the tests find it: env, Docker, deploy/local/postgres.sh

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "docs" / "benchmarks.md"
URL_ENV = "CARBON_BENCH_DATABASE_URL"

# Wide enough for the tables when output goes to a file or CI log rather than a terminal.
console = Console(highlight=False, width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 160))


# ---- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on the console for long work; yields ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


def server_url() -> str:
    """SQLAlchemy URL of a server where the benchmarks may create and drop databases."""
    explicit = os.environ.get(URL_ENV, "").strip()
    return infra.to_sqlalchemy_url(explicit) if explicit else infra.postgres_server_url()


@contextmanager
def fresh_database(url: str, prefix: str = "carbon_bench") -> Iterator[str]:
    """An empty database for one workload, so no run inherits another's tables, bloat or caches."""
    with infra.fresh_database(url, prefix) as db_url:
        yield db_url


@contextmanager
def database_from_template(url: str, template: str, build: Callable[[str], None],
                           prefix: str = "carbon_bench") -> Iterator[str]:
    """A fresh database copied from a kept template database, which ``build(url)`` fills the first time.

    For a large input that takes minutes to write and that no run changes (the rating benchmark's
    log): later runs copy it in seconds. The template is marked complete only once ``build`` returned,
    so an interrupted build is started again; drop ``template`` to rebuild it.
    """
    from psycopg import sql

    admin = libpq_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        complete = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') = 'complete' FROM pg_database WHERE datname = %s",
            (template,)).fetchone()
        if not (complete and complete[0]):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            build(make_url(url).set(database=template).render_as_string(hide_password=False))
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'complete'").format(sql.Identifier(template)))
    name = f"{prefix}_{uuid.uuid4().hex}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def libpq_url(url: str) -> str:
    return infra.libpq_url(url)


def checkpoint(url: str) -> None:
    """Flush dirty pages now, so a checkpoint does not land in the middle of the next measurement."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:  # a server we may not checkpoint: measure anyway
            pass


def settle_server(url: str, patience: float = 300.0) -> None:
    """Let the server finish the background work a last measurement left it, rather than have it land in the
    next: a checkpoint now, then wait (up to ``patience`` s) until no autovacuum worker runs."""
    checkpoint(url)
    deadline, idle = time.monotonic() + patience, 0
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        while idle < 2 and time.monotonic() < deadline:
            busy = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                                " AND state = 'active'").fetchone()[0]
            idle = 0 if busy else idle + 1
            time.sleep(0.5)


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')"
            ).fetchall()
        )
    return {"version": version.split(" ")[0], **settings}


def postmaster_pid(url: str) -> int | None:
    """The server's main process, when it runs on this machine (the parent of our backend)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            raw = Path(f"/proc/{backend}/stat").read_text()
        except OSError:  # in a container or on another host
            return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def database_name(url: str) -> str:
    return make_url(url).database or ""


# ---- driving load ----------------------------------------------------------------------------


class CpuProbe:
    """CPU seconds used so far by this process (with its ended child processes: the processes of a rebuild
    in parallel), by PostgreSQL's processes, by given others, and by the machine.

    Sampled at both ends of a measurement, it shows which side was busy: a load generator pinned
    near one core is the GIL's ceiling, not the database's. PostgreSQL in a container or on
    another host is invisible here (its share reads as 0).
    """

    _tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(
        self, others: dict[str, int] | None = None, *, postmaster: int | None = None, databases: set[str] | None = None
    ) -> None:
        self.others = others or {}
        # When given, only this server's processes count as PostgreSQL (not another cluster's), and
        # of its backends only those serving ``databases`` (not another test run's): the rest is "other".
        self.postmaster, self.databases = postmaster, databases

    def sample(self) -> dict[str, float]:
        own = os.times()
        out = {"bench": own.user + own.system + own.children_user + own.children_system, "postgres": 0.0,
               "machine": self._machine_busy()}
        for name, pid in self.others.items():
            out[name] = self._process(pid)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                raw = stat.read_text()
            except OSError:  # the process ended between listing and reading
                continue
            if raw[raw.index("(") + 1 : raw.rindex(")")].startswith("postgres") and self._ours(stat.parent, raw):
                # With its reaped children's time: short-lived backends (a pool's overflow) count too.
                out["postgres"] += self._cpu(raw, children=True)
        return out

    def _ours(self, proc: Path, raw: str) -> bool:
        if self.postmaster is None:
            return True
        pid, parent = int(proc.name), int(raw[raw.rindex(")") + 2 :].split()[1])
        if self.postmaster not in (pid, parent):
            return False
        return self.databases is None or self._backend_database(proc) in (None, *self.databases)

    @staticmethod
    def _backend_database(proc: Path) -> str | None:
        """The database a client backend serves ("postgres: user db host(port) state"); None for the server's own."""
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            return None
        if len(title) >= 4 and title[0] == "postgres:" and ("(" in title[3] or title[3] == "[local]"):
            return title[2]
        return None

    def _process(self, pid: int) -> float:
        try:
            return self._cpu(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            return 0.0

    def _cpu(self, raw: str, children: bool = False) -> float:
        fields = raw[raw.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        if children:
            ticks += int(fields[13]) + int(fields[14])  # cutime + cstime
        return ticks / self._tick

    def _machine_busy(self) -> float:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return 0.0
        # user + nice + system: what processes can be charged with (interrupt time is nobody's).
        return sum(values[:3]) / self._tick

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        used = {k: (after[k] - before[k]) / seconds for k in after}
        used["other"] = max(0.0, used["machine"] - sum(v for k, v in used.items() if k != "machine"))
        return used


BUSY_CORES = 0.3  # more than this used by anyone else and the figures are suspect


def wait_until_quiet(patience: float = 10.0, sample: float = 0.5) -> float:
    """Wait (up to ``patience`` s) for the machine to go quiet; return the cores last seen busy."""
    probe = CpuProbe()
    deadline = time.monotonic() + patience
    while True:
        before = probe.sample()["machine"]
        time.sleep(sample)
        busy = (probe.sample()["machine"] - before) / sample
        if busy < BUSY_CORES or time.monotonic() >= deadline:
            return busy


@dataclass
class Measurement:
    """Events committed by all workers within the measured window, and each call's latency."""

    workers: int
    seconds: float
    events: int
    calls: int
    latencies: list[float] = field(default_factory=list, repr=False)
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the window, by whom

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(p) - 1]


def drive(
    workers: int,
    make_step: Callable[[int], Callable[[], int]],
    *,
    warmup: float,
    duration: float,
    probe: CpuProbe | None = None,
) -> Measurement:
    """Run ``workers`` threads, each calling its step (which returns events written) in a loop.

    Only calls that finish inside the window after the warm-up count. The first worker error
    stops every worker and is raised here.
    """
    steps = [make_step(i) for i in range(workers)]  # built up front: setup is not measured
    measuring = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = [[0, 0] for _ in range(workers)]  # per worker: events, calls
    latencies: list[list[float]] = [[] for _ in range(workers)]
    start = threading.Barrier(workers + 1)

    def loop(index: int) -> None:
        step, count, lat = steps[index], counts[index], latencies[index]
        try:
            start.wait()
            while not stop.is_set():
                began = time.perf_counter()
                written = step()
                ended = time.perf_counter()
                if measuring.is_set() and not stop.is_set():
                    count[0] += written
                    count[1] += 1
                    lat.append(ended - began)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(i,), name=f"bench-worker-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    stop.wait(warmup)
    probe = probe or CpuProbe()
    cpu_before = probe.sample()
    measuring.set()
    began = time.perf_counter()
    stop.wait(duration)
    stop.set()
    seconds = time.perf_counter() - began
    cpu = CpuProbe.cores(cpu_before, probe.sample(), seconds)
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise RuntimeError("a worker did not stop within 60 s")
    return Measurement(
        workers=workers,
        seconds=seconds,
        events=sum(c[0] for c in counts),
        calls=sum(c[1] for c in counts),
        latencies=[x for per in latencies for x in per],
        cpu=cpu,
    )


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (inclusive method, as ``Measurement.percentile``)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    if p >= 100:
        return max(values)
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


def busy_elsewhere(cpu: dict[str, float]) -> bool:
    """More than ``BUSY_CORES`` used by processes outside the measurement: the figure is suspect."""
    return cpu.get("other", 0.0) > BUSY_CORES


def cleanest(run_point: Callable[[], Any], cpu_of: Callable[[Any], dict[str, float]], what: str, retries: int = 1):
    """Run a point; while something else kept the machine busy, wait for quiet and run it again.

    Returns (result, runs): the run with the least outside load, and how many runs were made.
    """
    best, runs = None, 0
    for attempt in range(retries + 1):
        wait_until_quiet()
        result = run_point()
        runs += 1
        if best is None or cpu_of(result).get("other", 0.0) < cpu_of(best).get("other", 0.0):
            best = result
        if not busy_elsewhere(cpu_of(result)):
            break
        if attempt < retries:
            console.print(f"[yellow]  ⚠ {what}: {cpu_of(result)['other']:.2f} cores used elsewhere; running it again[/yellow]")
    return best, runs


def kafka_broker_pid(bootstrap: str) -> int | None:
    """The local process listening on the broker's port, so its CPU is charged to the measurement, not "other"."""
    port = int(bootstrap.rsplit(":", 1)[1])
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None  # in a container or on another host
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                return int(fd.parent.parent.name)
        except OSError:
            continue
    return None


# ---- services as their own processes -----------------------------------------------------------


@dataclass
class Service:
    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def service(factory: str, env: dict[str, str], *, ready_path: str = "/readyz", timeout: float = 60) -> Iterator[Service]:
    """A platform service under uvicorn (one process), as ``carbon up`` starts it; stopped on exit."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{factory} exited with {process.returncode}:\n{log.read()[-3000:]}")
                try:
                    if httpx.get(url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{factory} did not become ready within {timeout:.0f} s")
                time.sleep(0.1)
            yield Service(url, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---- the machine -----------------------------------------------------------------------------


def machine(pg: dict[str, str] | None = None) -> str:
    """One line naming what the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{cores} cores ({_cpu_model()})", f"{_memory_gib():.0f} GiB RAM", f"Python {platform.python_version()}"]
    if pg:
        parts.append(
            f"PostgreSQL {pg['version']} (fsync={pg.get('fsync', '?')}, "
            f"synchronous_commit={pg.get('synchronous_commit', '?')})"
        )
    return ", ".join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if match:
            return int(match.group(1)) / 1024**2
    except OSError:
        pass
    return float("nan")


def source_revision() -> str:
    """The commit measured, flagged when tracked files differ from it (figures then belong to no commit)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---- the results file ------------------------------------------------------------------------

_HEADER = """# Benchmarks

Produced by `make bench` (`python -m bench`; `python -m bench NAME` runs one). Each benchmark
rewrites only its own section, between its `<!-- bench:NAME -->` markers; text outside the markers
is kept.
"""


_FIGURES = re.compile(r"^<!-- figures (\{.*\}) -->$", re.M)


def write_section(
    name: str, body: str, path: Path = RESULTS, *, figures: dict[str, Any] | None = None, top: bool = False
) -> None:
    """Replace the section between ``<!-- bench:name -->`` and ``<!-- /bench:name -->``.

    An absent section is appended, or with ``top`` put before the first section. ``figures`` are
    kept in the section as one JSON comment, for the summary and the plot to read back.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if figures is not None:
        body = body.strip() + "\n\n<!-- figures " + json.dumps(figures, ensure_ascii=False, separators=(",", ":")) + " -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    elif top:
        first = re.search(r"^(## |<!-- bench:)", text, re.M)
        at = first.start() if first else len(text)
        text = text[:at].rstrip() + "\n\n" + block + "\n\n" + text[at:].lstrip()
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def read_figures(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Each section's figures, by benchmark name (sections written without figures are left out)."""
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for match in re.finditer(r"<!-- bench:([\w-]+) -->(.*?)<!-- /bench:\1 -->", path.read_text(), re.S):
        found = _FIGURES.search(match.group(2))
        if found:
            out[match.group(1)] = json.loads(found.group(1))
    return out


def figure(name: str, value: float, unit: str, *, at_least: float | None = None, at_most: float | None = None,
           suspect: bool = False, note: str = "") -> dict[str, Any]:
    """One headline figure with its target (``at_least`` or ``at_most``), for the summary table."""
    met = None
    if at_least is not None:
        met = value >= at_least
    elif at_most is not None:
        met = value <= at_most
    return {"figure": name, "value": value, "unit": unit, "at_least": at_least, "at_most": at_most, "met": met,
            "suspect": suspect, "note": note}


def verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


def rich_verdict(text: str) -> str:
    return text.replace("MISSED", "[red]MISSED[/red]").replace("met", "[green]met[/green]")


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub table; ``align`` has one of l/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def warn_if_suspect(suspect: list[str]) -> None:
    """Say which points ran while something else kept the machine busy."""
    if suspect:
        console.print(f"[yellow]⚠ something else used over {BUSY_CORES} cores during: {', '.join(suspect)}[/yellow]")


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Drop a run's Kafka topics; a leftover is harmless (the names are unique), so a failure is only said."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="carbon-bench-admin")
    try:
        admin.delete_topics(topics)
    except Exception as exc:  # noqa: BLE001
        console.print(f"[dim]could not delete the benchmark topics: {exc}[/dim]")
    finally:
        admin.close()
