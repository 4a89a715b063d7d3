"""Real backing services for tests: Redis, PostgreSQL."""
