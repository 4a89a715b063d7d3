"""Argument types the measuring scripts in `scripts/` share."""

from __future__ import annotations

import argparse


def at_least_one(text: str) -> int:
    """A count of one or more (argparse names the flag in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def not_negative(text: str) -> int:
    """A count of zero or more (argparse names the flag in its error)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value
