"""The authenticated caller of a request or WebSocket connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from starlette.requests import HTTPConnection

from cryptovault.errors import DomainError, Forbidden, Unauthenticated

if TYPE_CHECKING:
    from cryptovault.security.credentials import CredentialWatch


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
    # WebSocket only: the credential's state as this instance last read it, kept
    # current through the event bus (security/credentials.py). Not part of the
    # viewer's identity: equal credentials group together whatever their watch.
    watch: CredentialWatch | None = field(default=None, compare=False, repr=False)

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

    def current(self) -> Viewer:
        """This credential as it stands now: UNAUTHENTICATED once it expired or was
        revoked; on a WebSocket, its latest role and freeze (no store read: the watch
        holds them)."""
        self.check_not_expired()
        if self.watch is None:
            return self
        return self.watch.current_viewer()

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    @property
    def rate_limit_key(self) -> str:
        return f"key:{self.api_key_id}" if self.api_key_id else f"user:{self.user_id}"


def lost_rights(before: Viewer, now: Viewer) -> DomainError | None:
    """Why `now` (the same credential, read again) may do less than `before` did, or
    None. Work authorized for `before` (a running private stream) must then end."""
    if now.frozen and not before.frozen:
        return Forbidden(
            "The account was frozen: its live streams ended (subscribe again to read)",
            reason="ACCOUNT_FROZEN",
        )
    if before.is_admin and not now.is_admin:
        return Forbidden(
            "The account's role changed: its live streams ended (subscribe again)",
            reason="ROLE_CHANGED",
        )
    return None


class Authenticator(Protocol):
    """Turns a request's credentials (or a WebSocket's connection_init payload) into a
    Viewer, or None for anonymous callers; raises Unauthenticated for bad credentials."""

    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None: ...

    async def revalidate(self, viewers: Sequence[Viewer]) -> list[Viewer | DomainError]:
        """What `authenticate` would answer now for each viewer's credential, in a
        few batched reads: the viewer with its current role and freeze, or the
        refusal (e.g. UNAUTHENTICATED with reason API_KEY_REVOKED)."""
        ...


async def while_valid[T](viewer: Viewer, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Relay `source` while the viewer's credential stands: end with UNAUTHENTICATED
    when it expires (reason TOKEN_EXPIRED) or, on a WebSocket, is revoked (reason
    e.g. API_KEY_REVOKED), and with FORBIDDEN when the account loses rights (frozen,
    demoted), even while `source` is idle. Each event is checked against the latest
    known state before it is relayed (memory only: no store read per event).

    Every private subscription must wrap its event source with this: a WebSocket's
    credential is checked at connection_init, and the connection may outlive it.

        async for event in while_valid(viewer, hub_subscription):
            yield to_schema(event)
    """
    watch = viewer.watch
    if viewer.expires_at is None and watch is None:
        async for item in source:
            yield item
        return
    iterator = aiter(source)
    while True:
        _check(viewer)
        remaining = None
        if viewer.expires_at is not None:
            remaining = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        interrupt = None
        try:
            async with asyncio.timeout(remaining) as scope:
                if watch is None:
                    item = await anext(iterator)
                else:
                    with watch.interrupting(viewer, scope) as interrupt:
                        item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if interrupt is not None and interrupt.error is not None:
                raise interrupt.error from None
            continue  # the expiry: the check at the top raises
        if watch is not None and watch.pending is not None:
            # The bus said this credential changed: hold the event until its new
            # state is read.
            await watch.settled()
        _check(viewer)
        yield item


def _check(viewer: Viewer) -> None:
    viewer.check_not_expired()
    if viewer.watch is not None and (refused := viewer.watch.refusal(viewer)) is not None:
        raise refused
