"""Audit log resolvers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from strawberry.scalars import JSON

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.errors import BadUserInput
from cryptovault.schema import audit as types
from cryptovault.schema.pagination import (
    Connection,
    PageInfo,
    build_edges,
    check_page_size,
    decode_time_cursor,
    encode_time_cursor,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.security.audit import MAX_PAGE, security_topic
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.schema.context import Info

CURSOR = "audit"


def to_entry(doc: AuditEntryDocument) -> types.AuditEntry:
    return types.AuditEntry(
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


def _connection(found: list[AuditEntryDocument], more: bool) -> Connection[types.AuditEntry]:
    edges, end = build_edges(found, lambda e: encode_time_cursor(CURSOR, e.at, e.id), to_entry)
    return Connection(edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=end))


async def audit_log(
    info: Info,
    first: int | None,
    after: str | None,
    user_id: str | None,
    action: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Connection[types.AuditEntry]:
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    if since is not None and until is not None and since >= until:
        raise BadUserInput("`from` must be before `to`", field="from")
    found, more = await info.context.services.audit.page(
        size, position, user_id=user_id, action=action, since=since, until=until
    )
    return _connection(found, more)


async def security_events(
    info: Info, first: int | None, after: str | None
) -> Connection[types.AuditEntry]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    found, more = await info.context.services.audit.page(size, position, own_user_id=viewer.user_id)
    return _connection(found, more)


async def security_event_stream(info: Info) -> AsyncIterator[types.AuditEntry]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(security_topic(viewer.user_id), maxsize=64) as sub:
        async for entry in while_valid(viewer, sub):
            yield to_entry(entry)
