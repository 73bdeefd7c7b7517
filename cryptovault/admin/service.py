"""Admin actions and views. Every action is audited with the acting admin."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import SortDirection

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.common import older_than
from cryptovault.documents.users import UserDocument
from cryptovault.errors import BadUserInput, NotFound
from cryptovault.events.counters import HourlyCounters
from cryptovault.protection.limiter import REJECTIONS, Limiter
from cryptovault.security.audit import AuditLog
from cryptovault.security.identity import IdentityService
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer

MAX_SEARCH = 100
DAY = timedelta(hours=24)

FreezeHook = Callable[[str, Viewer, Origin], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class AccountStats:
    users: int
    active_users_24h: int
    signups_24h: int
    failed_logins_24h: int
    rate_limit_rejections_24h: int
    websocket_connections: int
    active_subscriptions: int


class AdminService:
    def __init__(
        self,
        identity: IdentityService,
        audit: AuditLog,
        limiter: Limiter,
        counters: HourlyCounters,
        live: Callable[[], tuple[int, int]],
    ) -> None:
        self.identity = identity
        self.audit = audit
        self.limiter = limiter
        self.counters = counters
        # (open WebSocket connections, running subscriptions) on this instance.
        self.live = live
        # Run after a user is frozen (the trading engine cancels their open orders).
        self.freeze_hooks: list[FreezeHook] = []

    async def users_page(
        self, first: int, after: tuple[datetime, str] | None, search: str | None
    ) -> tuple[list[UserDocument], bool, int]:
        """Newest accounts first; `search` matches part of the email. Returns the
        page, whether more follow, and the total matching."""
        query: dict[str, Any] = {}
        if search is not None:
            text = search.strip().lower()
            if not text or len(text) > MAX_SEARCH:
                raise BadUserInput(f"search must be 1 to {MAX_SEARCH} characters", field="search")
            query["email"] = {"$regex": re.escape(text)}
        total = await UserDocument.find(query).count()
        if after is not None:
            query = {"$and": [query, older_than(after)]}
        found = (
            await UserDocument.find(query)
            .sort([("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)])
            .limit(first + 1)
            .to_list()
        )
        return found[:first], len(found) > first, total

    async def get_user(self, user_id: str) -> UserDocument:
        user = await self.identity.get_user(user_id)
        if user is None:
            raise NotFound("No such user", id=user_id)
        return user

    async def set_frozen(
        self, actor: Viewer, user_id: str, frozen: bool, reason: str | None, origin: Origin
    ) -> UserDocument:
        user = await self.identity.set_frozen(user_id, frozen, reason, actor, origin)
        if frozen:
            for hook in self.freeze_hooks:
                await hook(user_id, actor, origin)
        return user

    async def revoke_sessions(self, actor: Viewer, user_id: str, origin: Origin) -> int:
        await self.get_user(user_id)
        revoked = await self.identity.sessions.revoke_all(
            user_id, datetime.now(UTC), "revoked by an administrator"
        )
        await self.audit.record(
            "admin.sessions.revoked",
            actor=actor,
            user_id=user_id,
            target=f"user:{user_id}",
            origin=origin,
            details={"sessions": revoked},
        )
        return revoked

    async def account_stats(self) -> AccountStats:
        since = datetime.now(UTC) - DAY
        failed = await AuditEntryDocument.find(
            {"action": "auth.login.failed", "at": {"$gte": since}}
        ).count()
        return AccountStats(
            users=await UserDocument.find({}).count(),
            active_users_24h=await UserDocument.find({"last_login_at": {"$gte": since}}).count(),
            signups_24h=await UserDocument.find({"created_at": {"$gte": since}}).count(),
            failed_logins_24h=failed,
            rate_limit_rejections_24h=await self.counters.last_24h(REJECTIONS),
            websocket_connections=self.live()[0],
            active_subscriptions=self.live()[1],
        )
