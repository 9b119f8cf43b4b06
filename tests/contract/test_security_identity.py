"""Production identity: RS256/ES256 tokens of an identity provider verified against its JWKS, key
rotation, no algorithm confusion, and services calling each other with client-credentials tokens.

The identity provider is a tiny Starlette app on loopback serving a JWKS and an OAuth 2.0 token
endpoint, like Keycloak's ``/protocol/openid-connect/certs`` and ``/token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from carbon.account_client import AccountClient, AccountUnavailable
from carbon.auth import ClientCredentialsTokens, JwksVerifier, ServiceTokenUnavailable, mint_token
from carbon.problems import Problem
from carbon.settings import PlatformSettings
from contracts.examples import CEMENT_MAKER_USCC
from services.account.api import create_app as create_account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app as create_accounting_app
from services.accounting.settings import AccountingSettings
from services.disclosure.api import create_app as create_disclosure_app
from services.disclosure.settings import DisclosureSettings
from services.rating.api import create_app as create_rating_app
from services.rating.settings import RatingSettings
from tests.live import free_port, serve

ISSUER = "https://id.example.com/realms/carbon"
AUDIENCE = "carbon-platform"
HS_SECRET = "the-development-secret-also-configured-in-jwks-mode"
CEMENT = CEMENT_MAKER_USCC


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def private_keys() -> dict[str, Any]:
    return {
        "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa-2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa-3": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec-1": ec.generate_private_key(ec.SECP256R1()),
    }


class IdentityProvider:
    """Publishes some of its keys and issues tokens, like an OpenID provider."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = keys
        self.published = ["rsa-1", "rsa-2", "ec-1"]
        self.signing_kid = "rsa-1"
        self.expires_in = 300
        # client id -> (secret, the service it is)
        self.clients = {f"carbon-{name}": (f"{name}-client-secret", name)
                        for name in ("accounting", "rating", "disclosure")}
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    @staticmethod
    def alg(kid: str) -> str:
        return "ES256" if kid.startswith("ec") else "RS256"

    def jwk(self, kid: str) -> dict[str, Any]:
        public = self.keys[kid].public_key()
        algorithm = jwt.algorithms.ECAlgorithm if kid.startswith("ec") else jwt.algorithms.RSAAlgorithm
        return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig", "alg": self.alg(kid)}

    def public_pem(self, kid: str) -> bytes:
        return self.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    def claims(self, role: str, sub: str, **overrides: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "role": role, "iat": now,
                  "exp": now + timedelta(seconds=self.expires_in), "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, role: str = "operator", sub: str = "ops", kid: str | None = None, **overrides: Any) -> str:
        kid = kid or self.signing_kid
        return jwt.encode(self.claims(role, sub, **overrides), self.keys[kid], algorithm=self.alg(kid),
                          headers={"kid": kid})

    def app(self) -> Starlette:
        async def certs(_: Request) -> JSONResponse:
            with self.lock:
                self.jwks_fetches += 1
                return JSONResponse({"keys": [self.jwk(kid) for kid in self.published]})

        async def token(request: Request) -> JSONResponse:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
            client_id, _, secret = base64.b64decode(encoded or "").decode().partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            with self.lock:
                self.token_requests.append({"client_id": client_id, **form})
            known = self.clients.get(client_id)
            if scheme.lower() != "basic" or known is None or not hmac.compare_digest(known[0], secret):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            access = self.token("service", known[1], azp=client_id)
            return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in})

        return Starlette(routes=[Route("/certs", certs), Route("/token", token, methods=["POST"])])

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/certs"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def client_settings(self, service: str) -> dict[str, Any]:
        client_id = f"carbon-{service}"
        return {"service_token_url": self.token_url, "service_client_id": client_id,
                "service_client_secret": self.clients[client_id][0]}


def jwks_settings(idp: IdentityProvider, **extra: Any) -> dict[str, Any]:
    return {"jwks_url": idp.jwks_url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
            "jwks_refetch_cooldown_seconds": 0, "jwt_secret": HS_SECRET, **extra}


@pytest.fixture
def idp(private_keys) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(private_keys)
    with serve(provider.app()) as url:
        provider.url = url
        yield provider


@pytest.fixture
def account(idp: IdentityProvider, tmp_path) -> Iterator[httpx.Client]:
    app = create_account_app(AccountSettings(database_url=f"sqlite:///{tmp_path / 'account.db'}",
                                             **jwks_settings(idp)))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    return response.json()


# ---- verifying tokens against the JWKS ----------------------------------------------------------

def test_tokens_signed_by_any_published_key_are_accepted_and_the_set_is_cached(idp, account) -> None:
    for kid in ("rsa-1", "rsa-2", "ec-1"):
        response = account.get("/v1/events", headers=bearer(idp.token(kid=kid)))
        assert response.status_code == 200, (kid, response.text)
    for _ in range(5):
        assert account.get("/v1/events", headers=bearer(idp.token(kid="rsa-2"))).status_code == 200
    assert idp.jwks_fetches == 1


def test_a_key_rotated_in_works_at_once_and_one_rotated_out_is_refused(idp, account) -> None:
    old = idp.token(kid="rsa-1")
    assert account.get("/v1/events", headers=bearer(old)).status_code == 200
    idp.published = ["rsa-2", "rsa-3"]  # the provider rotates: rsa-3 in, rsa-1 out
    assert account.get("/v1/events", headers=bearer(idp.token(kid="rsa-3"))).status_code == 200
    assert "not known" in assert_401(account.get("/v1/events", headers=bearer(old)))["detail"]
    assert account.get("/v1/events", headers=bearer(idp.token(kid="rsa-2"))).status_code == 200


def test_a_key_rotated_out_is_refused_once_the_cached_set_expires(idp) -> None:
    verifier = JwksVerifier(idp.jwks_url, issuer=ISSUER, audience=AUDIENCE, cache_seconds=0.3,
                            refetch_cooldown_seconds=60)
    token = idp.token(role="bank", sub="bank-a", kid="rsa-2")
    assert verifier.verify(token).sub == "bank-a"
    idp.published = ["rsa-1"]
    time.sleep(0.5)
    with pytest.raises(Problem) as refused:
        verifier.verify(token)
    assert refused.value.status == 401


def test_unknown_kids_do_not_make_every_request_refetch_the_key_set(idp) -> None:
    verifier = JwksVerifier(idp.jwks_url, issuer=ISSUER, audience=AUDIENCE, refetch_cooldown_seconds=30)
    assert verifier.verify(idp.token()).role.value == "operator"
    for _ in range(20):
        forged = jwt.encode(idp.claims("operator", "ops"), idp.keys["rsa-1"], algorithm="RS256",
                            headers={"kid": str(uuid.uuid4())})
        with pytest.raises(Problem):
            verifier.verify(forged)
    assert idp.jwks_fetches <= 2


def hs256_with_key(idp: IdentityProvider, key: bytes, kid: str = "rsa-1") -> str:
    """The classic confusion: HS256 'signed' with the provider's public key as the HMAC secret."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    claims = idp.claims("operator", "ops")
    claims = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def unsigned(idp: IdentityProvider, alg: str = "none") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in idp.claims("operator", "ops").items()}
    return f"{header}.{b64url(json.dumps(claims).encode())}."


BAD_TOKENS = {
    "wrong-issuer": lambda idp: idp.token(iss="https://evil.example.com/realms/carbon"),
    "no-issuer": lambda idp: idp.token(iss=None),
    "wrong-audience": lambda idp: idp.token(aud="another-api"),
    "no-audience": lambda idp: idp.token(aud=None),
    "expired": lambda idp: idp.token(exp=datetime.now(UTC) - timedelta(minutes=5)),
    "not-yet-valid": lambda idp: idp.token(nbf=datetime.now(UTC) + timedelta(minutes=5)),
    "no-role": lambda idp: idp.token(role=None),
    "unknown-role": lambda idp: idp.token(role="king"),
    "no-sub": lambda idp: idp.token(sub=None),
    "hs256-with-the-dev-secret": lambda idp: mint_token(HS_SECRET, sub="ops", role="operator",
                                                         issuer=ISSUER, audience=AUDIENCE),
    "alg-none": lambda idp: unsigned(idp),
    "alg-None": lambda idp: unsigned(idp, "None"),
    "hs256-with-the-rsa-public-key-pem": lambda idp: hs256_with_key(idp, idp.public_pem("rsa-1")),
    "hs256-with-the-rsa-jwk": lambda idp: hs256_with_key(idp, json.dumps(idp.jwk("rsa-1")).encode()),
    "hs256-with-the-ec-public-key-pem": lambda idp: hs256_with_key(idp, idp.public_pem("ec-1"), "ec-1"),
    "signed-by-an-unpublished-key-claiming-a-published-kid": lambda idp: jwt.encode(
        idp.claims("operator", "ops"), idp.keys["rsa-3"], algorithm="RS256", headers={"kid": "rsa-1"}),
    "rs256-claiming-the-ec-key": lambda idp: jwt.encode(
        idp.claims("operator", "ops"), idp.keys["rsa-1"], algorithm="RS256", headers={"kid": "ec-1"}),
    "es256-claiming-an-rsa-key": lambda idp: jwt.encode(
        idp.claims("operator", "ops"), idp.keys["ec-1"], algorithm="ES256", headers={"kid": "rsa-1"}),
    "no-kid": lambda idp: jwt.encode(idp.claims("operator", "ops"), idp.keys["rsa-1"], algorithm="RS256"),
    "ps256": lambda idp: jwt.encode(idp.claims("operator", "ops"), idp.keys["rsa-1"], algorithm="PS256",
                                    headers={"kid": "rsa-1"}),
    "tampered-payload": lambda idp: tamper(idp.token(role="bank", sub="bank-a")),
}


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "operator"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_tokens_are_refused_in_jwks_mode(idp, account, name: str) -> None:
    token = BAD_TOKENS[name](idp)
    assert_401(account.get("/v1/events", headers=bearer(token)))


def test_an_unreachable_identity_provider_is_a_503_not_a_401() -> None:
    verifier = JwksVerifier(f"http://127.0.0.1:{free_port()}/certs", issuer=ISSUER, audience=AUDIENCE, timeout=2)
    token = jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, "k" * 32, algorithm="HS256")
    with pytest.raises(Problem) as hs:  # refused before any fetch
        verifier.verify(token)
    assert hs.value.status == 401
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, rsa_key, algorithm="RS256",
                       headers={"kid": "k1"})
    with pytest.raises(Problem) as down:
        verifier.verify(token)
    assert down.value.status == 503 and down.value.headers == {"Retry-After": "5"}


def test_configurable_claim_names_for_providers_that_cannot_set_sub(idp) -> None:
    verifier = JwksVerifier(idp.jwks_url, issuer=ISSUER, audience=AUDIENCE, subject_claim="carbon_sub",
                            role_claim="carbon_role")
    token = idp.token(role=None, sub="5f0c-uuid-of-a-user", carbon_sub=CEMENT, carbon_role="enterprise")
    principal = verifier.verify(token)
    assert (principal.sub, principal.role.value) == (CEMENT, "enterprise")
    with pytest.raises(Problem):
        verifier.verify(idp.token())  # lacks carbon_sub/carbon_role


# ---- settings ----------------------------------------------------------------------------------

def test_jwks_mode_needs_issuer_audience_and_a_service_identity() -> None:
    with pytest.raises(ValidationError, match="CARBON_JWT_ISSUER"):
        PlatformSettings(jwks_url="https://id.example.com/certs", jwt_audience=AUDIENCE)
    with pytest.raises(ValidationError, match="CARBON_JWT_ISSUER"):
        PlatformSettings(jwks_url="https://id.example.com/certs", jwt_issuer=ISSUER)
    with pytest.raises(ValidationError, match="go together"):
        PlatformSettings(service_token_url="https://id.example.com/token", service_client_id="carbon-rating")
    settings = PlatformSettings(jwks_url="https://id.example.com/certs", jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                                jwt_secret=HS_SECRET)
    assert isinstance(settings.token_verifier(), JwksVerifier)
    with pytest.raises(ValueError, match="cannot mint"):
        settings.service_tokens("rating")
    assert HS_SECRET not in repr(settings)


def test_the_services_refuse_to_start_in_jwks_mode_without_a_client(idp, tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot mint"):
        create_accounting_app(AccountingSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", **jwks_settings(idp)))
    with pytest.raises(ValueError, match="cannot mint"):
        create_disclosure_app(DisclosureSettings(database_url=f"sqlite:///{tmp_path / 'd.db'}", **jwks_settings(idp)))


def test_hs256_mode_checks_issuer_and_audience_when_set(tmp_path) -> None:
    settings = PlatformSettings(jwt_secret=HS_SECRET, jwt_issuer="carbon-dev", jwt_audience="carbon")
    verifier = settings.token_verifier()
    minted = settings.service_tokens("rating").token()
    assert (verifier.verify(minted).sub, verifier.verify(minted).role.value) == ("rating", "service")
    for token in (mint_token(HS_SECRET, sub="ops", role="operator"),
                  mint_token(HS_SECRET, sub="ops", role="operator", issuer="carbon-dev", audience="other")):
        with pytest.raises(Problem):
            verifier.verify(token)


# ---- the client-credentials grant ------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_credentials_tokens_are_reused_until_shortly_before_expiry(idp) -> None:
    clock = FakeClock()
    tokens = ClientCredentialsTokens(idp.token_url, "carbon-rating", "rating-client-secret", scope="carbon",
                                     clock=clock)
    try:
        first = tokens.token()
        assert tokens.token() == first and len(idp.token_requests) == 1
        assert idp.token_requests[0] == {"client_id": "carbon-rating", "grant_type": "client_credentials",
                                         "scope": "carbon"}
        claims = jwt.decode(first, idp.keys["rsa-1"].public_key(), algorithms=["RS256"], audience=AUDIENCE)
        assert (claims["sub"], claims["role"]) == ("rating", "service")
        clock.now += idp.expires_in - 31  # still more than the renewal margin left
        assert tokens.token() == first and len(idp.token_requests) == 1
        clock.now += 2
        assert tokens.token() != first and len(idp.token_requests) == 2
        tokens.invalidate()
        tokens.token()
        assert len(idp.token_requests) == 3
    finally:
        tokens.close()


def test_short_lived_client_credentials_tokens_are_renewed_before_half_their_life(idp) -> None:
    idp.expires_in = 20
    clock = FakeClock()
    tokens = ClientCredentialsTokens(idp.token_url, "carbon-rating", "rating-client-secret", clock=clock)
    try:
        tokens.token()
        clock.now += 9
        tokens.token()
        assert len(idp.token_requests) == 1
        clock.now += 2
        tokens.token()
        assert len(idp.token_requests) == 2
    finally:
        tokens.close()


def test_client_credentials_failures_are_retryable_unavailability(idp, account) -> None:
    wrong = ClientCredentialsTokens(idp.token_url, "carbon-rating", "not-the-secret")
    down = ClientCredentialsTokens(f"http://127.0.0.1:{free_port()}/token", "carbon-rating", "x", timeout=2)
    for tokens in (wrong, down):
        with pytest.raises(ServiceTokenUnavailable) as refused:
            tokens.token()
        assert "not-the-secret" not in str(refused.value)
        client = AccountClient(str(account.base_url), tokens=tokens, service_name="rating")
        with pytest.raises(AccountUnavailable):
            client.read_log(None)
        client.close()


def test_a_service_client_recovers_when_its_cached_token_is_refused(idp, account) -> None:
    tokens = ClientCredentialsTokens(idp.token_url, "carbon-rating", "rating-client-secret")
    client = AccountClient(str(account.base_url), tokens=tokens, service_name="rating")
    try:
        assert client.read_log(None) == []
        idp.published, idp.signing_kid = ["rsa-3"], "rsa-3"  # the cached token's key is retired
        # The account learns of the rotation from the first token signed with the new key.
        assert account.get("/v1/events", headers=bearer(idp.token(kid="rsa-3"))).status_code == 200
        assert client.read_log(None) == []
        assert len(idp.token_requests) == 2
    finally:
        client.close()


# ---- the whole platform in JWKS mode --------------------------------------------------------

def test_services_call_each_other_with_their_own_client_credentials(idp, tmp_path) -> None:
    def db(name: str) -> str:
        return f"sqlite:///{tmp_path / name}"

    with ExitStack() as stack:
        account_url = stack.enter_context(serve(create_account_app(
            AccountSettings(database_url=db("account.db"), **jwks_settings(idp)))))
        rating_app = create_rating_app(RatingSettings(database_url=db("rating.db"), account_url=account_url,
                                                      **jwks_settings(idp), **idp.client_settings("rating")))
        rating_url = stack.enter_context(serve(rating_app))
        disclosure_app = create_disclosure_app(DisclosureSettings(
            database_url=db("disclosure.db"), account_url=account_url, rating_url=rating_url,
            webhook_allow_private=True, **jwks_settings(idp), **idp.client_settings("disclosure")))
        disclosure_url = stack.enter_context(serve(disclosure_app))
        accounting_url = stack.enter_context(serve(create_accounting_app(AccountingSettings(
            database_url=db("accounting.db"), account_url=account_url, **jwks_settings(idp),
            **idp.client_settings("accounting")))))
        http = stack.enter_context(httpx.Client(timeout=30))

        def as_(role: str, sub: str) -> dict[str, str]:
            return bearer(idp.token(role=role, sub=sub))

        registered = http.post(f"{account_url}/v1/enterprises", headers=as_("operator", "ops"), json={
            "uscc": CEMENT, "name": "Sichuan Example Cement", "industry": "C3011", "region": "510100"})
        assert registered.status_code == 201, registered.text
        # accounting → account, as service/accounting
        recorded = http.post(f"{accounting_url}/v1/calculations", headers=as_("enterprise", CEMENT), json={
            "enterprise_id": CEMENT, "period": "2024", "record": True,
            "activities": [{"category": "fuel_combustion", "fuel": "natural_gas", "quantity": "10",
                            "unit": "10^4 Nm3"}]})
        assert recorded.status_code == 200, recorded.text
        stream = http.get(f"{account_url}/v1/enterprises/{CEMENT}/events",
                          headers=as_("enterprise", CEMENT)).json()["events"]
        assert stream[-1]["type"] == "EmissionRecorded"
        assert stream[-1]["metadata"]["actor"] == {"sub": "accounting", "role": "service"}
        granted = http.post(f"{account_url}/v1/enterprises/{CEMENT}/consents", headers=as_("enterprise", CEMENT),
                            json={"grantee": "bank-a", "scopes": ["disclosure:read", "rating:read"],
                                  "purpose": "loan review",
                                  "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()})
        assert granted.status_code == 201, granted.text
        # rating and disclosure follow the account's global log with their own tokens
        head = http.get(f"{account_url}/v1/events", headers=as_("operator", "ops")).json()["events"][-1]["position"]
        deadline = time.monotonic() + 20
        while min(rating_app.state.projector.position() or 0, disclosure_app.state.projector.position() or 0) < head:
            assert time.monotonic() < deadline, "the projections did not follow the account in JWKS mode"
            time.sleep(0.05)
        rating = http.get(f"{rating_url}/v1/ratings/{CEMENT}", headers=as_("bank", "bank-a"))
        assert rating.status_code == 200, rating.text
        # disclosure → rating access log, as service/disclosure
        report = http.get(f"{disclosure_url}/v1/disclosures/{CEMENT}/2024", headers=as_("bank", "bank-a"))
        assert report.status_code == 200, report.text
        reads = http.get(f"{rating_url}/v1/access-log/{CEMENT}", headers=as_("enterprise", CEMENT)).json()["reads"]
        assert [(r["party"], r["reported_by"]) for r in reads] == [("bank-a", "rating"), ("bank-a", "disclosure")]
        clients = {r["client_id"] for r in idp.token_requests}
        assert clients == {"carbon-accounting", "carbon-rating", "carbon-disclosure"}
        # each service asked once, however many calls it made
        assert len(idp.token_requests) == 4  # disclosure: one for its projection, one for the access log
