"""Per-field permission classes. Each raises a domain error so the error mapping gives
it a stable code (UNAUTHENTICATED / FORBIDDEN)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from cryptovault.errors import Forbidden, Unauthenticated
from cryptovault.schema.context import Info
from cryptovault.security.viewer import Viewer


def require_viewer(info: Info) -> Viewer:
    viewer = info.context.viewer
    if viewer is None:
        raise Unauthenticated("Authentication required")
    return viewer


class IsAuthenticated(BasePermission):
    message = "Authentication required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        require_viewer(info)
        return True


class IsAdmin(BasePermission):
    message = "Administrator role required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if not require_viewer(info).is_admin:
            raise Forbidden(self.message)
        return True


class NotFrozen(BasePermission):
    message = "This account is frozen"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if require_viewer(info).frozen:
            raise Forbidden(self.message)
        return True


def HasScope(scope: str) -> type[BasePermission]:  # noqa: N802 - reads like a class
    """Permission for API keys: the key must carry `scope` (user sessions have all)."""

    class _HasScope(BasePermission):
        message = f"This API key lacks the '{scope}' scope"

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            if not require_viewer(info).has_scope(scope):
                raise Forbidden(self.message, scope=scope)
            return True

    _HasScope.__name__ = f"HasScope_{scope.replace(':', '_')}"
    return _HasScope
