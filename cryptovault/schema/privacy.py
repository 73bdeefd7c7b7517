"""The viewer's own data: export and account deletion."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from cryptovault.resolvers import privacy as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.permissions import USER_SESSION


@strawberry.type
class PrivacyMutation:
    @strawberry.mutation(
        description="Everything stored about the viewer (account, sessions, API keys "
        "without secrets, orders, trades, ledger, balances, audit entries, watchlist, "
        "alerts) as JSON; exact numbers and dates in relaxed Extended JSON. Audited. "
        "At most EXPORT_RATE_LIMIT (3 an hour by default) per user: RATE_LIMITED with "
        "retryAfter beyond.",
        permission_classes=USER_SESSION,
    )
    async def export_my_data(self, info: Info) -> JSON:
        return await resolve.export_my_data(info)

    @strawberry.mutation(
        description="Delete the viewer's account after confirming the password: open "
        "orders are canceled, sessions and API keys revoked, the email, password, 2FA "
        "secrets and the IPs of its audit entries erased. Ledger, orders and trades are "
        "kept under the anonymous account id so the books still balance.",
        permission_classes=USER_SESSION,
    )
    async def delete_my_account(
        self,
        info: Info,
        password: Annotated[
            str,
            strawberry.argument(
                description="The account's password, to confirm (UNAUTHENTICATED if wrong)."
            ),
        ],
    ) -> bool:
        return await resolve.delete_my_account(info, password)
