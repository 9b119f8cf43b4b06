"""Settings of the disclosure service (SPEC §3)."""

from carbon.settings import PlatformSettings


class DisclosureSettings(PlatformSettings):
    default_database_file: str = "disclosure.db"

    # Third-party report reads are logged here before any data is served.
    rating_url: str = "http://127.0.0.1:8003"
    access_log_timeout_s: float = 5.0

    # Webhook delivery: a bounded request, a bounded number of attempts, then the dead-letter state.
    webhook_workers: int = 8
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_base_s: float = 2.0
    webhook_backoff_max_s: float = 600.0
    webhook_poll_interval_s: float = 0.1
