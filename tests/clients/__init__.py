"""Tests of the Python SDK and the `scriptgen` command, against real servers."""
