"""Settings of the accounting service (SPEC §3)."""

from decimal import Decimal

from pydantic import Field

from carbon.settings import PlatformSettings


class AccountingSettings(PlatformSettings):
    default_database_file: str = "accounting.db"
    # A year-on-year change in gross emissions above this share is flagged as a data-quality warning.
    yoy_threshold: Decimal = Field(default=Decimal("0.5"), gt=0)
    # Seconds to wait for the account service when recording.
    account_timeout: float = Field(default=10.0, gt=0)
