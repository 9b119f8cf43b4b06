"""The four services on real loopback ports (SQLite, store transport): helpers shared by the security
suites (no tests here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carbon.auth import mint_token
from contracts.types import uscc_check_character
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app as create_accounting_app
from services.accounting.settings import AccountingSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.settings import DisclosureSettings
from services.rating.api import create_app as create_rating_app
from services.rating.settings import RatingSettings
from tests.live import serve

SECRET = "security-suite-secret-that-must-never-reach-a-log"
SERVICES = ("account", "accounting", "rating", "disclosure")


def uscc(n: int) -> str:
    first17 = f"9151010{n:010d}"
    return first17 + uscc_check_character(first17)


class Receiver:
    """A partner's webhook endpoint: accepts everything, keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.bodies.append(await request.body())
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


class Platform:
    def __init__(self, urls: dict[str, str], apps: dict[str, Any], receiver: Receiver) -> None:
        self.urls, self.apps, self.receiver = urls, apps, receiver
        self.http = {name: httpx.Client(base_url=url, timeout=60) for name, url in urls.items()}
        self.tokens: list[str] = []  # every bearer token this suite sent, to look for in logs

    def close(self) -> None:
        for client in self.http.values():
            client.close()

    def auth(self, role: str, sub: str) -> dict[str, str]:
        token = mint_token(SECRET, sub=sub, role=role)
        self.tokens.append(token)
        return {"Authorization": f"Bearer {token}"}

    def call(self, service: str, method: str, path: str, role: str | None = None, sub: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers.update(self.auth(role, sub or role))
        return self.http[service].request(method, path, headers=headers, **kwargs)

    # ---- account -----------------------------------------------------------------------------

    def register(self, enterprise: str, industry: str = "C3011") -> None:
        body = {"uscc": enterprise, "name": "Sichuan Example Co., Ltd.", "industry": industry, "region": "510100"}
        response = self.call("account", "POST", "/v1/enterprises", "operator", "ops", json=body)
        assert response.status_code == 201, response.text

    def append(self, enterprise: str, *events: dict, role: str = "enterprise", sub: str | None = None) -> dict:
        response = self.call("account", "POST", f"/v1/enterprises/{enterprise}/events", role, sub or enterprise,
                             json={"expected_version": None, "events": list(events)})
        assert response.status_code == 201, response.text
        return response.json()

    def grant(self, enterprise: str, grantee: str, scopes: list[str], expires_at: datetime | None = None) -> str:
        body = {"grantee": grantee, "scopes": scopes, "purpose": "security suite",
                "expires_at": (expires_at or datetime.now(UTC) + timedelta(days=30)).isoformat()}
        response = self.call("account", "POST", f"/v1/enterprises/{enterprise}/consents", "enterprise", enterprise,
                             json=body)
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    def revoke(self, enterprise: str, consent_id: str) -> None:
        response = self.call("account", "DELETE", f"/v1/enterprises/{enterprise}/consents/{consent_id}",
                             "enterprise", enterprise)
        assert response.status_code == 200, response.text

    def stream(self, enterprise: str) -> list[dict]:
        response = self.call("account", "GET", f"/v1/enterprises/{enterprise}/events", "operator", "ops",
                             params={"limit": 1000})
        assert response.status_code == 200, response.text
        return response.json()["events"]

    def log(self) -> list[dict]:
        out: list[dict] = []
        after = None
        while True:
            params = {"limit": 1000} | ({"after": after} if after is not None else {})
            page = self.call("account", "GET", "/v1/events", "operator", "ops", params=params).json()["events"]
            if not page:
                return out
            out.extend(page)
            after = page[-1]["position"]

    def sync(self, timeout_s: float = 30) -> None:
        """Wait (bounded) until rating and disclosure have applied everything the account committed."""
        log = self.log()
        head = log[-1]["position"] if log else 0
        deadline = time.monotonic() + timeout_s
        for name in ("rating", "disclosure"):
            while (self.apps[name].state.projector.position() or 0) < head:
                assert time.monotonic() < deadline, f"the {name} projection did not catch up"
                time.sleep(0.02)

    # ---- disclosure ----------------------------------------------------------------------------

    def subscribe(self, partner: str, enterprise_ids: list[str] | None = None,
                  event_types: list[str] | None = None) -> tuple[str, str]:
        body: dict[str, Any] = {"callback_url": self.receiver.url, "event_types": event_types or ["ActivityReported"]}
        if enterprise_ids is not None:
            body["enterprise_ids"] = enterprise_ids
        response = self.call("disclosure", "POST", "/v1/subscriptions", "partner", partner, json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        return created["subscription_id"], created["secret"]


@contextmanager
def platform_stack(tmp_path: Path) -> Iterator[Platform]:
    def db(name: str) -> str:
        return f"sqlite:///{tmp_path / name}"

    common = {"jwt_secret": SECRET, "data_dir": tmp_path}
    with ExitStack() as stack:
        receiver = Receiver()
        receiver.url = stack.enter_context(serve(receiver.app())) + "/hook"
        apps: dict[str, Any] = {"account": create_account_app(AccountSettings(database_url=db("account.db"), **common))}
        urls = {"account": stack.enter_context(serve(apps["account"]))}
        apps["accounting"] = create_accounting_app(AccountingSettings(
            database_url=db("accounting.db"), account_url=urls["account"], **common))
        urls["accounting"] = stack.enter_context(serve(apps["accounting"]))
        apps["rating"] = create_rating_app(RatingSettings(database_url=db("rating.db"), account_url=urls["account"],
                                                          **common))
        urls["rating"] = stack.enter_context(serve(apps["rating"]))
        apps["disclosure"] = create_disclosure_app(DisclosureSettings(
            database_url=db("disclosure.db"), account_url=urls["account"], rating_url=urls["rating"],
            webhook_allow_private=True, webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2,
            webhook_poll_interval_s=0.05, **common))
        urls["disclosure"] = stack.enter_context(serve(apps["disclosure"]))
        platform = Platform(urls, apps, receiver)
        stack.callback(platform.close)
        yield platform
