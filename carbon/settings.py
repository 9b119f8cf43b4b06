"""Configuration shared by every service (SPEC §3), read from the environment with pydantic-settings."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from carbon.auth import ServiceTokens, TokenVerifier

JWT_SECRET_FILE = "jwt-secret"


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str | None = None
    transport: Literal["store", "kafka"] = "store"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic: str = "carbon.account.events.v1"
    # Consumer groups are "<prefix>-<projection>"; a separate prefix keeps deployments sharing a broker apart.
    kafka_group_prefix: str = "carbon"
    account_url: str = "http://127.0.0.1:8001"
    jwt_secret: SecretStr | None = None
    # Production identity: tokens of an identity provider, verified against its JWKS (HS256 then refused).
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_subject_claim: str = "sub"
    jwt_role_claim: str = "role"
    jwks_cache_seconds: float = 300.0
    jwks_refetch_cooldown_seconds: float = 10.0
    # This service's own identity at the identity provider (client-credentials grant), for its calls
    # to the other services; required with CARBON_JWKS_URL, as services cannot mint tokens then.
    service_token_url: str | None = None
    service_client_id: str | None = None
    service_client_secret: SecretStr | None = None
    service_token_scope: str | None = None
    webhook_allow_private: bool = False
    max_body_bytes: int = 1024 * 1024

    # Each service names its default embedded database file.
    default_database_file: str = "service.db"

    @model_validator(mode="after")
    def _identity_complete(self) -> PlatformSettings:
        if self.jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("CARBON_JWKS_URL needs CARBON_JWT_ISSUER and CARBON_JWT_AUDIENCE")
        client = (self.service_token_url, self.service_client_id, self.service_client_secret)
        if any(client) and not all(client):
            raise ValueError("CARBON_SERVICE_TOKEN_URL, CARBON_SERVICE_CLIENT_ID and "
                             "CARBON_SERVICE_CLIENT_SECRET go together")
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / self.default_database_file}"

    def resolved_jwt_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return development_jwt_secret(self.data_dir)

    def token_verifier(self) -> TokenVerifier:
        """How this service checks the bearer tokens it receives."""
        from carbon.auth import JwksVerifier, SecretVerifier

        if self.jwks_url:
            return JwksVerifier(self.jwks_url, issuer=self.jwt_issuer or "", audience=self.jwt_audience or "",
                                cache_seconds=self.jwks_cache_seconds,
                                refetch_cooldown_seconds=self.jwks_refetch_cooldown_seconds,
                                subject_claim=self.jwt_subject_claim, role_claim=self.jwt_role_claim)
        return SecretVerifier(self.resolved_jwt_secret(), issuer=self.jwt_issuer, audience=self.jwt_audience)

    def service_tokens(self, service_name: str) -> ServiceTokens:
        """The tokens ``service_name`` sends with its own calls to the other services."""
        from carbon.auth import ClientCredentialsTokens, MintedServiceTokens

        if self.service_token_url and self.service_client_id and self.service_client_secret:
            return ClientCredentialsTokens(self.service_token_url, self.service_client_id,
                                           self.service_client_secret.get_secret_value(),
                                           scope=self.service_token_scope)
        if self.jwks_url:
            raise ValueError("with CARBON_JWKS_URL a service cannot mint its own tokens: set "
                             "CARBON_SERVICE_TOKEN_URL, CARBON_SERVICE_CLIENT_ID and CARBON_SERVICE_CLIENT_SECRET")
        return MintedServiceTokens(self.resolved_jwt_secret(), service_name,
                                   issuer=self.jwt_issuer, audience=self.jwt_audience)


def development_jwt_secret(data_dir: Path) -> str:
    """The development HS256 key kept in the data directory, created on first use (mode 0600)."""
    path = data_dir / JWT_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(candidate + "\n")
    return candidate
