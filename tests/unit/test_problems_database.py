"""A database that is down answers 503 with Retry-After on every service, never a 500 (a bug's status)."""

from __future__ import annotations

import httpx
import sqlalchemy.exc

from carbon.http import create_service_app
from tests.live import serve


def app_failing_with(error: Exception):
    app = create_service_app(title="Carbon test", description="", jwt_secret="x" * 32, max_body_bytes=1024,
                             ready=lambda: None, service_name="test")

    @app.get("/fails")
    def fails() -> None:
        raise error

    return app


def test_a_database_outage_is_a_503_problem_with_retry_after() -> None:
    refused = sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    for error in (refused, sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("closed")),
                  sqlalchemy.exc.TimeoutError("QueuePool limit reached")):
        with serve(app_failing_with(error)) as url:
            response = httpx.get(f"{url}/fails")
        assert response.status_code == 503, type(error)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["status"] == 503 and "database is unavailable" in body["detail"]
        assert "refused" not in body["detail"]  # the driver's message stays in the log


def test_other_database_errors_remain_internal_errors() -> None:
    duplicate = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    with serve(app_failing_with(duplicate)) as url:
        response = httpx.get(f"{url}/fails")
    assert response.status_code == 500
    assert response.json()["detail"] == "an unexpected error occurred"
