"""The account's outbox relay as a process of its own: ``python -m services.account.relay``.

The account service runs the same relay in a background thread when ``CARBON_TRANSPORT=kafka``;
this entry point lets operators (and fault tests) run, kill and restart it separately.
"""

from __future__ import annotations

import logging
import signal

from carbon import telemetry
from carbon.db import make_engine
from carbon.eventstore import migrate
from carbon.eventstore.outbox import OutboxRelay
from carbon.kafka import KafkaPublisher
from services.account.settings import AccountSettings

log = logging.getLogger("carbon.outbox")


def build_relay(settings: AccountSettings, engine) -> OutboxRelay:
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.kafka_topic, create_topic=True)
    try:
        publisher.ensure_topic()
    except Exception as exc:  # noqa: BLE001 - a broker away at start-up must not keep the relay from starting
        log.warning("outbox relay: cannot create topic %s yet (%s); the first publish retries", settings.kafka_topic, exc)
    relay = OutboxRelay(engine, publisher)
    telemetry.observe_outbox_backlog(relay.pending)
    return relay


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = AccountSettings()
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    relay = build_relay(settings, engine)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    signal.signal(signal.SIGINT, lambda *_: relay.stop())
    relay.run()


if __name__ == "__main__":
    main()
