"""Whether the gateway's gRPC target for the core names one address, read from its syntax.

gRPC's naming (https://github.com/grpc/grpc/blob/master/doc/naming.md): `host:port`
and `dns:[//authority/]host:port` go through DNS unless the host is an IP literal;
`ipv4:`, `ipv6:`, `unix:`, `unix-abstract:` and `vsock:` list addresses,
comma-separated (gRPC's sockaddr resolver splits them all, and skips empty parts).
A DNS name may resolve to several cores (a headless Service), so it is never taken
for one address, `localhost` included; nor is anything not understood here.
"""

from __future__ import annotations

import ipaddress

#: Schemes whose target is a comma-separated list of addresses, no name to resolve.
_ADDRESS_LIST_SCHEMES = frozenset({"ipv4", "ipv6", "unix", "unix-abstract", "vsock"})


def names_one_address(target: str) -> bool:
    """True when `target` can only reach one address, so every call to it goes to one core
    over one HTTP/2 connection; False when it may resolve to several (or is not understood)."""
    scheme, colon, rest = target.partition(":")
    if colon and scheme in _ADDRESS_LIST_SCHEMES:
        return sum(1 for part in rest.split(",") if part) == 1
    if colon and scheme == "dns":
        if rest.startswith("//"):
            _, _, rest = rest[2:].partition("/")  # drop the DNS server's authority
        return _is_ip_literal(_host(rest))
    return _is_ip_literal(_host(target))


def _host(address: str) -> str:
    """The host of `host[:port]` or `[v6]:port`."""
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else ""
    if address.count(":") > 1:
        return address  # a bare IPv6 address without a port
    return address.partition(":")[0]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
