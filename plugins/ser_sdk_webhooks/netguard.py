"""Refuse webhook targets on private, loopback, link-local and other non-public addresses.

A hostname is checked by the resolver the HTTP client connects through, so
the addresses checked are the very ones it connects to: a DNS answer that
changes between a check and the connection (DNS rebinding) cannot slip past.
An IP literal in the URL never reaches a resolver, so it is checked when the
configuration is loaded.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenAddressError(OSError):
    """A webhook host is, or resolves to, an address outside the public internet."""


def is_forbidden(address: IPAddress) -> bool:
    """True for anything not globally routable (private, loopback, link-local, reserved...) or multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The IP address when ``host`` is an IP literal (with or without IPv6 brackets), else ``None``."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def describe(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    return "not a public address"


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, but fails if any answer is not a public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"])
            if is_forbidden(address):
                raise ForbiddenAddressError(
                    f"refused: {host} resolves to {address}, {describe(address)}; "
                    "set allow_private_network: true on this endpoint to allow it"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
