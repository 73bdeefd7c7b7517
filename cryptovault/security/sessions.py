"""Sessions and refresh tokens. A login starts a session (a refresh-token family);
each refresh rotates the token; presenting an already rotated token again means it
was copied, so the whole family is revoked. Access tokens of a revoked session stop
working at once (the authenticator checks the session), and `blacklist` refuses one
access token by id until it expires."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from cryptovault.documents.sessions import (
    RefreshTokenDocument,
    RevokedTokenDocument,
    SessionDocument,
)
from cryptovault.errors import Unauthenticated
from cryptovault.paging import Listing, Page, page
from cryptovault.security.audit import AuditLog
from cryptovault.security.origin import Origin
from cryptovault.security.tokens import digest, new_secret

# Writing "last used" on every request would double the store's write load.
TOUCH_EVERY = timedelta(minutes=1)
MAX_REFRESH_TOKEN = 512
SESSIONS = Listing("session", default=50, maximum=100)


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    session: SessionDocument
    refresh_token: str
    expires_at: datetime


class SessionStore:
    def __init__(self, refresh_ttl: timedelta, audit: AuditLog) -> None:
        self.refresh_ttl = refresh_ttl
        self.audit = audit

    async def start(self, user_id: str, origin: Origin, now: datetime, epoch: int) -> RefreshGrant:
        """`epoch`: the account's `session_epoch` as read before the password was
        checked (a change since then makes this session invalid from the start)."""
        session = SessionDocument(
            user_id=user_id,
            epoch=epoch,
            created_at=now,
            last_used_at=now,
            expires_at=now + self.refresh_ttl,
            ip=origin.ip,
            user_agent=origin.user_agent,
        )
        await session.insert()
        return await self._grant(session, now)

    async def _grant(self, session: SessionDocument, now: datetime) -> RefreshGrant:
        token = new_secret()
        expires = now + self.refresh_ttl
        await RefreshTokenDocument(
            id=digest(token),
            session_id=session.id,
            user_id=session.user_id,
            issued_at=now,
            expires_at=expires,
        ).insert()
        return RefreshGrant(session, token, expires)

    async def rotate(self, refresh_token: str, origin: Origin, now: datetime) -> RefreshGrant:
        """Exchange a refresh token for a new one (the old one is spent)."""
        invalid = Unauthenticated("Invalid refresh token", reason="REFRESH_TOKEN_INVALID")
        if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN:
            raise invalid
        token_id = digest(refresh_token)
        collection = RefreshTokenDocument.get_pymongo_collection()
        # Atomic: of two concurrent uses of one token, exactly one wins.
        spent = await collection.find_one_and_update(
            {"_id": token_id, "rotated_at": None},
            {"$set": {"rotated_at": now}},
            return_document=ReturnDocument.BEFORE,
        )
        if spent is None:
            known = await RefreshTokenDocument.get(token_id)
            if known is None:
                raise invalid
            await self._reuse_detected(known, origin, now)
            raise Unauthenticated(
                "This refresh token was already used; the session has been revoked",
                reason="REFRESH_TOKEN_REUSED",
            )
        if aware(spent["expires_at"]) <= now:
            raise Unauthenticated("The refresh token has expired", reason="REFRESH_TOKEN_EXPIRED")
        session = await SessionDocument.get(spent["session_id"])
        if session is None or session.revoked_at is not None:
            raise Unauthenticated("The session has ended", reason="SESSION_REVOKED")
        grant = await self._grant(session, now)
        session.last_used_at = now
        session.expires_at = grant.expires_at
        session.ip = origin.ip or session.ip
        session.user_agent = origin.user_agent or session.user_agent
        await SessionDocument.find_one({"_id": session.id}).update(
            {
                "$set": {
                    "last_used_at": now,
                    "expires_at": grant.expires_at,
                    "ip": session.ip,
                    "user_agent": session.user_agent,
                }
            }
        )
        return RefreshGrant(session, grant.refresh_token, grant.expires_at)

    async def _reuse_detected(
        self, token: RefreshTokenDocument, origin: Origin, now: datetime
    ) -> None:
        revoked = await self._revoke({"_id": token.session_id}, now, "refresh_token_reuse")
        await self.audit.record(
            "auth.refresh_token.reused",
            actor=None,
            user_id=token.user_id,
            target=f"session:{token.session_id}",
            origin=origin,
            details={"session_revoked": bool(revoked)},
        )

    async def touch(self, session_id: str, last_used_at: datetime, now: datetime) -> None:
        """Record use, at most once per TOUCH_EVERY per session."""
        if now - aware(last_used_at) < TOUCH_EVERY:
            return
        await SessionDocument.get_pymongo_collection().update_one(
            {"_id": session_id, "last_used_at": {"$lt": now - TOUCH_EVERY}},
            {"$set": {"last_used_at": now}},
        )

    async def advance(self, session_id: str, epoch: int) -> None:
        """Move a session kept across a password change to the account's new epoch
        (never back: a late call after a newer change is a no-op)."""
        await SessionDocument.get_pymongo_collection().update_one(
            {"_id": session_id, "$or": [{"epoch": {"$lt": epoch}}, {"epoch": None}]},
            {"$set": {"epoch": epoch}},
        )

    async def revoke(self, user_id: str, session_id: str, now: datetime, reason: str) -> bool:
        """Revoke one of the user's sessions; False if the user has no such active
        session (another user's id included)."""
        return await self._revoke({"_id": session_id, "user_id": user_id}, now, reason) > 0

    async def revoke_all(
        self, user_id: str, now: datetime, reason: str, keep: str | None = None
    ) -> int:
        query: dict[str, Any] = {"user_id": user_id}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        return await self._revoke(query, now, reason)

    async def _revoke(self, query: dict[str, Any], now: datetime, reason: str) -> int:
        result = await SessionDocument.get_pymongo_collection().update_many(
            {**query, "revoked_at": None},
            {"$set": {"revoked_at": now, "revoked_reason": reason}},
        )
        return result.modified_count

    async def page(
        self, user_id: str, now: datetime, first: int | None, after: str | None
    ) -> Page[SessionDocument]:
        """The user's live sessions, newest first."""
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": now}}
        return await page(SessionDocument, SESSIONS, query, first, after)

    async def blacklist(self, token_id: str, user_id: str, expires_at: datetime) -> None:
        doc = RevokedTokenDocument(id=token_id, user_id=user_id, expires_at=expires_at)
        await RevokedTokenDocument.get_pymongo_collection().update_one(
            {"_id": token_id}, {"$setOnInsert": doc.model_dump(by_alias=True)}, upsert=True
        )

    async def is_blacklisted(self, token_id: str) -> bool:
        collection = RevokedTokenDocument.get_pymongo_collection()
        return await collection.find_one({"_id": token_id}, {"_id": 1}) is not None

    async def blacklisted(self, token_ids: Collection[str]) -> set[str]:
        """Which of these access token ids are revoked (one read)."""
        if not token_ids:
            return set()
        collection = RevokedTokenDocument.get_pymongo_collection()
        found = collection.find({"_id": {"$in": list(token_ids)}}, {"_id": 1})
        return {d["_id"] async for d in found}


def session_valid(
    session_id: str, epoch: int, account_epoch: int, kept_session: str | None
) -> bool:
    """Whether a session belongs to the account's current epoch (UserDocument): it
    was started since the last change that ended every session, or it is the one the
    last password change was made from, not yet moved forward."""
    return epoch == account_epoch or (session_id == kept_session and epoch == account_epoch - 1)


def epoch_is(value: int) -> int | dict[str, list[int | None]]:
    """A filter matching an epoch field equal to `value` (documents written before
    epochs existed have no field: they are epoch 0)."""
    return value if value else {"$in": [0, None]}


def aware(moment: datetime) -> datetime:
    # The client is tz-aware; documents built in memory are too. Guard anyway: a naive
    # value compared to an aware one raises.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
