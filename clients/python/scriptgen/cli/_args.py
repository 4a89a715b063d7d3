"""Range-checked argument types of the commands and of the measuring scripts in `scripts/`.

A value out of range is argparse's usage error naming the flag (exit status 2), never a
traceback from the protobuf field it would not fit in (`--page-size 3000000000` is no
int32) or from the client's own checks (`--deadline 0`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Final

#: The API's documented limits the client commands check before any call (README, "Input
#: limits"): a page of at most 1000 entries, an episode of 0 (the type's default) to 180
#: minutes, an event sequence that fits the int64 it travels in.
PAGE_SIZE_MAX: Final = 1000
EPISODE_MINUTES_MAX: Final = 180
SEQUENCE_MAX: Final = 2**63 - 1
#: The longest --deadline: a day, far beyond any unary call.
DEADLINE_MAX_SECONDS: Final = 86400.0


def integer_in(minimum: int, maximum: int) -> Callable[[str], int]:
    """The parser of an integer flag within `minimum`..`maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            # Also text of over 4300 digits, which int() refuses.
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be between {minimum} and {maximum}, not {value}"
            )
        return value

    return parse


def seconds_up_to(maximum: float) -> Callable[[str], float]:
    """The parser of a duration flag: more than 0 and at most `maximum` seconds."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise argparse.ArgumentTypeError(
                f"must be more than 0 and at most {maximum:g} seconds, not {text.strip()}"
            )
        return value

    return parse


page_size = integer_in(0, PAGE_SIZE_MAX)
episode_minutes = integer_in(0, EPISODE_MINUTES_MAX)
sequence = integer_in(0, SEQUENCE_MAX)
deadline_seconds = seconds_up_to(DEADLINE_MAX_SECONDS)


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
