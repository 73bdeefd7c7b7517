"""The audit log in the schema: `auditLog` for admins, `securityEvents` for the viewer's
own entries (a page, and live over WebSocket)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from cryptovault.resolvers import audit as resolve
from cryptovault.schema.context import Info
from cryptovault.schema.pagination import Connection
from cryptovault.schema.permissions import (
    PRIVATE_STREAM_ENDS,
    IsAdmin,
    IsAuthenticated,
    IsUserSession,
)


@strawberry.type(description="One recorded sensitive action.")
class AuditEntry:
    id: strawberry.ID
    at: datetime
    action: str = strawberry.field(
        description='Dotted name, e.g. "auth.login.succeeded", "auth.login.failed", '
        '"auth.refresh_token.reused", "apikey.created", "order.placed".'
    )
    actor_id: strawberry.ID | None = strawberry.field(
        description="The user who acted; null for anonymous callers and the system."
    )
    actor_api_key_id: strawberry.ID | None = strawberry.field(
        description="Set when the actor used an API key."
    )
    user_id: strawberry.ID | None = strawberry.field(description="The account concerned.")
    target: str | None = strawberry.field(
        description='What was acted on, as "<kind>:<id>", e.g. "session:65f0...".'
    )
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: JSON = strawberry.field(description="Facts about the action; never secrets.")


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description="Admin only: every audit entry, newest first (by the entry's `at`). "
        "`userId` matches entries where the user acted or was concerned; `action` is an "
        "exact action name; `from` (inclusive) and `to` (exclusive) bound `at`.",
        permission_classes=[IsAdmin],
    )
    async def audit_log(
        self,
        info: Info,
        first: int | None = 50,
        after: str | None = None,
        user_id: strawberry.ID | None = None,
        action: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> Connection[AuditEntry]:
        return await resolve.audit_log(info, first, after, user_id, action, from_, to)

    @strawberry.field(
        description="The viewer's own security events (sign-ins, failures, password and "
        "2FA changes, API keys, sessions), newest first.",
        permission_classes=[IsAuthenticated, IsUserSession],
    )
    async def security_events(
        self, info: Info, first: int | None = 50, after: str | None = None
    ) -> Connection[AuditEntry]:
        return await resolve.security_events(info, first, after)


@strawberry.type
class AuditSubscription:
    @strawberry.subscription(
        description="The viewer's security events as they happen (e.g. a sign-in from "
        "another device). " + PRIVATE_STREAM_ENDS,
        permission_classes=[IsAuthenticated, IsUserSession],
    )
    async def security_events(self, info: Info) -> AsyncGenerator[AuditEntry]:
        async for entry in resolve.security_event_stream(info):
            yield entry
