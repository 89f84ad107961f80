"""The visitor's address: the socket peer, or X-Forwarded-For when the peer is a trusted proxy."""

import ipaddress

from clicktrail.config import Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """Walk X-Forwarded-For from the right while hops are trusted; the first untrusted hop is the client."""
    current = _address(peer) if peer else None
    if current is None or not trusted or not forwarded_for or not _trusted(current, trusted):
        return str(current) if current else None
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            break
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)
