"""The end-to-end story of SPEC §8 over HTTP, on the embedded default and on PostgreSQL + Kafka."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from rich.console import Console

from carbon.demo import Endpoints, run_demo
from services.account.api import create_app as account_app
from services.account.settings import AccountSettings
from services.accounting.api import create_app as accounting_app
from services.accounting.settings import AccountingSettings
from services.disclosure.api import create_app as disclosure_app
from services.disclosure.settings import DisclosureSettings
from services.rating.api import create_app as rating_app
from services.rating.settings import RatingSettings
from tests.live import serve

SECRET = "end-to-end-story-secret-long-enough-for-hs256"


@contextlib.contextmanager
def platform(databases: dict[str, str], **shared) -> Iterator[Endpoints]:
    """The four services on real loopback ports, wired to each other like `carbon up` wires them."""
    common = {"jwt_secret": SECRET, "webhook_allow_private": True, **shared}
    with contextlib.ExitStack() as stack:
        account = stack.enter_context(serve(account_app(AccountSettings(database_url=databases["account"], **common))))
        common["account_url"] = account
        accounting = stack.enter_context(serve(accounting_app(AccountingSettings(database_url=databases["accounting"], **common))))
        rating = stack.enter_context(serve(rating_app(RatingSettings(database_url=databases["rating"], **common))))
        disclosure = stack.enter_context(serve(disclosure_app(DisclosureSettings(
            database_url=databases["disclosure"], rating_url=rating, **common))))
        yield Endpoints(account=account, accounting=accounting, rating=rating, disclosure=disclosure)


@pytest.mark.slow
def test_story_on_the_embedded_default(tmp_path) -> None:
    databases = {name: f"sqlite:///{tmp_path / (name + '.db')}" for name in ("account", "accounting", "rating", "disclosure")}
    with platform(databases) as endpoints:
        run_demo(endpoints, SECRET, Console(width=160))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.kafka
def test_story_on_postgresql_and_kafka(postgres_server: str) -> None:
    from tests.infra import fresh_database
    from tests.kafka_infra import kafka_bootstrap

    bootstrap = kafka_bootstrap()
    topic = f"carbon.e2e.{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        databases = {name: stack.enter_context(fresh_database(postgres_server))
                     for name in ("account", "accounting", "rating", "disclosure")}
        with platform(databases, transport="kafka", kafka_bootstrap=bootstrap, kafka_topic=topic,
                      kafka_group_prefix=f"e2e-{uuid.uuid4().hex[:8]}") as endpoints:
            run_demo(endpoints, SECRET, Console(width=160))
