"""Suite presets (YAML), installed as the package data ``dtn_bench._suites``."""
