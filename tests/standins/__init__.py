"""Wire-compatible stand-ins for external services, started on port 0 by tests."""
