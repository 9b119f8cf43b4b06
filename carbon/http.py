"""The HTTP skeleton every service shares: problem+json errors, body limit, health and readiness."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carbon import telemetry
from carbon.auth import SecretVerifier, TokenVerifier, document_bearer_scheme
from carbon.problems import PROBLEM_JSON, Problem, install_problem_handlers, problem_responses


def json_bytes_response(document: Any, status_code: int = 200) -> Response:
    """A JSON answer encoded with orjson, skipping FastAPI's response-model pass.

    For large pages (a thousand envelopes) validating the answer against its model costs more than
    reading it; the route keeps ``response_model`` for its OpenAPI document, and its tests check
    the answers against that schema.
    """
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


class BodyLimitMiddleware:
    """Refuse request bodies above a limit with 413, whether declared by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        if declared is None and b"transfer-encoding" not in headers and scope.get("http_version") in ("1.0", "1.1"):
            # HTTP/1 with neither header: the request has no body (RFC 9112 §6.3), nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        # The slug the problem handler gives the streamed case too, so both answers have one type.
        problem = Problem(413, "Content Too Large", _too_large_detail(self.max_bytes), slug="content-too-large")
        body = orjson.dumps(problem.body(scope.get("path")))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _too_large_detail(max_bytes: int) -> str:
    return f"request bodies are limited to {max_bytes} bytes"


class _TooLarge(StarletteHTTPException):
    """An HTTP error, so FastAPI's body parsing passes it on as a 413 instead of a 400 parse error."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large_detail(max_bytes))


@asynccontextmanager
async def startup_frozen(app: FastAPI,
                         lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None) -> AsyncIterator[None]:
    """The service's own lifespan, with what exists once it has started moved out of the collector's way.

    Python's full (generation 2) collections scan every tracked object. A started service holds
    hundreds of thousands that live as long as it does (modules, schemas, the app, the SQL
    compiler's caches), and scanning them paused every request for 40–130 ms several times a
    minute under load. Frozen (``gc.freeze``), they are no longer scanned; at shutdown they are
    handed back, so a process that starts many apps (the tests) frees them, and with them whatever
    garbage the start left (not collected first: a full collection per start would cost the tests
    more than that garbage weighs).
    """
    async with lifespan(app) if lifespan is not None else nullcontext():
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()


def create_service_app(
    *,
    title: str,
    description: str,
    jwt_secret: str | None = None,
    verifier: TokenVerifier | None = None,
    max_body_bytes: int,
    ready: Callable[[], None],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    service_name: str | None = None,
) -> FastAPI:
    """A FastAPI app with the platform's conventions; ``ready`` raises when the service cannot serve.

    Tokens are checked by ``verifier`` (``PlatformSettings.token_verifier()``), else with the HS256
    ``jwt_secret``.
    """
    if verifier is None:
        if not jwt_secret:
            raise ValueError("a service needs a token verifier or an HS256 secret")
        verifier = SecretVerifier(jwt_secret)
    telemetry.configure(service_name or title.split()[-1].lower())
    telemetry.instrument_http_clients()
    app = FastAPI(title=title, description=description, version="1",
                  lifespan=lambda app: startup_frozen(app, lifespan), telemetry=telemetry.http_telemetry())
    app.state.jwt_secret = jwt_secret
    app.state.token_verifier = verifier
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the service's database answers",
             responses=problem_responses(503))
    def readyz() -> JSONResponse:
        try:
            ready()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problem = Problem(503, "Service Unavailable", f"not ready: {type(exc).__name__}", slug="not-ready")
            return JSONResponse(problem.body("/readyz"), status_code=503, media_type=PROBLEM_JSON)
        return JSONResponse({"status": "ready"})

    telemetry.serve_metrics(app)
    document_bearer_scheme(app)
    return app
