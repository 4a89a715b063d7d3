"""Several real core and gateway processes sharing Redis and PostgreSQL."""
