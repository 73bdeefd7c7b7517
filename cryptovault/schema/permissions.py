"""Per-field permission classes. Each raises a domain error so the error mapping gives
it a stable code (UNAUTHENTICATED / FORBIDDEN)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from cryptovault.errors import Forbidden, Unauthenticated
from cryptovault.resolvers.context import Info
from cryptovault.security.viewer import Viewer


def require_viewer(info: Info) -> Viewer:
    """The caller as it stands now, or UNAUTHENTICATED: no credentials, refused
    credentials (with the reason, e.g. TOKEN_EXPIRED), or a WebSocket whose credential
    expired or was revoked since connecting. On a WebSocket the role and freeze are
    the latest this instance heard of (security/credentials.py), not those read at
    connection_init."""
    refused = info.context.auth_error
    if refused is not None:
        raise type(refused)(refused.message, **refused.extensions)
    viewer = info.context.viewer
    if viewer is None:
        raise Unauthenticated("Authentication required")
    return viewer.current()


class IsAuthenticated(BasePermission):
    message = "Authentication required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        require_viewer(info)
        return True


class IsAdmin(BasePermission):
    """An administrator signed in as such: API keys never carry admin rights, even
    an admin's."""

    message = "Administrator role required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        viewer = require_viewer(info)
        if not viewer.is_admin or viewer.is_api_key:
            raise Forbidden(self.message)
        if not info.context.services.settings.admin_ip_allowed(info.context.client_address):
            raise Forbidden("Admin access is not allowed from this address")
        return True


class IsUserSession(BasePermission):
    """Account management (password, 2FA, sessions, API keys) needs the user's own
    session: an API key cannot widen or outlive itself."""

    message = "This needs a user session: API keys cannot manage the account"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if require_viewer(info).is_api_key:
            raise Forbidden(self.message)
        return True


class NotFrozen(BasePermission):
    message = "This account is frozen"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if require_viewer(info).frozen:
            raise Forbidden(self.message)
        return True


def HasScope(scope: str) -> type[BasePermission]:
    """Permission for API keys: the key must carry `scope` (user sessions have all)."""

    class _HasScope(BasePermission):
        message = f"This API key lacks the '{scope}' scope"

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            if not require_viewer(info).has_scope(scope):
                raise Forbidden(self.message, scope=scope)
            return True

    _HasScope.__name__ = f"HasScope_{scope.replace(':', '_')}"
    return _HasScope


# How every private subscription ends (schema descriptions; README "WebSocket").
PRIVATE_STREAM_ENDS = (
    "Ends with UNAUTHENTICATED when its credential expires or is revoked (logout, "
    "password change or reset, a revoked session or API key, account deletion; "
    "`extensions.reason` says which), the socket then closing with 4403; and with "
    "FORBIDDEN (reason ACCOUNT_FROZEN or ROLE_CHANGED) when the account is frozen or "
    "loses its role: subscribe again to keep reading."
)
