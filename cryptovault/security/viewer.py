"""The authenticated caller of a request or WebSocket connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from starlette.requests import HTTPConnection

from cryptovault.errors import Unauthenticated


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
    # The access token's id (`jti`), so logout can blacklist exactly this token.
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

    @property
    def is_api_key(self) -> bool:
        return self.api_key_id is not None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at

    def check_not_expired(self) -> None:
        if self.expired():
            raise Unauthenticated("The access token has expired", reason="TOKEN_EXPIRED")

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


async def while_valid[T](viewer: Viewer, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Relay `source` until the viewer's credential expires, then end with
    UNAUTHENTICATED (reason TOKEN_EXPIRED), even while `source` is idle.

    Every private subscription must wrap its event source with this: a WebSocket's
    token is checked once, at connection_init, and the connection may outlive it.

        async for event in while_valid(viewer, hub_subscription):
            yield to_schema(event)
    """
    if viewer.expires_at is None:  # API keys do not expire
        async for item in source:
            yield item
        return
    iterator = aiter(source)
    while True:
        remaining = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                item = await anext(iterator)
        except TimeoutError:
            break
        except StopAsyncIteration:
            return
        yield item
    raise Unauthenticated("The access token has expired", reason="TOKEN_EXPIRED")
