"""The authenticated caller of a request or WebSocket connection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from starlette.requests import HTTPConnection


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: str
    role: str = "USER"  # "USER" | "ADMIN"
    # None for a user's own session (every permission of the role); for an API key,
    # the scopes it was granted.
    scopes: frozenset[str] | None = None
    frozen: bool = False
    session_id: str | None = None
    api_key_id: str | None = None
    # When the credential stops being valid (access token expiry); long-lived
    # connections must stop serving private data after it.
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    @property
    def rate_limit_key(self) -> str:
        return f"key:{self.api_key_id}" if self.api_key_id else f"user:{self.user_id}"


class Authenticator(Protocol):
    """Turns a request's credentials (or a WebSocket's connection_init payload) into a
    Viewer, or None for anonymous callers; raises Unauthenticated for bad credentials."""

    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None: ...


class AnonymousAuthenticator:
    """Before identity is configured every caller is anonymous."""

    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None:
        return None
