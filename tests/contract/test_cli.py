"""The `carbon` command line against a real database."""

from __future__ import annotations

import json

import jwt
from sqlalchemy import text
from typer.testing import CliRunner

from carbon.cli import app
from carbon.db import make_engine
from carbon.eventstore import EventStore, NewEvent, migrate

runner = CliRunner()


def test_token_is_signed_with_the_configured_secret(monkeypatch) -> None:
    secret = "cli-test-secret-long-enough-for-hs256-keys"
    monkeypatch.setenv("CARBON_JWT_SECRET", secret)
    result = runner.invoke(app, ["token", "--role", "bank", "--sub", "bank-a", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "bank-a" and claims["role"] == "bank" and claims["exp"] - claims["iat"] == 60
    assert runner.invoke(app, ["token", "--role", "king", "--sub", "x"]).exit_code != 0


def test_token_without_secret_uses_the_data_directory_key(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CARBON_JWT_SECRET", raising=False)
    monkeypatch.setenv("CARBON_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["token", "--role", "operator", "--sub", "ops"])
    assert result.exit_code == 0
    key = (tmp_path / "jwt-secret").read_text().strip()
    assert jwt.decode(result.output.strip(), key, algorithms=["HS256"])["role"] == "operator"


def test_verify_chain_reports_intact_and_broken_streams(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    store = EventStore(engine)
    store.append_events("E-1", [NewEvent("Noted", {"n": i}) for i in range(4)])
    ok = runner.invoke(app, ["verify-chain", "E-1", "--database-url", database_url])
    assert ok.exit_code == 0 and "chain intact" in ok.output and "4 events" in ok.output
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET data = :d WHERE stream_version = 2"), {"d": json.dumps({"n": 99})})
    broken = runner.invoke(app, ["verify-chain", "E-1", "--database-url", database_url])
    assert broken.exit_code == 1 and "version 2" in broken.output
    assert runner.invoke(app, ["verify-chain", "E-404", "--database-url", database_url]).exit_code == 2
    engine.dispose()
