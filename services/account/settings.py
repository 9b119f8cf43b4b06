"""Settings of the account service (SPEC §3)."""

from carbon.settings import PlatformSettings


class AccountSettings(PlatformSettings):
    default_database_file: str = "account.db"
