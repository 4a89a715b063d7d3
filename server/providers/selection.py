"""Per-request provider control from gRPC metadata: preferred and disabled providers, feature flags.

| metadata key         | value                                 | effect                       |
|----------------------|---------------------------------------|------------------------------|
| x-preferred-provider | one provider name                     | first in every stage's chain |
| x-disabled-providers | comma-separated provider names        | left out of every chain      |
| x-feature-flags      | comma-separated flags (FEATURE_FLAGS) | see FEATURE_FLAGS            |

The gateway passes the same-named HTTP headers through. An unknown provider,
one this core has not set up, or an unknown flag is INVALID_ARGUMENT naming
the metadata key: a typo must not silently run another model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from server.config import PROVIDER_NAMES
from server.errors import invalid

PREFERRED_KEY = "x-preferred-provider"
DISABLED_KEY = "x-disabled-providers"
FLAGS_KEY = "x-feature-flags"

#: Every flag x-feature-flags accepts, and what it does.
FEATURE_FLAGS = {
    "no-fallback": "use only the first usable provider of each stage: no fallback, no failover",
    "polish": "run the polish pass: notes on dialogue, tension and twist in the quality report",
}


@dataclass(frozen=True, slots=True)
class RequestRouting:
    """What one request asked of the router."""

    preferred: str = ""
    disabled: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()

    def narrow(self, chain: Sequence[str]) -> list[str]:
        """`chain` with disabled providers left out and the preferred one first."""
        names = [name for name in chain if name not in self.disabled]
        if self.preferred in names:
            names.remove(self.preferred)
            names.insert(0, self.preferred)
        if "no-fallback" in self.flags:
            names = names[:1]
        return names


#: A call that asks nothing of the router.
DEFAULT_ROUTING = RequestRouting()
_ROUTING_KEYS = frozenset({PREFERRED_KEY, DISABLED_KEY, FLAGS_KEY})


def _split(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


def _check_providers(key: str, names: Iterable[str], configured: Sequence[str]) -> None:
    for name in names:
        if name not in PROVIDER_NAMES:
            raise invalid(key, f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
        if name not in configured:
            raise invalid(
                key,
                f"provider {name!r} is not set up on this server; set up: {', '.join(configured)}",
            )


def parse_metadata(
    metadata: Iterable[tuple[str, str | bytes]], configured: Sequence[str]
) -> RequestRouting:
    """Read the routing keys of a call's metadata; InvalidArgument names a bad key."""
    values: dict[str, list[str]] = {}
    for key, value in metadata:
        if key in _ROUTING_KEYS:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            values.setdefault(key, []).append(text)
    if not values:
        return DEFAULT_ROUTING  # most calls: every job start of a plain caller
    preferred = _split(",".join(values.get(PREFERRED_KEY, [])))
    if len(preferred) > 1:
        raise invalid(PREFERRED_KEY, "name one provider")
    disabled = _split(",".join(values.get(DISABLED_KEY, [])))
    flags = _split(",".join(values.get(FLAGS_KEY, [])))
    _check_providers(PREFERRED_KEY, preferred, configured)
    _check_providers(DISABLED_KEY, disabled, configured)
    for flag in flags:
        if flag not in FEATURE_FLAGS:
            raise invalid(
                FLAGS_KEY, f"unknown feature flag {flag!r}; known: {', '.join(FEATURE_FLAGS)}"
            )
    if preferred and preferred[0] in disabled:
        raise invalid(PREFERRED_KEY, f"provider {preferred[0]!r} is also disabled")
    return RequestRouting(
        preferred=preferred[0] if preferred else "",
        disabled=frozenset(disabled),
        flags=frozenset(flags),
    )
