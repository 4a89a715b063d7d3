"""A `SCRIPTGEN_*` switch's value, read the same way by the CLI and the core's settings."""

from __future__ import annotations

#: What a switch may be set to (any case); unset or empty is off.
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"", "0", "false", "no", "off"})


def parse_switch(variable: str, text: str) -> bool:
    """`text` as the value of switch `variable`; a ValueError naming it for anything else."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(
        f"{variable}={text!r} is not a switch: use 1, true, yes or on; 0, false, no or off"
    )
