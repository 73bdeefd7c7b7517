"""API keys for partners. A key is shown once: `cvk_<prefix>_<secret>`; the store keeps
the public prefix (to find it) and a SHA-256 digest of the whole key. A key acts as
its owner, limited to its scopes."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from cryptovault.errors import BadUserInput, Conflict, NotFound, Unauthenticated
from cryptovault.paging import Listing, Page, page
from cryptovault.security.audit import AuditLog
from cryptovault.security.authcache import AuthCache
from cryptovault.security.origin import Origin
from cryptovault.security.sessions import aware, session_valid
from cryptovault.security.tokens import digest
from cryptovault.security.viewer import Viewer

SCOPES = ("market:read", "portfolio:read", "portfolio:write", "trade", "schema:read")
KEY_MARK = "cvk_"
PREFIX_LENGTH = 12
MAX_KEY_LENGTH = 100
MAX_NAME = 64
MAX_ACTIVE_KEYS = 25
TOUCH_EVERY = timedelta(minutes=1)
# What authentication reads of the account: the rights, and the credential epochs.
USER_FIELDS = {"role": 1, "frozen": 1, "session_epoch": 1, "key_epoch": 1, "kept_session": 1}


@dataclass(slots=True)
class KeyGrant:
    """What an accepted API key stands for, as the cache keeps it (AuthCache)."""

    key_id: str
    user_id: str
    scopes: frozenset[str]
    role: str
    frozen: bool
    # The key's last use as last read or recorded here (see `touch`).
    last_used_at: datetime | None


API_KEYS = Listing("apikey", default=50, maximum=100)


def key_revoked() -> Unauthenticated:
    return Unauthenticated("This API key has been revoked", reason="API_KEY_REVOKED")


def check_owner(owner: Mapping[str, Any] | None, key_epoch: int) -> None:
    """A key stands while its owner exists and has not ended every key since it was
    made (UserDocument.key_epoch)."""
    if owner is None:
        raise Unauthenticated("Invalid API key", reason="API_KEY_INVALID")
    if key_epoch != (owner.get("key_epoch") or 0):
        raise key_revoked()


def _parse(raw: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if len(raw) > MAX_KEY_LENGTH or not raw.startswith(KEY_MARK):
        return None
    rest = raw[len(KEY_MARK) :]
    prefix, sep, secret = (
        rest[:PREFIX_LENGTH],
        rest[PREFIX_LENGTH : PREFIX_LENGTH + 1],
        rest[PREFIX_LENGTH + 1 :],
    )
    if sep != "_" or len(prefix) != PREFIX_LENGTH or not secret:
        return None
    return prefix


class ApiKeys:
    def __init__(self, audit: AuditLog, cache: AuthCache | None = None) -> None:
        self.audit = audit
        # Accepted credentials (keys and access tokens); none kept without one.
        self.cache = cache if cache is not None else AuthCache(max_age=0)

    async def create(
        self, viewer: Viewer, name: str, scopes: list[str], origin: Origin
    ) -> tuple[ApiKeyDocument, str]:
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise BadUserInput(f"Key names are 1 to {MAX_NAME} characters", field="name")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise BadUserInput(f"Unknown scopes: {', '.join(unknown)}", field="scopes")
        if not scopes:
            raise BadUserInput("Give the key at least one scope", field="scopes")
        active = await ApiKeyDocument.find({"user_id": viewer.user_id, "revoked_at": None}).count()
        if active >= MAX_ACTIVE_KEYS:
            raise Conflict(f"At most {MAX_ACTIVE_KEYS} active API keys; revoke one first")
        ordered = [s for s in SCOPES if s in set(scopes)]
        # The asking session is read before the account: epochs only grow, so the
        # session's is never ahead of the account read after it, and a password
        # change made from this very session (which moves it to the new epoch) is
        # judged right whichever read it falls between (sessions.session_valid).
        session = (
            await SessionDocument.get_pymongo_collection().find_one(
                {"_id": viewer.session_id}, {"epoch": 1, "revoked_at": 1}
            )
            if viewer.session_id is not None
            else None
        )
        # Read before the key exists: a promotion or deletion after this read makes
        # the key invalid from the start (UserDocument.key_epoch).
        owner = await UserDocument.get_pymongo_collection().find_one(
            {"_id": viewer.user_id}, {"key_epoch": 1, "session_epoch": 1, "kept_session": 1}
        )
        if owner is None:
            raise Unauthenticated("The account no longer exists")
        # The asking session, judged against the same read of the account: if a
        # promotion or deletion ended it before that read, no key; if after, the key
        # carries the old epoch and never works.
        if viewer.session_id is not None and (
            session is None
            or session.get("revoked_at") is not None
            or not session_valid(
                viewer.session_id,
                session.get("epoch") or 0,
                owner.get("session_epoch") or 0,
                owner.get("kept_session"),
            )
        ):
            raise Unauthenticated("The session has ended", reason="SESSION_REVOKED")
        for _ in range(3):
            prefix = secrets.token_hex(PREFIX_LENGTH // 2)
            key = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}"
            doc = ApiKeyDocument(
                user_id=viewer.user_id,
                name=name,
                prefix=prefix,
                secret_hash=digest(key),
                scopes=ordered,
                created_at=now_ms(),
                epoch=owner.get("key_epoch") or 0,
            )
            try:
                await doc.insert()
            except DuplicateKeyError:  # a 48-bit prefix collision: draw again
                continue
            await self.audit.record(
                "apikey.created",
                actor=viewer,
                target=f"apikey:{doc.id}",
                origin=origin,
                details={"name": name, "scopes": ordered, "prefix": prefix},
            )
            return doc, key
        raise RuntimeError("could not draw a unique API key prefix")

    async def revoke(self, viewer: Viewer, key_id: str, origin: Origin) -> ApiKeyDocument:
        doc = await ApiKeyDocument.find_one({"_id": key_id, "user_id": viewer.user_id})
        if doc is None:
            raise NotFound("No such API key", id=key_id)
        if doc.revoked_at is None:
            now = now_ms()
            result = await ApiKeyDocument.get_pymongo_collection().update_one(
                {"_id": doc.id, "revoked_at": None}, {"$set": {"revoked_at": now}}
            )
            if result.modified_count:
                doc.revoked_at = now
                await self.audit.record(
                    "apikey.revoked",
                    actor=viewer,
                    target=f"apikey:{doc.id}",
                    origin=origin,
                    details={"name": doc.name, "prefix": doc.prefix},
                )
        return doc

    async def page(
        self, user_id: str, first: int | None, after: str | None
    ) -> Page[ApiKeyDocument]:
        """The user's active keys, newest first."""
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        return await page(ApiKeyDocument, API_KEYS, query, first, after)

    async def authenticate(self, raw: str) -> KeyGrant:
        """The key and its owner's rights: from the cache (no read), else read (the
        key by its prefix, then its owner) and kept, keyed by the digest of the
        whole key, so only the key itself finds its entry."""
        invalid = Unauthenticated("Invalid API key", reason="API_KEY_INVALID")
        raw = raw.strip()
        prefix = _parse(raw)
        if prefix is None:
            raise invalid
        secret_hash = digest(raw)
        key = f"k:{secret_hash}"
        cached: KeyGrant | None = self.cache.get(key)
        if cached is not None:
            return cached
        ticket = self.cache.ticket()
        doc = await ApiKeyDocument.find_one({"prefix": prefix})
        if doc is None or not hmac.compare_digest(doc.secret_hash, secret_hash):
            raise invalid
        if doc.revoked_at is not None:
            raise key_revoked()
        owner = await UserDocument.get_pymongo_collection().find_one(
            {"_id": doc.user_id}, USER_FIELDS
        )
        check_owner(owner, doc.epoch)
        assert owner is not None
        grant = KeyGrant(
            key_id=doc.id,
            user_id=doc.user_id,
            scopes=frozenset(doc.scopes),
            role=owner.get("role", "USER"),
            frozen=bool(owner.get("frozen", False)),
            last_used_at=doc.last_used_at,
        )
        self.cache.put(key, doc.user_id, grant, ticket)
        return grant

    async def touch(self, grant: KeyGrant, now: datetime) -> None:
        """Record use, at most once per TOUCH_EVERY per key (and instance)."""
        last_used = grant.last_used_at
        if last_used is not None and now - aware(last_used) < TOUCH_EVERY:
            return
        # Noted before the write: concurrent requests with the key do not all write.
        grant.last_used_at = now
        await ApiKeyDocument.get_pymongo_collection().update_one(
            {
                "_id": grant.key_id,
                "$or": [{"last_used_at": None}, {"last_used_at": {"$lt": now - TOUCH_EVERY}}],
            },
            {"$set": {"last_used_at": now}},
        )
