"""Configuration shared by every service (SPEC §3), read from the environment with pydantic-settings."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

JWT_SECRET_FILE = "jwt-secret"


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str | None = None
    transport: Literal["store", "kafka"] = "store"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic: str = "carbon.account.events.v1"
    account_url: str = "http://127.0.0.1:8001"
    jwt_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    max_body_bytes: int = 1024 * 1024

    # Each service names its default embedded database file.
    default_database_file: str = "service.db"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / self.default_database_file}"

    def resolved_jwt_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return development_jwt_secret(self.data_dir)


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
