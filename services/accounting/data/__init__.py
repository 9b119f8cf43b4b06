"""The emission-factor catalogue as data files (YAML), loaded and validated by ``services.accounting.catalogue``."""
