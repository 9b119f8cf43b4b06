"""Reporting third-party reads to the rating service's access log, where the enterprise sees them.

A third party's read is logged before the data is served; when the log cannot be written the read
is refused (an unlogged read of an enterprise's data is worse than a refused one).
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from carbon.auth import mint_token
from contracts import Role

SERVICE_NAME = "disclosure"


class AccessLogUnavailable(Exception):
    """The access log did not record the read."""


class AccessLog:
    def __init__(self, base_url: str, *, jwt_secret: str, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._secret = jwt_secret
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def record(self, enterprise_id: str, *, party: str, role: str, what: str, consent_id: str | None,
               supervisory: bool) -> None:
        token = mint_token(self._secret, sub=SERVICE_NAME, role=Role.SERVICE, ttl=timedelta(minutes=5))
        body = {"party": party, "role": role, "what": what, "consent_id": consent_id, "supervisory": supervisory}
        try:
            response = self._http.post(f"/v1/access-log/{enterprise_id}", json=body,
                                       headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise AccessLogUnavailable(f"the access log is unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise AccessLogUnavailable(f"the access log answered {response.status_code}")
