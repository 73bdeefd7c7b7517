"""Admin views and actions: accounts, freezes, sessions, system statistics. Every
field needs the ADMIN role in a user session (never an API key) and, when
ADMIN_ALLOWED_IPS is set, a request from one of those addresses."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import strawberry

from cryptovault.admin.service import USERS, AccountStats
from cryptovault.extensions.cost import cost
from cryptovault.resolvers import admin as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import ADMIN
from cryptovault.schema.users import User
from cryptovault.trading.stats import TradingStats


@strawberry.type(description="System-wide figures for operators. 24h = the last 24 hours.")
class SystemStats:
    users: int = strawberry.field(
        description="Accounts, every role, deleted (anonymized) ones included."
    )
    active_users24h: int = strawberry.field(description="Accounts that signed in.")
    signups24h: int = strawberry.field(description="Accounts registered.")
    failed_logins24h: int = strawberry.field(
        description="Sign-ins refused for a wrong email or password (audited as auth.login.failed)."
    )
    rate_limit_rejections24h: int = strawberry.field(
        description="Requests refused for an exhausted budget or attempt limit (all "
        "instances with Redis; this instance without)."
    )
    websocket_connections: int = strawberry.field(description="Open on this instance.")
    active_subscriptions: int = strawberry.field(description="Live on this instance.")
    orders24h: int = strawberry.field(
        description="Orders placed in the last 24 hours, whatever became of them (all "
        "instances: read from the store)."
    )
    trades24h: int = strawberry.field(description="Fills in the last 24 hours.")
    trade_volume24h: Decimal = strawberry.field(
        description="USD value of those fills: the sum of quantity x price, fees excluded, "
        "to the cent."
    )
    open_orders: int = strawberry.field(
        description="Orders resting now (OPEN or PARTIALLY_FILLED), every account."
    )

    @classmethod
    def from_domain(cls, s: AccountStats, t: TradingStats) -> SystemStats:
        return cls(
            users=s.users,
            active_users24h=s.active_users_24h,
            signups24h=s.signups_24h,
            failed_logins24h=s.failed_logins_24h,
            rate_limit_rejections24h=s.rate_limit_rejections_24h,
            websocket_connections=s.websocket_connections,
            active_subscriptions=s.active_subscriptions,
            orders24h=t.orders_24h,
            trades24h=t.trades_24h,
            trade_volume24h=t.trade_volume_24h,
            open_orders=t.open_orders,
        )


@strawberry.type
class AdminQuery:
    @strawberry.field(
        description="Accounts, newest first; `search` matches part of the email.",
        permission_classes=ADMIN,
        metadata=cost(max_page=USERS.maximum),
    )
    async def users(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(USERS)] = USERS.default,
        after: Annotated[str | None, AFTER] = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="1 to 100 characters matched anywhere in the email, "
                "case-insensitive and literal (no patterns)."
            ),
        ] = None,
    ) -> Connection[User]:
        return connection(await resolve.users(info, first, after, search), User.from_domain)

    @strawberry.field(description="One account by id.", permission_classes=ADMIN)
    async def user(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="A User id; NOT_FOUND if unknown.")
        ],
    ) -> User:
        return User.from_domain(await resolve.user(info, str(id)))

    @strawberry.field(description="System statistics.", permission_classes=ADMIN)
    async def stats(self, info: Info) -> SystemStats:
        return SystemStats.from_domain(*await resolve.stats(info))


@strawberry.type
class AdminMutation:
    @strawberry.mutation(
        description="Freeze an account: it can sign in and read, but not trade or create "
        "API keys; its open orders are canceled and their holds released. Audited.",
        permission_classes=ADMIN,
    )
    async def freeze_user(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The account's User id; NOT_FOUND if unknown."),
        ],
        reason: Annotated[
            str,
            strawberry.argument(
                description="Why, shown as frozenReason and audited: 1 to 500 characters, "
                "not blank."
            ),
        ],
    ) -> User:
        return User.from_domain(await resolve.set_frozen(info, str(id), True, reason))

    @strawberry.mutation(description="Lift a freeze. Audited.", permission_classes=ADMIN)
    async def unfreeze_user(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The account's User id; NOT_FOUND if unknown."),
        ],
    ) -> User:
        return User.from_domain(await resolve.set_frozen(info, str(id), False, None))

    @strawberry.mutation(
        description="Sign an account out everywhere: revokes all its sessions (refresh "
        "tokens). Returns how many were revoked. Audited.",
        permission_classes=ADMIN,
    )
    async def revoke_user_sessions(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The account's User id; NOT_FOUND if unknown."),
        ],
    ) -> int:
        return await resolve.revoke_user_sessions(info, str(id))
