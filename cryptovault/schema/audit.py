"""The audit log in the schema: `auditLog` for admins, `securityEvents` for the viewer's
own entries (a page, and live over WebSocket)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.extensions.cost import cost
from cryptovault.resolvers import audit as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import (
    ADMIN,
    PRIVATE_STREAM_ENDS,
    USER_SESSION,
)
from cryptovault.security.audit import AUDIT


@strawberry.type(description="One recorded sensitive action.")
class AuditEntry:
    id: strawberry.ID = strawberry.field(description="The entry's id (entries are never changed).")
    at: datetime = strawberry.field(description="When it happened.")
    # A String, not an enum: actions are an open set that grows with features, and a
    # new enum value would break clients that switch exhaustively over it.
    action: str = strawberry.field(
        description="What happened, as a dotted name (a String: new actions are added as "
        "features are, so handle unknown names). Today: user.registered, user.frozen, "
        "user.unfrozen, user.deleted, user.data_exported, auth.login.succeeded, "
        "auth.login.failed, auth.account.locked, auth.logout, auth.refresh_token.reused, "
        "auth.password.changed, auth.password.reset_requested, auth.password.reset, "
        "auth.2fa.setup_started, auth.2fa.enabled, auth.2fa.disabled, "
        "auth.2fa.recovery_code_used, apikey.created, apikey.revoked, session.revoked, "
        "session.others_revoked, admin.created, admin.promoted, admin.sessions.revoked, "
        "admin.balance_adjusted, order.placed, order.canceled."
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
    ip: str | None = strawberry.field(
        description="The client address of the request; null for the system, and "
        "erased when the account is deleted."
    )
    user_agent: str | None = strawberry.field(
        description="The request's User-Agent; erased when the account is deleted."
    )
    request_id: str | None = strawberry.field(
        description="The request's id, as in the X-Request-ID response header and the logs."
    )
    details: JSON = strawberry.field(description="Facts about the action; never secrets.")

    @classmethod
    def from_domain(cls, doc: AuditEntryDocument) -> AuditEntry:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            at=doc.at,
            action=doc.action,
            actor_id=doc.actor_id,  # type: ignore[arg-type]
            actor_api_key_id=doc.actor_api_key_id,  # type: ignore[arg-type]
            user_id=doc.user_id,  # type: ignore[arg-type]
            target=doc.target,
            ip=doc.ip,
            user_agent=doc.user_agent,
            request_id=doc.request_id,
            details=JSON(doc.details),
        )


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description="Admin only: every audit entry, newest first (by the entry's `at`). "
        "`userId` matches entries where the user acted or was concerned; `action` is an "
        "exact action name; `from` (inclusive) and `to` (exclusive) bound `at`.",
        permission_classes=ADMIN,
        metadata=cost(max_page=AUDIT.maximum),
    )
    async def audit_log(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(AUDIT)] = AUDIT.default,
        after: Annotated[str | None, AFTER] = None,
        user_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only entries where this user acted or was concerned."),
        ] = None,
        action: Annotated[
            str | None,
            strawberry.argument(
                description='Only this action, by exact name, e.g. "auth.login.failed".'
            ),
        ] = None,
        from_: Annotated[
            datetime | None,
            strawberry.argument(description="Only entries at or after this time.", name="from"),
        ] = None,
        to: Annotated[
            datetime | None,
            strawberry.argument(
                description="Only entries before this time (after `from`, else BAD_USER_INPUT)."
            ),
        ] = None,
    ) -> Connection[AuditEntry]:
        page = await resolve.audit_log(info, first, after, user_id, action, from_, to)
        return connection(page, AuditEntry.from_domain)

    @strawberry.field(
        description="The viewer's own security events (sign-ins, failures, password and "
        "2FA changes, API keys, sessions), newest first.",
        permission_classes=USER_SESSION,
        metadata=cost(max_page=AUDIT.maximum),
    )
    async def security_events(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(AUDIT)] = AUDIT.default,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[AuditEntry]:
        return connection(await resolve.security_events(info, first, after), AuditEntry.from_domain)


@strawberry.type
class AuditSubscription:
    @strawberry.subscription(
        description="The viewer's security events as they happen (e.g. a sign-in from "
        "another device). " + PRIVATE_STREAM_ENDS,
        permission_classes=USER_SESSION,
    )
    async def security_events(self, info: Info) -> AsyncGenerator[AuditEntry]:
        async for entry in resolve.security_event_stream(info):
            yield AuditEntry.from_domain(entry)
