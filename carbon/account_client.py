"""How the other services reach the account service over HTTP, each as its own `service` identity."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from carbon.auth import MintedServiceTokens, ServiceTokens, ServiceTokenUnavailable
from carbon.errors import Conflict, Forbidden, Invalid, NotFound
from carbon.eventstore import Partition


class AccountUnavailable(Exception):
    """The account service did not answer usefully (down, 5xx): retry later."""


class AccountClient:
    """``tokens`` is the calling service's identity (``PlatformSettings.service_tokens``); with only
    ``jwt_secret`` it mints development tokens as ``service``/``service_name``."""

    def __init__(self, base_url: str, *, jwt_secret: str | None = None, service_name: str = "service",
                 tokens: ServiceTokens | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if tokens is None:
            if not jwt_secret:
                raise ValueError("an account client needs service tokens or an HS256 secret")
            tokens = MintedServiceTokens(jwt_secret, service_name)
        self.service_name, self._tokens = service_name, tokens
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()
        close_tokens = getattr(self._tokens, "close", None)
        if close_tokens is not None:
            close_tokens()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        try:
            token = self._tokens.token()
        except ServiceTokenUnavailable as exc:
            raise AccountUnavailable(f"no service token: {exc}") from None
        return {"Authorization": f"Bearer {token}", **(extra or {})}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        extra = kwargs.pop("headers", None)
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, headers=self._headers(extra), **kwargs)
            except httpx.HTTPError as exc:
                raise AccountUnavailable(f"account service unreachable: {exc}") from exc
            # A refused token may have been revoked or signed with a retired key: get a fresh one once.
            if response.status_code != 401 or attempt == 2:
                break
            self._tokens.invalidate()
        if response.status_code < 300:
            return orjson.loads(response.content)
        problem = _problem(response)
        detail = problem.get("detail", response.text[:200])
        match response.status_code:
            case 403:
                raise Forbidden(problem.get("reason", "wrong_role"), f"account service: {detail}")
            case 404:
                raise NotFound(detail)
            case 409:
                raise Conflict(detail)
            case 422:
                raise Invalid(problem.get("errors") or [{"field": "body", "message": detail}])
            case _:
                raise AccountUnavailable(f"account service answered {response.status_code}: {detail}")

    def append_events(self, enterprise_id: str, events: list[dict[str, Any]], *, expected_version: int | None = None,
                      idempotency_key: str | None = None, traceparent: str | None = None) -> dict[str, Any]:
        headers = {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if traceparent:
            headers["traceparent"] = traceparent
        return self._call("POST", f"/v1/enterprises/{enterprise_id}/events",
                          json={"expected_version": expected_version, "events": events}, headers=headers)

    def read_log(self, after: int | None, limit: int = 1000) -> list[dict[str, Any]]:
        return self.read_log_page(after, limit)[0]

    def read_log_page(self, after: int | None, limit: int = 1000,
                      partition: Partition | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """A page of the global log (or of one partition of it) and the position to read after next."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if partition is not None:
            params["partition"], params["partitions"] = partition.index, partition.count
        page = self._call("GET", "/v1/events", params=params)
        return page["events"], page["next"]


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
