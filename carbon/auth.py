"""Bearer-token authentication (SPEC §5): JWT with ``sub``, ``role`` and ``exp``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carbon.errors import Forbidden
from carbon.identity import Principal
from carbon.problems import Problem
from contracts import Role


ALGORITHM = "HS256"
MAX_SUB_LENGTH = 128


def mint_token(secret: str, *, sub: str, role: Role | str, ttl: timedelta = timedelta(hours=1)) -> str:
    now = datetime.now(UTC)
    claims = {"sub": sub, "role": Role(role).value, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    """Verify a token; any defect is a 401 problem saying what is wrong (never which key we use)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "role", "exp"]}, leeway=5
        )
    except jwt.ExpiredSignatureError:
        raise Problem(401, "Unauthorized", "the token has expired", slug="unauthorized") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Problem(401, "Unauthorized", f"the token lacks the {exc.claim!r} claim", slug="unauthorized") from None
    except jwt.InvalidTokenError:
        raise Problem(401, "Unauthorized", "the token is not valid", slug="unauthorized") from None
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_LENGTH:
        raise Problem(401, "Unauthorized", "the token's 'sub' claim is not a usable identifier", slug="unauthorized")
    try:
        return Principal(sub=sub, role=Role(role))
    except ValueError:
        raise Problem(401, "Unauthorized", f"the token's role {role!r} is not one of the platform's roles", slug="unauthorized") from None


_bearer = HTTPBearer(auto_error=False, description="JWT with claims sub, role, exp")


def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "Unauthorized", "send 'Authorization: Bearer <token>'", slug="unauthorized")
    return decode_token(request.app.state.jwt_secret, credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden("wrong_role", f"role {principal.role.value!r} may not do this (allowed: {allowed})")
