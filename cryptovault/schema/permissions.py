"""Per-field permission classes, named for the rule they enforce; the rules
themselves are resolvers/access.py's checks (each raises a domain error with a stable
code: UNAUTHENTICATED / FORBIDDEN)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from cryptovault.resolvers import access
from cryptovault.resolvers.context import Info


class IsAuthenticated(BasePermission):
    message = "Authentication required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        access.require_viewer(info)
        return True


class IsAdmin(BasePermission):
    """An administrator signed in as such: API keys never carry admin rights, even
    an admin's."""

    message = access.NOT_ADMIN

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        access.require_admin(info)
        return True


class IsUserSession(BasePermission):
    """Account management (password, 2FA, sessions, API keys) needs the user's own
    session: an API key cannot widen or outlive itself."""

    message = access.NOT_USER_SESSION

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        access.require_user_session(info)
        return True


class NotFrozen(BasePermission):
    message = access.FROZEN

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        access.require_not_frozen(info)
        return True


def HasScope(scope: str) -> type[BasePermission]:
    """Permission for API keys: the key must carry `scope` (user sessions have all)."""

    class _HasScope(BasePermission):
        message = f"This API key lacks the '{scope}' scope"

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            access.require_scope(info, scope)
            return True

    _HasScope.__name__ = f"HasScope_{scope.replace(':', '_')}"
    return _HasScope


# The permission lists fields use, named once (a field's description names its scope).
type Permissions = list[type[BasePermission]]
SIGNED_IN: Permissions = [IsAuthenticated]
USER_SESSION: Permissions = [IsAuthenticated, IsUserSession]
ADMIN: Permissions = [IsAdmin]
PORTFOLIO_READ: Permissions = [IsAuthenticated, HasScope("portfolio:read")]
PORTFOLIO_WRITE: Permissions = [IsAuthenticated, HasScope("portfolio:write")]
TRADE: Permissions = [IsAuthenticated, NotFrozen, HasScope("trade")]


# How every private subscription ends (schema descriptions; README "WebSocket").
PRIVATE_STREAM_ENDS = (
    "Ends with UNAUTHENTICATED when its credential expires or is revoked (logout, "
    "password change or reset, a revoked session or API key, account deletion; "
    "`extensions.reason` says which), the socket then closing with 4403; and with "
    "FORBIDDEN (reason ACCOUNT_FROZEN or ROLE_CHANGED) when the account is frozen or "
    "loses its role: subscribe again to keep reading."
)
