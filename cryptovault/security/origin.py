"""Where a request came from: what sessions and audit entries remember about it, and
the key per-address limits count it under.

Invariant: an address is written one way everywhere. An IPv4-mapped IPv6 address
(`::ffff:203.0.113.5`, what a dual-stack socket or a proxy may report) is its IPv4
address, for limits, ADMIN_ALLOWED_IPS, sessions and audit entries alike. Per-address
limits (budgets, sign-in limits and lockout, WebSocket caps) count an IPv6 client by
its /64: one subscriber gets a whole /64 and can rotate addresses inside it at will.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address

__all__ = ["IPV6_PREFIX", "SYSTEM", "Origin", "address_key", "client_address"]

MAX_USER_AGENT = 256
# The prefix an IPv6 client is counted by (RFC 6177: a /64 is a single subnet, the
# least an end site is given).
IPV6_PREFIX = 64


@functools.lru_cache(maxsize=4096)
def client_address(host: str | None) -> str | None:
    """The client's address as written everywhere: an IPv4-mapped IPv6 address as its
    IPv4 address, other addresses in their compressed form, anything else (a Unix
    socket's peer, a test client's name) as it is."""
    if not host:
        return None
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=4096)
def address_key(host: str | None) -> str | None:
    """What per-address limits count a client under: its IPv4 address, or the /64
    network of its IPv6 address (`2001:db8:1:2::/64`)."""
    address = client_address(host)
    if address is None or ":" not in address:
        return address
    try:
        return str(IPv6Network((address, IPV6_PREFIX), strict=False))
    except ValueError:
        return address


@dataclass(frozen=True, slots=True)
class Origin:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", client_address(self.ip))
        # A user agent is attacker-chosen text that ends up in the store and in lists.
        if self.user_agent is not None and len(self.user_agent) > MAX_USER_AGENT:
            object.__setattr__(self, "user_agent", self.user_agent[:MAX_USER_AGENT])

    @property
    def ip_key(self) -> str | None:
        """The key per-address limits count this origin under (see `address_key`)."""
        return address_key(self.ip)


SYSTEM = Origin(ip=None, user_agent="cryptovault-cli", request_id=None)
