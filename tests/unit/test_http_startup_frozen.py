"""A started service's long-lived objects are kept out of full collections, and handed back at shutdown."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi.testclient import TestClient

from carbon.http import create_service_app


def test_objects_that_exist_once_started_are_frozen_until_shutdown() -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app):
        seen.append("started")
        yield
        seen.append("stopped")

    app = create_service_app(title="Carbon example", description="x", jwt_secret="s" * 32, max_body_bytes=1024,
                             ready=lambda: None, lifespan=lifespan)
    frozen_before = gc.get_freeze_count()
    with TestClient(app) as client:
        assert seen == ["started"]
        assert gc.get_freeze_count() > frozen_before  # the service's own lifespan ran first, then the freeze
        assert client.get("/healthz").json() == {"status": "ok"}
    assert seen == ["started", "stopped"] and gc.get_freeze_count() == 0
