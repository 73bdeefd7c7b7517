"""Sign-in resolvers: map arguments to the identity service, return what it answers
(schema/auth.py maps it), and handle the browser refresh cookie (with its CSRF rule)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import Forbidden, Unauthenticated
from cryptovault.paging import Page
from cryptovault.resolvers.access import require_viewer
from cryptovault.security.devices import TTL as DEVICE_TTL
from cryptovault.security.identity import SignIn, TwoFactorSetup

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

REFRESH_COOKIE = "cryptovault_refresh"
DEVICE_COOKIE = "cryptovault_device"
COOKIE_PATH = "/graphql"
# Browsers only send a custom header cross-origin after a CORS preflight that our
# allow-list answers; a forged form or image request cannot carry it.
CSRF_HEADER = "x-csrf-protection"


# -- the sign-in answer ----------------------------------------------------------------


def _signed_in(info: Info, signed_in: SignIn) -> SignIn:
    """`signed_in`, its refresh token (and device token) also set as cookies."""
    _set_refresh_cookie(info, signed_in)
    if signed_in.device_token is not None:
        _set_cookie(info, DEVICE_COOKIE, signed_in.device_token, int(DEVICE_TTL.total_seconds()))
    return signed_in


# -- the refresh cookie ----------------------------------------------------------------


def _set_refresh_cookie(info: Info, signed_in: SignIn) -> None:
    max_age = int(
        (signed_in.refresh_expires_at - signed_in.access.claims.issued_at).total_seconds()
    )
    _set_cookie(info, REFRESH_COOKIE, signed_in.refresh_token, max_age)


def _set_cookie(info: Info, name: str, value: str, max_age: int) -> None:
    response = info.context.response
    if not isinstance(response, Response):  # over a WebSocket there is no cookie
        return
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=info.context.services.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def _clear_refresh_cookie(info: Info) -> None:
    response = info.context.response
    if isinstance(response, Response):
        response.delete_cookie(
            REFRESH_COOKIE,
            path=COOKIE_PATH,
            secure=info.context.services.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )


def _cookie(info: Info, name: str) -> str | None:
    request = info.context.request
    return request.cookies.get(name) if isinstance(request, Request) else None


def _cookie_refresh_token(info: Info) -> str | None:
    """The refresh cookie, if sent; only honoured with the CSRF header."""
    token = _cookie(info, REFRESH_COOKIE)
    if token and not info.context.request.headers.get(CSRF_HEADER):
        raise Forbidden(
            "Requests authenticated by the refresh cookie need the X-CSRF-Protection header",
            reason="CSRF_HEADER_MISSING",
        )
    return token or None


# -- mutations -------------------------------------------------------------------------


async def _limit(info: Info, kind: str, account: str | None) -> None:
    """Per-IP and per-account attempt limits, checked before any password hashing."""
    await info.context.services.limiter.hit_auth(kind, info.context.client_key, account)


async def register(info: Info, email: str, password: str) -> SignIn:
    await _limit(info, "register", email)
    identity = info.context.services.identity
    return _signed_in(info, await identity.register(email, password, info.context.origin))


async def login(
    info: Info, email: str, password: str, otp: str | None, device_token: str | None
) -> SignIn:
    identity = info.context.services.identity
    device_token = device_token or _cookie(info, DEVICE_COOKIE)
    found = identity.devices.read(device_token, now_ms())
    # A device that signed in before has an attempt budget of its own, so that
    # attempts on its address by anyone else do not use it up.
    await _limit(info, "login", email if found is None else f"{email}#{found[1]}")
    signed_in = await identity.login(email, password, otp, info.context.origin, device_token)
    return _signed_in(info, signed_in)


async def refresh(info: Info, refresh_token: str | None) -> SignIn:
    token = refresh_token if refresh_token is not None else _cookie_refresh_token(info)
    if not token:
        raise Unauthenticated(
            "No refresh token: pass refreshToken or send the refresh cookie",
            reason="REFRESH_TOKEN_MISSING",
        )
    identity = info.context.services.identity
    try:
        signed_in = await identity.refresh(token, info.context.origin)
    except Unauthenticated:
        if refresh_token is None:
            _clear_refresh_cookie(info)
        raise
    return _signed_in(info, signed_in)


async def logout(info: Info) -> bool:
    viewer = info.context.viewer
    cookie = None
    if viewer is not None:
        viewer = require_viewer(info)
        if viewer.is_api_key:
            raise Forbidden("API keys have no session to end; revoke the key instead")
    else:
        # A browser whose access token expired still holds its refresh cookie.
        cookie = _cookie_refresh_token(info)
        if cookie is None:
            require_viewer(info)  # raises why the caller is not authenticated
    await info.context.services.identity.logout(viewer, info.context.origin, cookie)
    _clear_refresh_cookie(info)
    return True


async def change_password(info: Info, current: str, new: str) -> bool:
    viewer = require_viewer(info)
    await info.context.services.identity.change_password(viewer, current, new, info.context.origin)
    return True


async def request_password_reset(info: Info, email: str) -> bool:
    await _limit(info, "password_reset", email)
    await info.context.services.identity.request_password_reset(email, info.context.origin)
    return True


async def reset_password(info: Info, token: str, new_password: str) -> bool:
    await _limit(info, "password_reset", None)
    await info.context.services.identity.reset_password(token, new_password, info.context.origin)
    return True


async def revoke_session(info: Info, session_id: str) -> bool:
    viewer = require_viewer(info)
    await info.context.services.identity.revoke_session(viewer, session_id, info.context.origin)
    return True


async def revoke_other_sessions(info: Info) -> int:
    viewer = require_viewer(info)
    return await info.context.services.identity.revoke_other_sessions(viewer, info.context.origin)


async def enable_two_factor(info: Info) -> TwoFactorSetup:
    viewer = require_viewer(info)
    return await info.context.services.identity.begin_two_factor(viewer, info.context.origin)


async def confirm_two_factor(info: Info, code: str) -> UserDocument:
    viewer = require_viewer(info)
    await _limit(info, "two_factor", viewer.user_id)
    identity = info.context.services.identity
    return await identity.confirm_two_factor(viewer, code, info.context.origin)


async def disable_two_factor(info: Info, code: str) -> UserDocument:
    viewer = require_viewer(info)
    await _limit(info, "two_factor", viewer.user_id)
    identity = info.context.services.identity
    return await identity.disable_two_factor(viewer, code, info.context.origin)


async def create_api_key(info: Info, name: str, scopes: list[str]) -> tuple[ApiKeyDocument, str]:
    """The new key's document and the key itself (shown once)."""
    viewer = require_viewer(info)
    return await info.context.services.api_keys.create(viewer, name, scopes, info.context.origin)


async def revoke_api_key(info: Info, key_id: str) -> ApiKeyDocument:
    viewer = require_viewer(info)
    return await info.context.services.api_keys.revoke(viewer, key_id, info.context.origin)


# -- queries ---------------------------------------------------------------------------


async def sessions(
    info: Info, first: int | None, after: str | None
) -> tuple[Page[SessionDocument], str | None]:
    """The viewer's live sessions, and which of them is the caller's own."""
    viewer = require_viewer(info)
    page = await info.context.services.identity.sessions.page(
        viewer.user_id, now_ms(), first, after
    )
    return page, viewer.session_id


async def api_keys(info: Info, first: int | None, after: str | None) -> Page[ApiKeyDocument]:
    viewer = require_viewer(info)
    return await info.context.services.api_keys.page(viewer.user_id, first, after)
