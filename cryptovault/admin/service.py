"""Admin actions and views. Every action is audited with the acting admin."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import BadUserInput, NotFound
from cryptovault.events.counters import HourlyCounters
from cryptovault.paging import Listing, Page, page
from cryptovault.protection.limiter import REJECTIONS, Limiter
from cryptovault.security.audit import AuditLog
from cryptovault.security.identity import IdentityService
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer

MAX_SEARCH = 100
USERS = Listing("user", default=50, maximum=200)
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
        self, first: int | None, after: str | None, search: str | None
    ) -> Page[UserDocument]:
        """Newest accounts first; `search` matches part of the email. The page counts
        every account matching (`total_count`)."""
        first = USERS.size(first)  # BAD_USER_INPUT for `first` before the search's
        query: dict[str, Any] = {}
        if search is not None:
            text = search.strip().lower()
            if not text or len(text) > MAX_SEARCH:
                raise BadUserInput(f"search must be 1 to {MAX_SEARCH} characters", field="search")
            query["email"] = {"$regex": re.escape(text)}
        total = await UserDocument.find(query).count()
        return await page(UserDocument, USERS, query, first, after, total_count=total)

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
