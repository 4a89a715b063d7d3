"""gRPC metadata carried inside RelayService messages, both ways.

The gateway's relayed streams (gateway.core_relay) and the core that runs them
(server.services.relay) carry each stream's metadata as `RelayMetadata`
entries: values of keys ending `-bin` are bytes, as gRPC keeps them; the
others are UTF-8 text.
"""

from __future__ import annotations

from collections.abc import Iterable

from scriptgen.v1 import relay_service_pb2

#: Metadata as grpc.aio gives and takes it.
Metadata = tuple[tuple[str, str | bytes], ...]


def to_wire(metadata: Iterable[tuple[str, str | bytes]]) -> list[relay_service_pb2.RelayMetadata]:
    """Entries for a RelayOpen, RelayHeaders or RelayEnd."""
    return [
        relay_service_pb2.RelayMetadata(
            key=key, value=value if isinstance(value, bytes) else value.encode()
        )
        for key, value in metadata
    ]


def from_wire(entries: Iterable[relay_service_pb2.RelayMetadata]) -> Metadata:
    """The metadata the entries carry (text that is not UTF-8 is replaced, not refused)."""
    return tuple(
        (
            entry.key,
            entry.value if entry.key.endswith("-bin") else entry.value.decode(errors="replace"),
        )
        for entry in entries
    )
