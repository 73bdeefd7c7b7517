"""Sessions (one per login: a refresh token family), their refresh tokens, and the
blacklist of access token ids revoked before they expire."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id

# Ended sessions stay listable in the store (not in the API) for a while.
SESSION_RETENTION_SECONDS = 30 * 86400


class SessionDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    user_id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime  # when the current refresh token expires
    ip: str | None = None
    user_agent: str | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    # The account's `session_epoch` when the login read it (UserDocument).
    epoch: int = 0

    class Settings:
        name = "sessions"
        indexes = [
            IndexModel(
                [
                    ("user_id", pymongo.ASCENDING),
                    ("created_at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="user_created",
            ),
            IndexModel(
                [("expires_at", pymongo.ASCENDING)],
                expireAfterSeconds=SESSION_RETENTION_SECONDS,
                name="expiry_ttl",
            ),
        ]


class RefreshTokenDocument(Document):
    """Every refresh token ever issued for a session. A token is used once: rotating
    marks it `rotated_at`; presenting a rotated token again is theft (reuse)."""

    id: str  # type: ignore[assignment]  # SHA-256 of the token
    session_id: str
    user_id: str
    issued_at: datetime
    expires_at: datetime
    rotated_at: datetime | None = None

    class Settings:
        name = "refresh_tokens"
        indexes = [
            IndexModel([("session_id", pymongo.ASCENDING)], name="session"),
            IndexModel(
                [("expires_at", pymongo.ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"
            ),
        ]


class RevokedTokenDocument(Document):
    """An access token id (`jti`) refused until the token expires anyway."""

    id: str  # type: ignore[assignment]  # the jti
    user_id: str
    expires_at: datetime

    class Settings:
        name = "revoked_tokens"
        indexes = [
            IndexModel(
                [("expires_at", pymongo.ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"
            ),
        ]
