"""Who is calling: `Authorization: Bearer <access token>` (users) or `X-API-Key`
(partners) on HTTP, the same inside a WebSocket's connection_init payload
(`{"authorization": "Bearer ..."}` or `{"x-api-key": "..."}`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pymongo.asynchronous.collection import AsyncCollection
from starlette.requests import HTTPConnection

from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import Unauthenticated
from cryptovault.security.apikeys import ApiKeys
from cryptovault.security.sessions import SessionStore
from cryptovault.security.tokens import TokenIssuer
from cryptovault.security.viewer import Viewer

MAX_CREDENTIAL = 4096


class TokenAuthenticator:
    def __init__(self, tokens: TokenIssuer, sessions: SessionStore, api_keys: ApiKeys) -> None:
        self.tokens = tokens
        self.sessions = sessions
        self.api_keys = api_keys

    async def authenticate(
        self, request: HTTPConnection, payload: Mapping[str, object] | None = None
    ) -> Viewer | None:
        if payload is not None:
            fields = {str(k).lower(): v for k, v in payload.items()}
            authorization = fields.get("authorization")
            api_key = fields.get("x-api-key", fields.get("apikey"))
        else:
            authorization = request.headers.get("authorization")
            api_key = request.headers.get("x-api-key")
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

    async def _bearer(self, authorization: str) -> Viewer:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated('Use "Authorization: Bearer <access token>"')
        claims = self.tokens.decode(token.strip())
        # Three point reads on every authenticated request: projected, unparsed.
        user, session, revoked = await asyncio.gather(
            _users().find_one({"_id": claims.user_id}, {"role": 1, "frozen": 1}),
            _sessions().find_one(
                {"_id": claims.session_id}, {"user_id": 1, "revoked_at": 1, "last_used_at": 1}
            ),
            self.sessions.is_blacklisted(claims.token_id),
        )
        if revoked:
            raise Unauthenticated("This access token was revoked", reason="TOKEN_REVOKED")
        if (
            user is None
            or session is None
            or session.get("revoked_at") is not None
            or session.get("user_id") != claims.user_id
        ):
            raise Unauthenticated("The session has ended", reason="SESSION_REVOKED")
        await self.sessions.touch(claims.session_id, session["last_used_at"], now_ms())
        return Viewer(
            user_id=claims.user_id,
            # The stored role, not the token's: a demotion applies at once.
            role=user.get("role", "USER"),
            scopes=None,
            frozen=bool(user.get("frozen", False)),
            session_id=claims.session_id,
            expires_at=claims.expires_at,
            token_id=claims.token_id,
        )

    async def _api_key(self, raw: str) -> Viewer:
        key = await self.api_keys.authenticate(raw)
        owner = await _users().find_one({"_id": key.user_id}, {"role": 1, "frozen": 1})
        if owner is None:
            raise Unauthenticated("Invalid API key", reason="API_KEY_INVALID")
        await self.api_keys.touch(key, now_ms())
        return Viewer(
            user_id=key.user_id,
            role=owner.get("role", "USER"),
            scopes=frozenset(key.scopes),
            frozen=bool(owner.get("frozen", False)),
            api_key_id=key.id,
        )


def _users() -> AsyncCollection:
    return UserDocument.get_pymongo_collection()


def _sessions() -> AsyncCollection:
    return SessionDocument.get_pymongo_collection()
