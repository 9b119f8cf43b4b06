"""Bearer-token authentication (SPEC §5): JWT with ``sub``, ``role`` and ``exp``.

Two ways to verify a token, never both at once:

- development: HS256 with the shared secret ``CARBON_JWT_SECRET``; services mint their own tokens;
- production: RS256/ES256 tokens of an identity provider, verified against its JWKS
  (``CARBON_JWKS_URL``) with the issuer and audience checked; HS256 is refused, so a public key can
  never double as an HMAC secret, and services obtain their tokens by the client-credentials grant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol
from urllib.parse import quote_plus

import httpx
import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from carbon.errors import Forbidden
from carbon.identity import Principal
from carbon.problems import Problem
from contracts import Role


ALGORITHM = "HS256"
# Asymmetric algorithms accepted from an identity provider; symmetric ones and "none" never are.
JWKS_ALGORITHMS = ("RS256", "ES256")
MAX_SUB_LENGTH = 128
LEEWAY_S = 5


def _unauthorized(detail: str, challenge: str = 'Bearer error="invalid_token"') -> Problem:
    # A 401 names the scheme to use (RFC 9110 §11.6.1, RFC 6750 §3).
    return Problem(401, "Unauthorized", detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


def _may_block(verifier: TokenVerifier) -> bool:
    """Whether ``verify`` may wait on the network (a verifier says so with ``blocking``; unknown ones may)."""
    return getattr(verifier, "blocking", True)


def _principal(claims: dict[str, Any], subject_claim: str = "sub", role_claim: str = "role") -> Principal:
    sub, role = claims.get(subject_claim), claims.get(role_claim)
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_LENGTH:
        raise _unauthorized(f"the token's {subject_claim!r} claim is not a usable identifier")
    try:
        return Principal(sub=sub, role=Role(role))
    except ValueError:
        raise _unauthorized(f"the token's role {role!r} is not one of the platform's roles") from None


def _decode(token: str, key: Any, algorithms: list[str], *, issuer: str | None, audience: str | None,
            required: list[str]) -> dict[str, Any]:
    """jwt.decode with every defect mapped to a 401 saying what is wrong (never which key we use)."""
    require = [*required, "exp"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
    try:
        return jwt.decode(token, key, algorithms=algorithms, issuer=issuer, audience=audience,
                          options={"require": require}, leeway=LEEWAY_S)
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorized(f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise _unauthorized("the token was not issued by the platform's identity provider") from None
    except jwt.InvalidAudienceError:
        raise _unauthorized("the token is not meant for this platform (audience)") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("the token is not valid") from None


class SecretVerifier:
    """HS256 with the platform's shared development secret."""

    blocking = False  # pure computation: verified on the event loop, no thread-pool hop

    # A client sends the same token with every request of its lifetime: the outcome of verifying it
    # is kept, keyed by the whole token (signature included), for the times it is valid at. Only
    # tokens signed with the secret get here, so nobody without it can fill the memory.
    REMEMBERED = 4096

    def __init__(self, secret: str, *, issuer: str | None = None, audience: str | None = None) -> None:
        if not secret:
            raise ValueError("an HS256 secret must not be empty")
        self._secret, self.issuer, self.audience = secret, issuer, audience
        self._verified: dict[str, tuple[float, float, Principal]] = {}

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            valid_from, valid_until, principal = known
            if valid_from <= time.time() < valid_until:
                return principal
        claims = _decode(token, self._secret, [ALGORITHM], issuer=self.issuer, audience=self.audience,
                         required=["sub", "role"])
        principal = _principal(claims)
        if len(self._verified) >= self.REMEMBERED:
            self._verified.clear()
        # The window jwt.decode accepts: from iat/nbf, until exp, each widened by the leeway.
        starts = [claims[c] for c in ("iat", "nbf") if isinstance(claims.get(c), int | float)]
        self._verified[token] = (max(starts, default=float("-inf")) - LEEWAY_S, claims["exp"] + LEEWAY_S, principal)
        return principal


class JwksVerifier:
    """RS256/ES256 tokens of an identity provider, keys from its JWKS.

    The key set is cached for ``cache_seconds``; a token naming an unknown ``kid`` refetches it (at
    most once per ``refetch_cooldown_seconds``), so a rotated-in key works at once and a rotated-out
    one stops working once the set is refetched.
    """

    blocking = True  # a key-set fetch waits on the identity provider: verified on the thread pool

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, cache_seconds: float = 300,
                 refetch_cooldown_seconds: float = 10, timeout: float = 5, subject_claim: str = "sub",
                 role_claim: str = "role") -> None:
        if not issuer or not audience:
            raise ValueError("verifying against a JWKS needs the expected issuer and audience")
        self.issuer, self.audience = issuer, audience
        self.subject_claim, self.role_claim = subject_claim, role_claim
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=True, lifespan=cache_seconds,
                                     timeout=timeout, cooldown_duration=refetch_cooldown_seconds)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorized("the token is not valid") from None
        alg, kid = header.get("alg"), header.get("kid")
        # Checked before any key lookup: junk never makes us refetch the key set.
        if alg not in JWKS_ALGORITHMS:
            raise _unauthorized(f"tokens must be signed with {' or '.join(JWKS_ALGORITHMS)}")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("the token names no signing key ('kid')")
        try:
            key = self._keys.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise Problem(503, "Service Unavailable", "the identity provider's signing keys cannot be fetched",
                          slug="identity-unavailable", headers={"Retry-After": "5"}) from None
        except jwt.PyJWKClientError:
            raise _unauthorized("the token's signing key is not known") from None
        if key.algorithm_name != alg:  # an RSA key verifies RS256 only, a P-256 key ES256 only
            raise _unauthorized("the token's algorithm does not match its signing key")
        claims = _decode(token, key, [alg], issuer=self.issuer, audience=self.audience,
                         required=[self.subject_claim, self.role_claim])
        return _principal(claims, self.subject_claim, self.role_claim)


# ---- tokens the platform issues or obtains ---------------------------------------------------

def mint_token(secret: str, *, sub: str, role: Role | str, ttl: timedelta = timedelta(hours=1),
               issuer: str | None = None, audience: str | None = None) -> str:
    """A development HS256 token (tests, ``carbon token``, services in development mode)."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": sub, "role": Role(role).value, "iat": now, "exp": now + ttl}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    """Verify an HS256 token; any defect is a 401 problem saying what is wrong."""
    return SecretVerifier(secret).verify(token)


class ServiceTokenUnavailable(Exception):
    """No token for the service's own identity could be obtained (identity provider down or refusing)."""


class ServiceTokens(Protocol):
    """Bearer tokens of one service's own identity, for its calls to the other services."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


class MintedServiceTokens:
    """Development mode: ``role=service, sub=<service name>``, minted with the shared secret."""

    def __init__(self, secret: str, service_name: str, *, ttl: timedelta = timedelta(minutes=5),
                 issuer: str | None = None, audience: str | None = None) -> None:
        self._secret, self.service_name, self.ttl = secret, service_name, ttl
        self.issuer, self.audience = issuer, audience

    def token(self) -> str:
        return mint_token(self._secret, sub=self.service_name, role=Role.SERVICE, ttl=self.ttl,
                          issuer=self.issuer, audience=self.audience)

    def invalidate(self) -> None:
        pass


class ClientCredentialsTokens:
    """Production mode: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4) at the identity provider.

    The token is reused until shortly before it expires, so a busy service asks once per lifetime.
    """

    DEFAULT_LIFETIME_S = 60.0  # when the provider does not say (expires_in is only RECOMMENDED)

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, scope: str | None = None,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url, self.client_id, self.scope = token_url, client_id, scope
        self._secret, self._clock = client_secret, clock
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def close(self) -> None:
        self._http.close()

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, lifetime = self._fetch()
                # Renew a little before expiry: a token must not lapse on its way to the callee.
                self._refresh_at = self._clock() + lifetime - min(30.0, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        # client_secret_basic: both parts form-encoded before Basic (RFC 6749 §2.3.1).
        auth = httpx.BasicAuth(quote_plus(self.client_id), quote_plus(self._secret))
        try:
            response = self._http.post(self.token_url, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ServiceTokenUnavailable(f"the token endpoint is unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ServiceTokenUnavailable(f"the token endpoint answered {response.status_code}")
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or self.DEFAULT_LIFETIME_S)
        except (ValueError, KeyError, TypeError):
            raise ServiceTokenUnavailable("the token endpoint's answer has no usable access_token") from None
        if not isinstance(token, str) or not token or str(body.get("token_type", "bearer")).lower() != "bearer":
            raise ServiceTokenUnavailable("the token endpoint did not issue a bearer token")
        return token, max(lifetime, 1.0)


# ---- FastAPI ------------------------------------------------------------------------------------

# The scheme as the OpenAPI documents declare it (``document_bearer_scheme``).
BEARER_SCHEME_NAME = "HTTPBearer"
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "description": "JWT with claims sub, role, exp"}


def _verifier(request: Request) -> TokenVerifier:
    verifier = getattr(request.app.state, "token_verifier", None)
    return verifier if verifier is not None else SecretVerifier(request.app.state.jwt_secret)


async def authenticate(request: Request) -> Principal:
    # async, so that a token checked by computation alone costs no thread-pool hop per request. The
    # header is read here rather than by a ``HTTPBearer`` sub-dependency: resolving a dependency
    # costs more than the check itself; ``document_bearer_scheme`` still declares the scheme.
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send 'Authorization: Bearer <token>'", "Bearer")
    verifier = _verifier(request)
    if _may_block(verifier):
        return await run_in_threadpool(verifier.verify, token)
    return verifier.verify(token)


def _depends_on(dependant: Any, call: Callable[..., Any]) -> bool:
    return dependant.call is call or any(_depends_on(d, call) for d in dependant.dependencies)


def document_bearer_scheme(app: FastAPI) -> None:
    """Declare the bearer scheme in the app's OpenAPI document, on every operation that authenticates."""
    from fastapi.routing import APIRoute, iter_route_contexts

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        secured = [(context.path_format, context.original_route) for context in iter_route_contexts(app.routes)
                   if isinstance(context.original_route, APIRoute) and context.original_route.include_in_schema
                   and _depends_on(context.original_route.dependant, authenticate)]
        if secured:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER_SCHEME_NAME] = BEARER_SCHEME
        for path, route in secured:
            for method in route.methods:
                operation = schema["paths"][path][method.lower()]
                operation.setdefault("security", []).append({BEARER_SCHEME_NAME: []})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden("wrong_role", f"role {principal.role.value!r} may not do this (allowed: {allowed})")
