"""The SSRF guard: outbound postbacks reach public addresses only, unless the allowlist names them.

An IP or CIDR entry of CLICKTRAIL_DELIVERY_ALLOW_HOSTS allows templates that name such an address
literally; a host name entry allows that name whatever it resolves to. Any other name must resolve to
public addresses only, so an allowlisted internal address cannot be reached through somebody's DNS
name (DNS rebinding). Names are judged twice: when the template is saved and at every delivery, where
the request then goes to the very address that was judged.
"""

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from clicktrail.config import Network, Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALLOW_HINT = "allow it with CLICKTRAIL_DELIVERY_ALLOW_HOSTS"


class BlockedHost(Exception):
    """The address is not public and not allowed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def non_public_kind(address: Address) -> str | None:
    """What kind of non-public address this is ("a loopback address"…), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_private, "a private address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-public address"),
    )
    return next((kind for matched, kind in checks if matched), None)


@functools.lru_cache(maxsize=4096)  # asked at every delivery, of the same few receivers
def is_address(host: str) -> bool:
    """Whether `host` is an IP address written out rather than a name."""
    return _literal(host) is not None


class HostGuard:
    def __init__(self, names: frozenset[str], networks: Sequence[Network]) -> None:
        self._names = frozenset(name.lower().rstrip(".") for name in names)
        self._networks = tuple(networks)

    @classmethod
    def from_settings(cls, settings: Settings) -> "HostGuard":
        names, networks = settings.delivery_allowed
        return cls(names, networks)

    def _allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._names

    def judge(self, host: str, addresses: Sequence[str]) -> str | None:
        """Why `host` (resolved to `addresses`) may not be called, or None when it may."""
        literal = _literal(host)
        if literal is not None:
            if any(literal in network for network in self._networks):
                return None
            kind = non_public_kind(literal)
            return None if kind is None else f"{host} is {kind}; {_ALLOW_HINT}"
        if self._allows_name(host):
            return None
        for text in addresses:
            kind = non_public_kind(ipaddress.ip_address(text))
            if kind is not None:
                return f"{host} resolves to {text}, {kind}; {_ALLOW_HINT}"
        return None

    def check_url(self, url: str) -> str | None:
        """At save time (blocking): why the URL's host may not be called, or None.

        A name that does not resolve yet is accepted: it is judged again at every delivery."""
        host = urlsplit(url).hostname or ""
        if _literal(host) is not None or self._allows_name(host):
            return self.judge(host, ())
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        return self.judge(host, [str(info[4][0]) for info in infos])

    async def resolve(self, host: str, port: int) -> str:
        """At delivery: the address to connect to. Raises BlockedHost, or OSError when DNS fails."""
        literal = _literal(host)
        if literal is not None:
            problem = self.judge(host, ())
            if problem is not None:
                raise BlockedHost(problem)
            return str(literal)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise OSError(f"{host} has no address")
        problem = self.judge(host, addresses)
        if problem is not None:
            raise BlockedHost(problem)
        return addresses[0]
