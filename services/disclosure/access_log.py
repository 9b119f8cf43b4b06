"""Reporting third-party reads to the rating service's access log, where the enterprise sees them.

A third party's read is logged before the data is served; when the log cannot be written the read
is refused (an unlogged read of an enterprise's data is worse than a refused one).
"""

from __future__ import annotations

import httpx

from carbon.auth import MintedServiceTokens, ServiceTokens, ServiceTokenUnavailable

SERVICE_NAME = "disclosure"


class AccessLogUnavailable(Exception):
    """The access log did not record the read."""


class AccessLog:
    def __init__(self, base_url: str, *, jwt_secret: str | None = None, tokens: ServiceTokens | None = None,
                 timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        if tokens is None:
            if not jwt_secret:
                raise ValueError("the access log client needs service tokens or an HS256 secret")
            tokens = MintedServiceTokens(jwt_secret, SERVICE_NAME)
        self._tokens = tokens
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, trust_env=False)

    def close(self) -> None:
        self._http.close()
        close_tokens = getattr(self._tokens, "close", None)
        if close_tokens is not None:
            close_tokens()

    def record(self, enterprise_id: str, *, party: str, role: str, what: str, consent_id: str | None,
               supervisory: bool) -> None:
        body = {"party": party, "role": role, "what": what, "consent_id": consent_id, "supervisory": supervisory}
        for attempt in (1, 2):
            try:
                token = self._tokens.token()
            except ServiceTokenUnavailable as exc:
                raise AccessLogUnavailable(f"no service token: {exc}") from None
            try:
                response = self._http.post(f"/v1/access-log/{enterprise_id}", json=body,
                                           headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise AccessLogUnavailable(f"the access log is unreachable: {type(exc).__name__}") from exc
            # A refused token may have been revoked or signed with a retired key: get a fresh one once.
            if response.status_code != 401 or attempt == 2:
                break
            self._tokens.invalidate()
        if response.status_code >= 300:
            raise AccessLogUnavailable(f"the access log answered {response.status_code}")
