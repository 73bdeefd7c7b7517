"""What a WebSocket may do as its credential changes, for both protocol handlers.

- Before connection_init a socket is nobody's: it counts against its client address
  (`WS_MAX_PENDING_PER_IP`), not against an identity, until it initialises.
- At connection_init the credential is checked (`on_ws_connect`) and the socket holds
  its watch (security/credentials.py) for its lifetime.
- Before each operation the socket waits for a change announced on the bus to be read,
  then runs as the credential's latest state (role, freeze); once the access token
  expired, as an anonymous caller whose private fields fail with TOKEN_EXPIRED (as
  over HTTP). Its private streams end at expiry (`while_valid`); public ones go on.
- When the credential is revoked, its private streams end by themselves
  (`while_valid`: UNAUTHENTICATED with the reason); the socket lets their last frames
  out, then closes with 4403. Public streams end with the socket.

4403 means "this credential is refused" and nothing else, so a client can stop
retrying (graphql-ws retries 4403 by default: README "WebSocket").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from cryptovault.errors import DomainError, Unauthenticated
from cryptovault.resolvers.context import Context

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
# 1013 "Try Again Later": credentials could not be checked (store unreachable);
# graphql-ws clients retry it.
CLOSE_TRY_AGAIN = 1013
# How long a revoked socket waits for its private operations to send their last
# frames before it closes anyway (queries and mutations in flight are also let
# finish within it; in naive subscription mode, public streams make it wait it out).
REVOKED_CLOSE_GRACE = 2.0
MAX_CLOSE_REASON = 120  # bytes; a close frame's reason holds at most 123


class CredentialsRefused(Exception):
    """connection_init carried a credential that is refused (close 4403)."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


class CredentialsUnavailable(Exception):
    """The credential could not be checked (close 1013, try again later)."""


class PendingSockets:
    """Accepted sockets per client address that have not sent connection_init yet."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count: Counter[str] = Counter()

    def claim(self, address: str) -> bool:
        if self._count[address] >= self.limit:
            return False
        self._count[address] += 1
        return True

    def release(self, address: str) -> None:
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]


def close_reason(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return text
    return encoded[:MAX_CLOSE_REASON].decode(errors="ignore")


class TrustedSocket:
    """Mixin for both protocol handlers (websocket.py): the pending-socket cap, the
    credential's watch, and the close when it is revoked."""

    context: Context
    view: Any
    websocket: Any

    _pending_address: str | None = None
    _revocation: asyncio.Task[None] | None = None

    # -- before connection_init -----------------------------------------------------

    async def _claim_pending(self) -> bool:
        """False (and the socket closed with 4429) when its address already has
        WS_MAX_PENDING_PER_IP sockets waiting for their connection_init."""
        pending: PendingSockets = self.view.pending_sockets
        address = self.context.client_key
        if not pending.claim(address):
            with contextlib.suppress(Exception):
                await self.websocket.close(
                    CLOSE_TOO_MANY, "Too many connections awaiting connection_init"
                )
            return False
        self._pending_address = address
        return True

    def _initialising(self) -> None:
        """connection_init arrived: from now on the socket counts for its identity."""
        if self._pending_address is not None:
            self.view.pending_sockets.release(self._pending_address)
            self._pending_address = None

    # -- the credential -------------------------------------------------------------

    def _credential_accepted(self) -> None:
        """After connection_ack: follow the credential until the socket closes."""
        viewer = self.context.viewer
        watch = viewer.watch if viewer is not None else None
        if watch is None:
            return
        watch.listen(self._credential_revoked)
        if watch.error is not None:  # revoked while the ack was being sent
            watch.unlisten(self._credential_revoked)
            self._credential_revoked(watch.error)

    async def _current_credential(self) -> None:
        """Before an operation: run it as the credential stands now. Once the access
        token expired, the socket runs as HTTP runs a request carrying it: as an
        anonymous caller (the address's budget, the anonymous introspection policy)
        whose private fields fail with UNAUTHENTICATED, reason TOKEN_EXPIRED."""
        viewer = self.context.viewer
        if viewer is not None:
            try:
                viewer.check_not_expired()
            except Unauthenticated as expired:
                self.context.viewer = None
                self.context.auth_error = expired
                return
        watch = viewer.watch if viewer is not None else None
        if watch is None:
            return
        await watch.settled()
        if watch.error is None:
            self.context.viewer = watch.viewer

    def _credential_revoked(self, error: DomainError) -> None:
        if self._revocation is None:
            self._revocation = asyncio.create_task(self._close_revoked(error))

    async def _close_revoked(self, error: DomainError) -> None:
        private = [t for t in self._operation_tasks() if not self._runs_shared_stream(t)]
        if private:
            await asyncio.wait(private, timeout=REVOKED_CLOSE_GRACE)
        viewer = self.context.viewer
        log.info(
            "websocket credential revoked",
            extra={
                "user_id": viewer.user_id if viewer is not None else None,
                "reason": error.extensions.get("reason"),
                "close_code": CLOSE_FORBIDDEN,
            },
        )
        with contextlib.suppress(Exception):
            await self._close_after_sent(CLOSE_FORBIDDEN, close_reason(error.message))

    def _release_credential(self) -> None:
        self._initialising()
        if self._revocation is not None and not self._revocation.done():
            self._revocation.cancel()
        viewer = self.context.state.pop("ws_credential", None)
        if viewer is not None and viewer.watch is not None:
            viewer.watch.unlisten(self._credential_revoked)
            self.context.services.credentials.release(viewer)

    # -- what the protocol and the execution layers provide -------------------------

    def _operation_tasks(self) -> Iterable[asyncio.Task[Any]]:
        raise NotImplementedError

    def _runs_shared_stream(self, task: asyncio.Task[Any]) -> bool:
        """Whether the operation task relays a stream that is the same for everyone
        (grouped execution knows; otherwise every operation counts as private)."""
        return False

    async def _close_after_sent(self, code: int, reason: str) -> None:
        """Close behind the frames already queued for the socket."""
        await self.websocket.close(code, reason)
