"""A listen address as the core and the gateway take it: host:port, port 0..65535."""

from __future__ import annotations


def listen_address(flag: str, address: str) -> str:
    """`address` when it is host:port with a port of 0..65535 (0: a free one); else a
    ValueError naming `flag` (e.g. `--http-address (SCRIPTGEN_HTTP_ADDRESS)`)."""
    _, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError(f"{flag} must be host:port with a port of 0..65535, not {address!r}")
    return address
