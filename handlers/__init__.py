"""Real example actions written only with cpworker's public API."""
