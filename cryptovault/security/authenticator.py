"""Who is calling: `Authorization: Bearer <access token>` (users) or `X-API-Key`
(partners) on HTTP, the same inside a WebSocket's connection_init payload
(`{"authorization": "Bearer ..."}` or `{"x-api-key": "..."}`). `revalidate` answers
the same question again for credentials already accepted (open WebSockets), from the
same rules, so a socket and an HTTP request get the same verdict."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from starlette.requests import HTTPConnection

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import DomainError, Unauthenticated
from cryptovault.security.apikeys import ApiKeys, key_revoked
from cryptovault.security.sessions import SessionStore, session_valid
from cryptovault.security.tokens import TokenIssuer
from cryptovault.security.viewer import Viewer

MAX_CREDENTIAL = 4096
# What authentication reads of the account: the rights, and the credential epochs.
USER_FIELDS = {"role": 1, "frozen": 1, "session_epoch": 1, "key_epoch": 1, "kept_session": 1}


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
            _users().find_one({"_id": claims.user_id}, USER_FIELDS),
            _sessions().find_one(
                {"_id": claims.session_id},
                {"user_id": 1, "revoked_at": 1, "epoch": 1, "last_used_at": 1},
            ),
            self.sessions.is_blacklisted(claims.token_id),
        )
        _check_session(claims.user_id, user, session, revoked)
        assert user is not None and session is not None
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
        owner = await _users().find_one({"_id": key.user_id}, USER_FIELDS)
        _check_owner(owner, key.epoch)
        assert owner is not None
        await self.api_keys.touch(key, now_ms())
        return Viewer(
            user_id=key.user_id,
            role=owner.get("role", "USER"),
            scopes=frozenset(key.scopes),
            frozen=bool(owner.get("frozen", False)),
            api_key_id=key.id,
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
                    _check_owner(user, key.get("epoch") or 0)
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


def _check_owner(owner: Mapping[str, Any] | None, key_epoch: int) -> None:
    if owner is None:
        raise Unauthenticated("Invalid API key", reason="API_KEY_INVALID")
    if key_epoch != (owner.get("key_epoch") or 0):
        raise key_revoked()


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
