"""Settings of the rating service (SPEC §3), plus where its reference data lives."""

from pathlib import Path

from carbon.settings import PlatformSettings
from services.rating.config import BENCHMARKS_FILE, PRICING_FILE, REDISCOUNT_FILE, ReferenceData, load_reference_data


class RatingSettings(PlatformSettings):
    default_database_file: str = "rating.db"
    # CARBON_RATING_BENCHMARKS_FILE etc.: replace a table without touching the code.
    rating_benchmarks_file: Path = BENCHMARKS_FILE
    rating_pricing_file: Path = PRICING_FILE
    rating_rediscount_file: Path = REDISCOUNT_FILE
    # Readiness fails once the projection has been failing for this long without a success in between.
    rating_projection_unready_after_s: float = 30.0

    def reference_data(self) -> ReferenceData:
        return load_reference_data(self.rating_benchmarks_file, self.rating_pricing_file, self.rating_rediscount_file)
