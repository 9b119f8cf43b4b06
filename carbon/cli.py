"""The ``carbon`` command line (SPEC §4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from carbon.auth import mint_token
from carbon.eventstore import MAX_PARTITIONS
from carbon.settings import PlatformSettings
from contracts import Role

app = typer.Typer(help="Enterprise carbon accounts for green finance.", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    factory: str  # "module:function" building the ASGI app from the environment
    port: int
    database_env: str  # the variable `carbon up` reads to give this service its database

    def database_url(self, data_dir: Path) -> str:
        return os.environ.get(self.database_env) or f"sqlite:///{data_dir / (self.name + '.db')}"


SERVICES = [
    ServiceSpec("account", "services.account.api:create_app", 8001, "CARBON_ACCOUNT_DATABASE_URL"),
    ServiceSpec("accounting", "services.accounting.api:create_app", 8002, "CARBON_ACCOUNTING_DATABASE_URL"),
    ServiceSpec("rating", "services.rating.api:create_app", 8003, "CARBON_RATING_DATABASE_URL"),
    ServiceSpec("disclosure", "services.disclosure.api:create_app", 8004, "CARBON_DISCLOSURE_DATABASE_URL"),
]


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Interface the services listen on")] = "127.0.0.1",
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for each service to be ready")] = 60.0,
    play_demo: Annotated[bool, typer.Option("--demo", help="Play the end-to-end story once the platform is up")] = False,
) -> None:
    """Start every service as its own process; Ctrl-C (or SIGTERM) stops them all."""
    settings = PlatformSettings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_from_env = settings.jwt_secret is not None
    secret = settings.resolved_jwt_secret()

    processes: list[tuple[ServiceSpec, subprocess.Popen]] = []

    def stop_all() -> None:
        # Dependents first, so none of them logs the account service going away.
        for _spec, process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for spec in SERVICES:
            env = {
                **os.environ,
                "CARBON_DATA_DIR": str(data_dir),
                "CARBON_DATABASE_URL": spec.database_url(data_dir),
                "CARBON_JWT_SECRET": secret,
            }
            command = [sys.executable, "-m", "uvicorn", spec.factory, "--factory", "--host", host,
                       "--port", str(spec.port), "--log-level", "warning", "--no-access-log"]
            processes.append((spec, subprocess.Popen(command, env=env)))
        for spec, process in processes:
            _wait_ready(spec, process, host, startup_timeout)
        _print_stack(host, data_dir, secret, secret_from_env)
        if play_demo:
            from carbon.demo import Endpoints, StoryDeviation, run_demo

            urls = {spec.name: f"http://{host}:{spec.port}" for spec in SERVICES}
            try:
                run_demo(Endpoints(**urls), secret, console)
            except StoryDeviation as exc:
                err.print(f"[red bold]the story does not hold:[/red bold] {exc}")
                raise typer.Exit(1) from None
            console.print("the platform keeps running · Ctrl-C stops")
        while True:
            for spec, process in processes:
                if process.poll() is not None:
                    err.print(f"[red]{spec.name} exited with status {process.returncode}; stopping the platform[/red]")
                    raise typer.Exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stop_all()


def _interrupt(_signum, _frame) -> None:
    # SIGTERM stops the platform exactly like Ctrl-C.
    raise KeyboardInterrupt


def _wait_ready(spec: ServiceSpec, process: subprocess.Popen, host: str, timeout: float) -> None:
    url = f"http://{host}:{spec.port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err.print(f"[red]{spec.name} failed to start (exit status {process.returncode})[/red]")
            raise typer.Exit(1)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    err.print(f"[red]{spec.name} was not ready at {url} within {timeout:.0f} s[/red]")
    raise typer.Exit(1)


def _print_stack(host: str, data_dir: Path, secret: str, secret_from_env: bool) -> None:
    table = Table(title="Carbon account platform")
    for column in ("service", "url", "database"):
        table.add_column(column)
    for spec in SERVICES:
        table.add_row(spec.name, f"http://{host}:{spec.port}", spec.database_url(data_dir))
    console.print(table)
    console.print(f"transport: {os.environ.get('CARBON_TRANSPORT', 'store')}; data: {data_dir}")
    if not secret_from_env:
        console.print(f"development JWT secret (kept in {data_dir / 'jwt-secret'}): {secret}")
    console.print("mint a token with: carbon token --role operator --sub ops   ·   Ctrl-C stops")


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="The party's role (SPEC §1)")],
    sub: Annotated[str, typer.Option(help="The party's identifier: a USCC for an enterprise")],
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds")] = 3600,
) -> None:
    """Mint a development JWT signed with CARBON_JWT_SECRET (or the data directory's key)."""
    secret = PlatformSettings().resolved_jwt_secret()
    typer.echo(mint_token(secret, sub=sub, role=role, ttl=timedelta(seconds=ttl)))


@app.command("verify-chain")
def verify_chain(
    enterprise_id: Annotated[str, typer.Argument(help="The enterprise's USCC")],
    database_url: Annotated[
        str | None, typer.Option(envvar="CARBON_ACCOUNT_DATABASE_URL", help="The account database (default: the embedded one)")
    ] = None,
) -> None:
    """Recompute an enterprise's hash chain straight from the account database."""
    from carbon.db import make_engine
    from carbon.eventstore import EventStore

    url = database_url or f"sqlite:///{PlatformSettings().data_dir / 'account.db'}"
    engine = make_engine(url)
    try:
        store = EventStore(engine)
        if store.stream_head(enterprise_id) is None:
            err.print(f"[red]no stream for enterprise {enterprise_id}[/red]")
            raise typer.Exit(2)
        report = store.verify_chain(enterprise_id)
    finally:
        engine.dispose()
    if report.ok:
        console.print(f"[green]chain intact[/green]: {report.events_checked} events, head {report.head_hash}")
        return
    console.print(
        f"[red]chain broken[/red] at version {report.first_bad_version} ({report.events_checked} events checked)"
    )
    raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Play the end-to-end story (SPEC §8) against the running platform; exit 1 if any step deviates."""
    from carbon.demo import Endpoints, StoryDeviation, run_demo

    settings = PlatformSettings()
    endpoints = Endpoints(
        account=settings.account_url,
        accounting=os.environ.get("CARBON_ACCOUNTING_URL", "http://127.0.0.1:8002"),
        rating=os.environ.get("CARBON_RATING_URL", "http://127.0.0.1:8003"),
        disclosure=os.environ.get("CARBON_DISCLOSURE_URL", "http://127.0.0.1:8004"),
    )
    try:
        run_demo(endpoints, settings.resolved_jwt_secret(), console)
    except StoryDeviation as exc:
        err.print(f"[red bold]the story does not hold:[/red bold] {exc}")
        raise typer.Exit(1) from None


PROJECTIONS = {"rating": "CARBON_RATING_DATABASE_URL", "disclosure": "CARBON_DISCLOSURE_DATABASE_URL"}


@app.command()
def replay(
    projection: Annotated[str, typer.Argument(help="rating or disclosure")],
    database_url: Annotated[str | None, typer.Option(help="The projection's database (default: its variable of SPEC §3, else the embedded one)")] = None,
    partitions: Annotated[int | None, typer.Option(min=1, max=MAX_PARTITIONS, help="Processes rebuilding at once, each one partition of the log's streams (default: one per core, up to four, for rating on PostgreSQL; else one)")] = None,
) -> None:
    """Rebuild a projection from the account's global log, with a progress bar.

    Stop the service that owns the projection first: the rebuild replaces its read model.
    """
    import importlib
    from functools import partial

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from carbon.projection_runtime import account_client, default_partitions, replay_in_partitions

    if projection not in PROJECTIONS:
        err.print(f"[red]unknown projection {projection!r}; choose one of: {', '.join(PROJECTIONS)}[/red]")
        raise typer.Exit(2)
    settings = PlatformSettings()
    url = database_url or os.environ.get(PROJECTIONS[projection]) or f"sqlite:///{settings.data_dir / (projection + '.db')}"
    module = importlib.import_module(f"services.{projection}.projection")
    projector = module.create_projector(url)
    cuttable = projector.projection.rebuilt_in_partitions
    if partitions and partitions > 1 and not cuttable:
        err.print(f"[yellow]{projection} is rebuilt in one process: its read model is not kept stream by stream[/yellow]")
    processes = (partitions or default_partitions(projector, url)) if cuttable else 1
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.completed:,} events"),
                  TextColumn("position {task.fields[position]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"replaying {projection}" + (f" in {processes} processes" if processes > 1 else ""),
                                 total=None, position="-")
        applied = replay_in_partitions(projector, partial(module.create_projector, url),
                                       partial(account_client, settings, projection), processes,
                                       on_batch=lambda r: progress.update(task, advance=r.applied, position=r.position))
    console.print(f"[green]{projection} rebuilt[/green]: {applied:,} events applied, position {projector.position()}")
    projector.engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    app()
