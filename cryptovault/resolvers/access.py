"""Who may do what: the checks behind the schema's permission classes
(schema/permissions.py), as plain functions resolvers call too. Each raises a domain
error, so the error mapping gives it a stable code (UNAUTHENTICATED / FORBIDDEN)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.errors import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info
    from cryptovault.security.viewer import Viewer

NOT_ADMIN = "Administrator role required"
NOT_ADMIN_ADDRESS = "Admin access is not allowed from this address"
NOT_USER_SESSION = "This needs a user session: API keys cannot manage the account"
FROZEN = "This account is frozen"


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


def require_admin(info: Info) -> Viewer:
    """An administrator signed in as such: API keys never carry admin rights, even
    an admin's."""
    viewer = require_viewer(info)
    if not viewer.is_admin or viewer.is_api_key:
        raise Forbidden(NOT_ADMIN)
    if not info.context.services.settings.admin_ip_allowed(info.context.client_address):
        raise Forbidden(NOT_ADMIN_ADDRESS)
    return viewer


def require_user_session(info: Info) -> Viewer:
    """Account management (password, 2FA, sessions, API keys) needs the user's own
    session: an API key cannot widen or outlive itself."""
    viewer = require_viewer(info)
    if viewer.is_api_key:
        raise Forbidden(NOT_USER_SESSION)
    return viewer


def require_not_frozen(info: Info) -> Viewer:
    viewer = require_viewer(info)
    if viewer.frozen:
        raise Forbidden(FROZEN)
    return viewer


def require_scope(info: Info, scope: str) -> Viewer:
    """API keys must carry `scope` (user sessions have all)."""
    viewer = require_viewer(info)
    if not viewer.has_scope(scope):
        raise Forbidden(f"This API key lacks the '{scope}' scope", scope=scope)
    return viewer
