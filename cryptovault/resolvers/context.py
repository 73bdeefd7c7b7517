"""What every resolver gets as `info.context`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from cryptovault.errors import DomainError
from cryptovault.security.origin import Origin, address_key, client_address
from cryptovault.security.viewer import Viewer
from cryptovault.services import Services


@dataclass
class Context:
    services: Services
    request: Request | WebSocket
    response: Response | None = None
    # The authenticated caller, or None for anonymous requests.
    viewer: Viewer | None = None
    # Why the credentials sent were refused (bad or expired token, revoked key).
    # Public fields still answer; fields that need a viewer raise this error.
    auth_error: DomainError | None = None
    # WebSocket only: the connection_init payload (set by Strawberry).
    connection_params: dict[str, Any] | None = None
    # Free per-request state for extensions (cost, loaders, ...).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def client_address(self) -> str | None:
        """The client's address (behind TRUSTED_PROXIES, the one they forwarded), an
        IPv4-mapped IPv6 address as its IPv4 (security/origin.py)."""
        # What `request.client.host` reads, without making the Address.
        client = self.request.scope.get("client") if self.request is not None else None
        return client_address(client[0] if client is not None else None)

    @property
    def client_key(self) -> str:
        """What per-address limits count the client under: its IPv4 address or its
        IPv6 /64 (security/origin.py)."""
        return address_key(self.client_address) or "unknown"

    @property
    def budget_key(self) -> str:
        """Whose cost budget an operation spends: the user or API key, else the
        client's address."""
        if self.viewer is not None:
            return self.viewer.rate_limit_key
        client = self.request.scope.get("client") if self.request is not None else None
        return _address_budget_key(client[0] if client is not None else None)

    @property
    def origin(self) -> Origin:
        """Where the request came from, for sessions and audit entries."""
        state = self.request.scope.get("state") or {}
        return Origin(
            ip=self.client_address,
            user_agent=self.request.headers.get("user-agent"),
            request_id=state.get("request_id"),
        )


@functools.lru_cache(maxsize=4096)
def _address_budget_key(host: str | None) -> str:
    """An anonymous caller's budget key for its peer address `host` (what `client_key`
    comes to for it), worked out once per address."""
    return f"ip:{address_key(client_address(host)) or 'unknown'}"


Info = StrawberryInfo[Context, None]
