"""What every resolver gets as `info.context`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from cryptovault.security.viewer import Viewer
from cryptovault.services import Services


@dataclass
class Context:
    services: Services
    request: Request | WebSocket
    response: Response | None = None
    # The authenticated caller, or None for anonymous requests.
    viewer: Viewer | None = None
    # WebSocket only: the connection_init payload (set by Strawberry).
    connection_params: dict[str, Any] | None = None
    # Free per-request state for extensions (cost, loaders, ...).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def client_ip(self) -> str:
        client = self.request.client
        return client.host if client else "unknown"


Info = StrawberryInfo[Context, None]
