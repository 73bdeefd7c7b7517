"""Who is calling: `Authorization: Bearer <access token>` (users) or `X-API-Key`
(partners) on HTTP, the same inside a WebSocket's connection_init payload
(`{"authorization": "Bearer ..."}` or `{"x-api-key": "..."}`). `revalidate` answers
the same question again for credentials already accepted (open WebSockets), from the
same rules, so a socket and an HTTP request get the same verdict."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from starlette.requests import HTTPConnection
from starlette.types import Scope

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import DomainError, Unauthenticated
from cryptovault.security.apikeys import USER_FIELDS, ApiKeys, check_owner, key_revoked
from cryptovault.security.authcache import AuthCache
from cryptovault.security.sessions import TOUCH_EVERY, SessionStore, aware, session_valid
from cryptovault.security.tokens import AccessClaims, TokenIssuer
from cryptovault.security.viewer import Viewer

MAX_CREDENTIAL = 4096


@dataclass(slots=True)
class SessionGrant:
    """What an accepted access token stands for, as the cache keeps it (AuthCache)."""

    user_id: str
    session_id: str
    role: str
    frozen: bool
    expires_at: datetime
    # The session's last use as last read or recorded here (see `_bearer`).
    last_used_at: datetime


class TokenAuthenticator:
    def __init__(
        self,
        tokens: TokenIssuer,
        sessions: SessionStore,
        api_keys: ApiKeys,
        cache: AuthCache | None = None,
    ) -> None:
        self.tokens = tokens
        self.sessions = sessions
        self.api_keys = api_keys
        # One cache for both kinds of credential: the API keys' unless told otherwise.
        self.cache = cache if cache is not None else api_keys.cache

    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None:
        if payload is not None:
            fields = {str(k).lower(): v for k, v in payload.items()}
            authorization = fields.get("authorization")
            api_key = fields.get("x-api-key", fields.get("apikey"))
        else:
            authorization = request_header(request.scope, b"authorization")
            api_key = request_header(request.scope, b"x-api-key")
        for value in (authorization, api_key):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_CREDENTIAL):
                raise Unauthenticated("Malformed credentials")
        if authorization and api_key:
            raise Unauthenticated("Send one credential: an Authorization header or an X-API-Key")
        if authorization:
            return await self._bearer(str(authorization))
        if api_key:
            return await self._api_key(str(api_key))
        return None

    def anonymous(self, request: HTTPConnection) -> bool:
        """Whether `authenticate(request)` answers None (an anonymous caller) without
        reading anything: an HTTP request with neither credential header. (With an
        empty one it may still be anonymous: `authenticate` then says so.)"""
        for key, _ in request.scope["headers"]:
            if key == b"authorization" or key == b"x-api-key":
                return False
        return True

    async def _bearer(self, authorization: str) -> Viewer:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated('Use "Authorization: Bearer <access token>"')
        claims = self.tokens.decode(token.strip())
        key = f"t:{claims.token_id}"
        grant: SessionGrant | None = self.cache.get(key)
        if grant is None or grant.user_id != claims.user_id:
            grant = await self._read_session(claims, key)
        now = now_ms()
        # Expiry needs no read: the token says it (decode checked it too).
        if now >= grant.expires_at:
            raise Unauthenticated("The access token has expired", reason="TOKEN_EXPIRED")
        if now - grant.last_used_at >= TOUCH_EVERY:
            # Noted before the write: concurrent requests of the session do not all
            # write it (at most one write per TOUCH_EVERY per session and instance).
            last_used, grant.last_used_at = grant.last_used_at, now
            await self.sessions.touch(claims.session_id, last_used, now)
        return Viewer(
            user_id=claims.user_id,
            # The stored role, not the token's: a demotion applies at once.
            role=grant.role,
            scopes=None,
            frozen=grant.frozen,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
            token_id=claims.token_id,
        )

    async def _read_session(self, claims: AccessClaims, key: str) -> SessionGrant:
        """The token's state read from the store (three point reads, projected and
        unparsed), kept in the cache unless a change was announced meanwhile."""
        ticket = self.cache.ticket()
        user, session, revoked = await asyncio.gather(
            _users().find_one({"_id": claims.user_id}, USER_FIELDS),
            _sessions().find_one(
                {"_id": claims.session_id},
                {"user_id": 1, "revoked_at": 1, "epoch": 1, "last_used_at": 1},
            ),
            self.sessions.is_blacklisted(claims.token_id),
        )
        if _ahead(session, user):
            user = await _users().find_one({"_id": claims.user_id}, USER_FIELDS)
        _check_session(claims.user_id, user, session, revoked)
        assert user is not None and session is not None
        grant = SessionGrant(
            user_id=claims.user_id,
            session_id=claims.session_id,
            role=user.get("role", "USER"),
            frozen=bool(user.get("frozen", False)),
            expires_at=claims.expires_at,
            last_used_at=aware(session["last_used_at"]),
        )
        self.cache.put(key, claims.user_id, grant, ticket)
        return grant

    async def _api_key(self, raw: str) -> Viewer:
        grant = await self.api_keys.authenticate(raw)
        await self.api_keys.touch(grant, now_ms())
        return Viewer(
            user_id=grant.user_id,
            role=grant.role,
            scopes=grant.scopes,
            frozen=grant.frozen,
            api_key_id=grant.key_id,
        )

    async def revalidate(self, viewers: Sequence[Viewer]) -> list[Viewer | DomainError]:
        """Each viewer's credential read again (four batched reads, whatever the
        number of viewers): the viewer with its owner's current role and freeze, or
        the refusal `authenticate` would give it now."""
        users, sessions, keys, revoked = await asyncio.gather(
            _by_id(_users(), {v.user_id for v in viewers}, USER_FIELDS),
            _by_id(
                _sessions(),
                {v.session_id for v in viewers if v.session_id},
                {"user_id": 1, "revoked_at": 1, "epoch": 1},
            ),
            _by_id(
                ApiKeyDocument.get_pymongo_collection(),
                {v.api_key_id for v in viewers if v.api_key_id},
                {"user_id": 1, "revoked_at": 1, "epoch": 1},
            ),
            self.sessions.blacklisted({v.token_id for v in viewers if v.token_id}),
        )
        stale = {
            str(session["user_id"])
            for session in sessions.values()
            if _ahead(session, users.get(session.get("user_id", "")))
        }
        if stale:
            users.update(await _by_id(_users(), stale, USER_FIELDS))
        verdicts: list[Viewer | DomainError] = []
        for viewer in viewers:
            user = users.get(viewer.user_id)
            try:
                if viewer.api_key_id is not None:
                    key = keys.get(viewer.api_key_id)
                    if key is None or key.get("user_id") != viewer.user_id:
                        raise Unauthenticated("Invalid API key", reason="API_KEY_INVALID")
                    if key.get("revoked_at") is not None:
                        raise key_revoked()
                    check_owner(user, key.get("epoch") or 0)
                elif viewer.session_id is not None:
                    session = sessions.get(viewer.session_id)
                    _check_session(viewer.user_id, user, session, viewer.token_id in revoked)
                else:
                    raise Unauthenticated("Authentication required")
            except Unauthenticated as exc:
                verdicts.append(exc)
                continue
            assert user is not None
            verdicts.append(
                dataclasses.replace(
                    viewer, role=user.get("role", "USER"), frozen=bool(user.get("frozen", False))
                )
            )
        return verdicts


def _ahead(session: Mapping[str, Any] | None, user: Mapping[str, Any] | None) -> bool:
    """Whether a session's epoch is ahead of the account read beside it: the account
    was read before a change the session has already moved past (a password change
    from that very session). Epochs only grow, so the account read again, after
    the session, is judged right (sessions.session_valid)."""
    return (
        session is not None
        and user is not None
        and (session.get("epoch") or 0) > (user.get("session_epoch") or 0)
    )


def _check_session(
    user_id: str, user: Mapping[str, Any] | None, session: Mapping[str, Any] | None, revoked: bool
) -> None:
    if revoked:
        raise Unauthenticated("This access token was revoked", reason="TOKEN_REVOKED")
    if (
        user is None
        or session is None
        or session.get("revoked_at") is not None
        or session.get("user_id") != user_id
        # Started before the account's sessions were all ended (UserDocument).
        or not session_valid(
            session["_id"],
            session.get("epoch") or 0,
            user.get("session_epoch") or 0,
            user.get("kept_session"),
        )
    ):
        raise Unauthenticated("The session has ended", reason="SESSION_REVOKED")


async def _by_id(
    collection: AsyncCollection, ids: Collection[str], projection: dict[str, int]
) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    return {d["_id"]: d async for d in collection.find({"_id": {"$in": list(ids)}}, projection)}


def _users() -> AsyncCollection:
    return UserDocument.get_pymongo_collection()


def _sessions() -> AsyncCollection:
    return SessionDocument.get_pymongo_collection()


def request_header(scope: Scope, name: bytes) -> str | None:
    """`Request(scope).headers.get(name)` (`name` lowercase), read off the scope's raw
    headers: on every request, without building Headers or raising KeyError when the
    header is absent (as it mostly is)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None
