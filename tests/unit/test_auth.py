"""carbon.auth without sockets: token checks that need no key set, and the client-credentials client
against an in-process transport."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from carbon.auth import (
    ClientCredentialsTokens,
    JwksVerifier,
    MintedServiceTokens,
    SecretVerifier,
    ServiceTokenUnavailable,
    decode_token,
    mint_token,
)
from carbon.problems import Problem
from carbon.settings import PlatformSettings

SECRET = "unit-secret-long-enough-for-hs256-signing"
NOWHERE = "http://127.0.0.1:9/certs"  # never contacted: these tokens are refused before any key lookup


def test_minted_tokens_round_trip_through_the_public_surface() -> None:
    principal = decode_token(SECRET, mint_token(SECRET, sub="ops", role="operator"))
    assert (principal.sub, principal.role.value) == ("ops", "operator")
    service = decode_token(SECRET, MintedServiceTokens(SECRET, "accounting").token())
    assert (service.sub, service.role.value) == ("accounting", "service")


@pytest.mark.parametrize("token", [
    mint_token(SECRET, sub="ops", role="operator", ttl=timedelta(seconds=-60)),
    jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, SECRET * 2, algorithm="HS384"),
    jwt.encode({"sub": "ops", "role": "operator", "exp": 4102444800}, None, algorithm="none"),
], ids=["expired", "hs384", "none"])
def test_the_secret_verifier_accepts_hs256_only_and_says_401(token: str) -> None:
    with pytest.raises(Problem) as refused:
        SecretVerifier(SECRET).verify(token)
    assert refused.value.status == 401
    assert refused.value.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    assert SECRET not in refused.value.detail


def test_the_secret_verifier_remembers_a_token_only_for_its_validity_and_only_that_token(monkeypatch) -> None:
    import carbon.auth

    verifier = SecretVerifier(SECRET)
    token = mint_token(SECRET, sub="bank-a", role="bank", ttl=timedelta(seconds=30))
    assert verifier.verify(token).sub == "bank-a"
    assert verifier.verify(token).sub == "bank-a"  # remembered
    # Another token is verified on its own: the same claims under a forged signature are refused.
    head, body, _ = token.split(".")
    forged = f"{head}.{body}.{base64.urlsafe_b64encode(b'x' * 32).rstrip(b'=').decode()}"
    with pytest.raises(Problem):
        verifier.verify(forged)
    # Once expired (beyond the leeway), the remembered token is refused as any expired one is.
    later = carbon.auth.time.time() + 60
    monkeypatch.setattr(carbon.auth.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _frozen_datetime(later))
    with pytest.raises(Problem) as refused:
        verifier.verify(token)
    assert refused.value.detail == "the token has expired"


def _frozen_datetime(at: float):
    from datetime import UTC, datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(at, tz or UTC)

    return Frozen


@pytest.mark.parametrize("header", [{"alg": "HS256", "kid": "k"}, {"alg": "none", "kid": "k"}, {"alg": "RS256"},
                                    {"alg": "HS512", "kid": "k"}, {"alg": "RS512", "kid": "k"}])
def test_the_jwks_verifier_refuses_other_algorithms_and_missing_kids_without_fetching(header: dict) -> None:
    verifier = JwksVerifier(NOWHERE, issuer="https://id.example.com", audience="carbon", timeout=0.5)
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(Problem) as refused:
        verifier.verify(f"{encoded}.e30.c2ln")
    assert refused.value.status == 401  # not 503: the unreachable key set was never asked


def test_the_jwks_verifier_needs_issuer_and_audience() -> None:
    with pytest.raises(ValueError):
        JwksVerifier(NOWHERE, issuer="", audience="carbon")
    with pytest.raises(ValueError):
        JwksVerifier(NOWHERE, issuer="https://id.example.com", audience="")


def test_the_settings_pick_the_verifier_and_the_service_identity(tmp_path) -> None:
    dev = PlatformSettings(data_dir=tmp_path)
    assert isinstance(dev.token_verifier(), SecretVerifier)
    assert isinstance(dev.service_tokens("rating"), MintedServiceTokens)
    prod = PlatformSettings(data_dir=tmp_path / "prod", jwks_url=NOWHERE, jwt_issuer="https://id.example.com",
                            jwt_audience="carbon", service_token_url="https://id.example.com/token",
                            service_client_id="carbon-rating", service_client_secret="s3cret")
    assert isinstance(prod.token_verifier(), JwksVerifier)
    assert isinstance(prod.service_tokens("rating"), ClientCredentialsTokens)
    assert not (tmp_path / "prod").exists()  # no development key is generated in production mode
    assert "s3cret" not in repr(prod)


def token_endpoint(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle)


def test_the_client_credentials_request_follows_rfc_6749() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"access_token": "t-1", "token_type": "bearer"})]
    tokens = ClientCredentialsTokens("https://id.example.com/token", "carbon:rating", "p@ss w/rd", scope="carbon",
                                     transport=token_endpoint(answers, seen))
    assert tokens.token() == "t-1"
    [request] = seen
    assert request.method == "POST" and request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {"grant_type": ["client_credentials"], "scope": ["carbon"]}
    scheme, encoded = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "carbon%3Arating:p%40ss+w%2Frd"  # form-encoded, then Basic


def test_a_token_without_expires_in_is_kept_a_short_default_time() -> None:
    now = [0.0]
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"access_token": f"t-{i}", "token_type": "Bearer"}) for i in range(2)]
    tokens = ClientCredentialsTokens("https://id.example.com/token", "c", "s", clock=lambda: now[0],
                                     transport=token_endpoint(answers, seen))
    assert tokens.token() == "t-0"
    now[0] = ClientCredentialsTokens.DEFAULT_LIFETIME_S / 2 - 1
    assert tokens.token() == "t-0"
    now[0] = ClientCredentialsTokens.DEFAULT_LIFETIME_S / 2 + 1
    assert tokens.token() == "t-1" and len(seen) == 2


@pytest.mark.parametrize("answer", [
    httpx.Response(401, json={"error": "invalid_client"}),
    httpx.Response(503, text="down"),
    httpx.Response(200, text="not json"),
    httpx.Response(200, json={"token_type": "Bearer"}),
    httpx.Response(200, json={"access_token": "t", "token_type": "mac"}),
    httpx.Response(200, json={"access_token": "", "token_type": "Bearer"}),
    httpx.Response(200, json={"access_token": "t", "expires_in": "soon"}),
], ids=["401", "503", "not-json", "no-token", "not-bearer", "empty", "bad-expiry"])
def test_unusable_token_answers_are_unavailability_and_never_cached(answer: httpx.Response) -> None:
    seen: list[httpx.Request] = []
    tokens = ClientCredentialsTokens("https://id.example.com/token", "c", "the-client-secret",
                                     transport=token_endpoint([answer, answer], seen))
    for _ in range(2):
        with pytest.raises(ServiceTokenUnavailable) as failed:
            tokens.token()
        assert "the-client-secret" not in str(failed.value)
    assert len(seen) == 2
