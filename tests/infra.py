"""How tests reach a real PostgreSQL server.

Order of preference:
1. ``CARBON_TEST_DATABASE_URL`` (any server you point at; must allow CREATE DATABASE);
2. a throwaway ``postgres:16-alpine`` container when a Docker engine answers;
3. the local server managed by ``deploy/local/postgres.sh``.
If none works, a ``RuntimeError`` says what was tried: tests needing PostgreSQL fail
rather than skip, so a green run always means they ran.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import re
import subprocess
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SH = REPO_ROOT / "deploy" / "local" / "postgres.sh"
URL_ENV = "CARBON_TEST_DATABASE_URL"
DOCKER_IMAGE = "postgres:16-alpine"
# initdb on a cold machine plus a contended flock under pytest-xdist.
SCRIPT_TIMEOUT_S = 300



def discover(what: str, env_var: str, attempts: list, remedies: list[str]) -> str:
    """The first address found: ``env_var``, else each attempt in order (each notes why it failed).

    Raises RuntimeError listing everything tried and how to fix it: tests never skip silently.
    """
    tried: list[str] = []
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    tried.append(f"{env_var} is not set")
    for attempt in attempts:
        found = attempt(tried)
        if found:
            return found
    raise RuntimeError(
        f"No {what} for the tests. Tried, in order:\n"
        + "".join(f"  - {line}\n" for line in tried)
        + "Fix one of:\n"
        + "".join(f"  - {remedy}\n" for remedy in remedies)
    )


def cached_per_process(find):
    """Resolve once per process; a failure is cached too, so a missing server costs one attempt
    per worker instead of one per test."""
    lock = threading.Lock()
    cache: list = []

    def resolved() -> str:
        with lock:
            if not cache:
                try:
                    cache.append(find())
                except RuntimeError as exc:
                    cache.append(exc)
            if isinstance(cache[0], Exception):
                raise RuntimeError(str(cache[0])) from cache[0]
            return cache[0]

    resolved.__doc__ = find.__doc__
    return resolved


def find_server() -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a database with admin rights."""
    url = discover("PostgreSQL server", URL_ENV, [_from_docker, _from_local_script], [
        f"export {URL_ENV}=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (a role allowed to CREATE DATABASE);",
        "start a Docker engine (the tests then run postgres:16-alpine);",
        "install PostgreSQL (Debian: apt-get install -y postgresql) and run deploy/local/postgres.sh start.",
    ])
    return to_sqlalchemy_url(url)


postgres_server_url = cached_per_process(find_server)


def docker_answers(tried: list[str]) -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked first: docker-py leaks a socket (ResourceWarning) when the file is missing.
        tried.append(f"Docker: no engine socket at {host}")
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # no SDK, dead socket, daemon down: all mean "no Docker"
            tried.append(f"Docker: no engine answered at {host} ({one_line(exc)})")
            return False
        finally:
            gc.collect()  # finalise leaked sockets while their warning is still ignored
    return True


def _from_docker(tried: list[str]) -> str | None:
    if not docker_answers(tried):
        return None
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(DOCKER_IMAGE, driver="psycopg")
        container.start()
    except Exception as exc:  # e.g. image pull blocked; fall back to the local server
        tried.append(f"Docker: engine answered but {DOCKER_IMAGE} did not start ({one_line(exc)})")
        return None
    atexit.register(stop_quietly, container)
    return to_sqlalchemy_url(container.get_connection_url())


def stop_quietly(container: object) -> None:
    with contextlib.suppress(Exception):
        container.stop()  # type: ignore[attr-defined]


def _from_local_script(tried: list[str]) -> str | None:
    line = run_start_script(POSTGRES_SH, tried)
    return None if line is None else to_sqlalchemy_url(line)


def run_start_script(script: Path, tried: list[str], timeout: float = SCRIPT_TIMEOUT_S) -> str | None:
    """Run ``script start``; its last stdout line is the address. On failure, note why in ``tried``."""
    if not script.is_file():
        tried.append(f"{rel(script)}: not found")
        return None
    try:
        done = subprocess.run(
            ["bash", str(script), "start"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        tried.append(f"{rel(script)} start: {one_line(exc)}")
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        tried.append(
            f"{rel(script)} start: exit {done.returncode}"
            + (":\n      " + tail.replace("\n", "\n      ") if tail else "")
        )
        return None
    # The server stays up for later runs and other workers; the script's stop ends it.
    return lines[-1].strip()


def to_sqlalchemy_url(url: str) -> str:
    """Any PostgreSQL URL (libpq or SQLAlchemy style) as ``postgresql+psycopg://``."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.get_backend_name() != "postgresql":
        raise RuntimeError(f"{_redact(url)} is not a PostgreSQL URL")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL as psycopg/libpq wants it (no ``+driver`` part)."""
    return make_url(to_sqlalchemy_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,29}")


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "carbon_t") -> Iterator[str]:
    """Create an empty, uniquely named database; yield its SQLAlchemy URL; drop it.

    Unique names let pytest-xdist workers share one server without clashing.
    The drop uses ``WITH (FORCE)`` so connections a test leaked cannot block it.
    """
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"prefix must be a lowercase identifier of at most 30 characters, got {prefix!r}")
    name = f"{prefix}_{uuid.uuid4().hex}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(to_sqlalchemy_url(server_url)).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _redact(url: str) -> str:
    with contextlib.suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return "<unparseable URL>"
