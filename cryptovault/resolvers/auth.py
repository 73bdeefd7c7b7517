"""Sign-in resolvers: map arguments to the identity service, results to schema types,
and handle the browser refresh cookie (with its CSRF rule)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.errors import Forbidden, Unauthenticated
from cryptovault.resolvers.users import to_user
from cryptovault.schema import auth as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_time_cursor,
    encode_time_cursor,
    items_before,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.security.devices import TTL as DEVICE_TTL
from cryptovault.security.identity import SignIn

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

REFRESH_COOKIE = "cryptovault_refresh"
DEVICE_COOKIE = "cryptovault_device"
COOKIE_PATH = "/graphql"
# Browsers only send a custom header cross-origin after a CORS preflight that our
# allow-list answers; a forged form or image request cannot carry it.
CSRF_HEADER = "x-csrf-protection"
MAX_PAGE = 100


# -- mapping ---------------------------------------------------------------------------


def to_payload(info: Info, signed_in: SignIn) -> types.AuthPayload:
    _set_refresh_cookie(info, signed_in)
    if signed_in.device_token is not None:
        _set_cookie(info, DEVICE_COOKIE, signed_in.device_token, int(DEVICE_TTL.total_seconds()))
    return types.AuthPayload(
        access_token=signed_in.access.token,
        refresh_token=signed_in.refresh_token,
        expires_at=signed_in.access.claims.expires_at,
        refresh_token_expires_at=signed_in.refresh_expires_at,
        user=to_user(signed_in.user),
        device_token=signed_in.device_token,
    )


def to_session(doc: SessionDocument, current_id: str | None) -> types.Session:
    return types.Session(
        id=doc.id,  # type: ignore[arg-type]
        created_at=doc.created_at,
        last_used_at=doc.last_used_at,
        expires_at=doc.expires_at,
        ip=doc.ip,
        user_agent=doc.user_agent,
        current=doc.id == current_id,
    )


def to_api_key(doc: ApiKeyDocument) -> types.ApiKey:
    return types.ApiKey(
        id=doc.id,  # type: ignore[arg-type]
        name=doc.name,
        prefix=doc.prefix,
        scopes=[types.ApiKeyScope(s) for s in doc.scopes],
        created_at=doc.created_at,
        last_used_at=doc.last_used_at,
        revoked_at=doc.revoked_at,
    )


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


async def register(info: Info, data: types.RegisterInput) -> types.AuthPayload:
    await _limit(info, "register", data.email)
    identity = info.context.services.identity
    return to_payload(info, await identity.register(data.email, data.password, info.context.origin))


async def login(info: Info, data: types.LoginInput) -> types.AuthPayload:
    identity = info.context.services.identity
    device_token = data.device_token or _cookie(info, DEVICE_COOKIE)
    found = identity.devices.read(device_token, now_ms())
    # A device that signed in before has an attempt budget of its own, so that
    # attempts on its address by anyone else do not use it up.
    await _limit(info, "login", data.email if found is None else f"{data.email}#{found[1]}")
    signed_in = await identity.login(
        data.email, data.password, data.otp, info.context.origin, device_token
    )
    return to_payload(info, signed_in)


async def refresh(info: Info, refresh_token: str | None) -> types.AuthPayload:
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
    return to_payload(info, signed_in)


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


async def enable_two_factor(info: Info) -> types.TwoFactorSetup:
    viewer = require_viewer(info)
    setup = await info.context.services.identity.begin_two_factor(viewer, info.context.origin)
    return types.TwoFactorSetup(
        secret=setup.secret, otpauth_uri=setup.otpauth_uri, recovery_codes=setup.recovery_codes
    )


async def confirm_two_factor(info: Info, code: str) -> types.User:
    viewer = require_viewer(info)
    await _limit(info, "two_factor", viewer.user_id)
    identity = info.context.services.identity
    return to_user(await identity.confirm_two_factor(viewer, code, info.context.origin))


async def disable_two_factor(info: Info, code: str) -> types.User:
    viewer = require_viewer(info)
    await _limit(info, "two_factor", viewer.user_id)
    identity = info.context.services.identity
    return to_user(await identity.disable_two_factor(viewer, code, info.context.origin))


async def create_api_key(
    info: Info, name: str, scopes: list[types.ApiKeyScope]
) -> types.CreatedApiKey:
    viewer = require_viewer(info)
    doc, key = await info.context.services.api_keys.create(
        viewer, name, [s.value for s in scopes], info.context.origin
    )
    return types.CreatedApiKey(key=key, api_key=to_api_key(doc))


async def revoke_api_key(info: Info, key_id: str) -> types.ApiKey:
    viewer = require_viewer(info)
    doc = await info.context.services.api_keys.revoke(viewer, key_id, info.context.origin)
    return to_api_key(doc)


# -- queries ---------------------------------------------------------------------------


async def sessions(info: Info, first: int | None, after: str | None) -> Connection[types.Session]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor("session", after) if after is not None else None
    sessions, now = info.context.services.identity.sessions, now_ms()
    found, more = await sessions.page(viewer.user_id, now, size, position)

    async def newest() -> tuple[datetime, str] | None:
        top, _ = await sessions.page(viewer.user_id, now, 1, None)
        return (top[0].created_at, top[0].id) if top else None

    return connection(
        found,
        lambda s: encode_time_cursor("session", s.created_at, s.id),
        lambda s: to_session(s, viewer.session_id),
        has_next=more,
        has_previous=await items_before(position, newest),
    )


async def api_keys(info: Info, first: int | None, after: str | None) -> Connection[types.ApiKey]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor("apikey", after) if after is not None else None
    keys = info.context.services.api_keys
    found, more = await keys.page(viewer.user_id, size, position)

    async def newest() -> tuple[datetime, str] | None:
        top, _ = await keys.page(viewer.user_id, 1, None)
        return (top[0].created_at, top[0].id) if top else None

    return connection(
        found,
        lambda k: encode_time_cursor("apikey", k.created_at, k.id),
        to_api_key,
        has_next=more,
        has_previous=await items_before(position, newest),
    )
