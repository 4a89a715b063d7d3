"""PostgreSQL schema migrations (a package so the .sql files ship with the core)."""
