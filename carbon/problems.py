"""RFC 9457 problem details for every error the platform returns (SPEC §5)."""

from __future__ import annotations

import logging
from typing import Any, Literal

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from carbon.errors import AppError, Conflict, Forbidden, Invalid, NotFound, Unavailable
from contracts.errors import error_message, field_path

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("carbon.http")


class Problem(Exception):
    """An error answer: raise it anywhere below an endpoint."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        slug: str | None = None,
        reason: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.reason, self.errors, self.headers, self.extra = reason, errors, headers, extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.reason is not None:
            body["reason"] = self.reason
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def invalid(errors: list[dict[str, str]], detail: str | None = None) -> Problem:
    """422 naming each bad field."""
    fields = ", ".join(e["field"] for e in errors)
    return Problem(422, "Unprocessable Content", detail or f"invalid input: {fields}", slug="invalid", errors=errors)


def not_found(detail: str) -> Problem:
    return Problem(404, "Not Found", detail, slug="not-found")


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "Conflict", detail, slug="conflict", **extra)


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(str(request.url.path) if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def from_app_error(exc: AppError) -> Problem:
    if isinstance(exc, Forbidden):
        return Problem(403, "Forbidden", exc.detail, slug=exc.reason.replace("_", "-"), reason=exc.reason)
    if isinstance(exc, Invalid):
        return invalid(exc.errors)
    if isinstance(exc, NotFound):
        return not_found(str(exc))
    if isinstance(exc, Conflict):
        return conflict(str(exc))
    if isinstance(exc, Unavailable):
        return Problem(503, "Service Unavailable", str(exc), slug="unavailable", headers={"Retry-After": "1"})
    raise TypeError(f"unmapped application error {type(exc).__name__}")


# ---- how problems are documented in each service's OpenAPI document ---------------------------

class ProblemBody(BaseModel):
    """An RFC 9457 problem; extension members (e.g. a conflict's current version) may follow."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(examples=["/problems/not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = None


class ProblemFieldError(BaseModel):
    field: str = Field(examples=["events[1].data.quantity_t"])
    message: str


class ForbiddenProblemBody(ProblemBody):
    model_config = ConfigDict(title="ForbiddenProblem")

    reason: Literal["no_consent", "consent_revoked", "consent_expired", "scope_missing", "wrong_role", "not_owner"]


class ValidationProblemBody(ProblemBody):
    model_config = ConfigDict(title="ValidationProblem")

    errors: list[ProblemFieldError] = Field(min_length=1)


_PROBLEM_MODELS = {"Problem": ProblemBody, "ForbiddenProblem": ForbiddenProblemBody, "ValidationProblem": ValidationProblemBody}
_REF = "#/components/schemas/{model}"


def _problem_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in _PROBLEM_MODELS.values()], ref_template=_REF)
    defs = top["$defs"]
    # Components are named after the documented titles, not the Python class names.
    return {name: defs[model.__name__] for name, model in _PROBLEM_MODELS.items()} | {
        "ProblemFieldError": defs["ProblemFieldError"]}


_DESCRIPTIONS = {400: "The body is not valid JSON", 401: "Missing, invalid or expired token",
                 403: "Not allowed; `reason` says why", 404: "Unknown resource", 409: "Conflict with the current state",
                 413: "Request body over the limit", 422: "Invalid input; `errors` names each bad field",
                 502: "A platform service refused the request", 503: "A service this one needs is unavailable"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for routers and routes: each status documented as problem+json (SPEC §5)."""
    def schema(status: int) -> str:
        return {403: "ForbiddenProblem", 422: "ValidationProblem"}.get(status, "Problem")

    return {status: {"description": _DESCRIPTIONS.get(status, _TITLES.get(status, "Error")),
                     "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(model=schema(status))}}}}
            for status in statuses}


# What every authenticated operation may answer; routes add the statuses particular to them.
AUTHENTICATED = (401, 403, 422)
WITH_BODY = (400, 413)


def _document_problems(app: FastAPI) -> None:
    """Add the problem schemas that ``problem_responses`` refers to to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {}).update(_problem_schemas())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DATABASE_UNAVAILABLE = "the service's database is unavailable; try again shortly"


def install_problem_handlers(app: FastAPI) -> None:
    _document_problems(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(from_app_error(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI prefixes where the value came from ("body", "query", …): the field name is what follows.
        errors = [{"field": field_path(e.get("loc", ())[1:]), "message": error_message(e)} for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem_response(Problem(400, "Bad Request", "the request body is not valid JSON", slug="bad-request"), request)
        return problem_response(invalid(errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(Problem(exc.status_code, title, detail, headers=getattr(exc, "headers", None)), request)

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is down, restarting or saturated: a retry may succeed (appends carry an
        # Idempotency-Key for exactly that). Not a bug, so a 503 rather than a 500; the cause is logged.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    type(getattr(exc, "orig", None) or exc).__name__)
        return problem_response(Problem(503, "Service Unavailable", DATABASE_UNAVAILABLE, slug="unavailable",
                                        headers={"Retry-After": "1"}), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it, and answer without leaking internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "Internal Server Error", "an unexpected error occurred", slug="internal"), request)
