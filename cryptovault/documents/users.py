"""Accounts, failed login attempts and password reset tokens."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id

# Old attempts are deleted by the retention sweep (LOGIN_ATTEMPT_RETENTION_DAYS);
# throttling decisions only ever read the last 24 hours, by timestamp.


class UserDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    email: str  # normalized: trimmed, lower-case
    password_hash: str
    role: str = "USER"  # "USER" | "ADMIN"
    frozen: bool = False
    frozen_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None = None
    last_login_at: datetime | None = None
    last_reset_mail_at: datetime | None = None
    # Set once by account deletion (security.privacy): nothing signs in again.
    deleted_at: datetime | None = None
    # Two-factor authentication. Secrets are Fernet tokens (TOTP_ENCRYPTION_KEY);
    # recovery codes are keyed hashes, each removed when used.
    two_factor_enabled: bool = False
    # When two-factor was last turned on: only devices and sessions that signed in
    # since then (with a code) have wrong-code buckets of their own (security.lockout).
    two_factor_at: datetime | None = None
    totp_secret: str | None = None
    totp_pending_secret: str | None = None
    totp_last_step: int | None = None
    recovery_codes: list[str] = Field(default_factory=list)
    pending_recovery_codes: list[str] = Field(default_factory=list)
    # Credential epochs (fencing tokens for sign-ins): a session is valid only while
    # its `epoch` equals `session_epoch`, an API key only while its `epoch` equals
    # `key_epoch`. Whatever must end every credential at once (a password change or
    # reset, a promotion, a deletion) increments them in the same write that changes
    # the password or role, so a sign-in that read the account before that write
    # (a login verifying the old password, a key created by an old session) yields
    # a credential that was never valid, whatever the timing.
    session_epoch: int = 0
    key_epoch: int = 0
    # The session a password change was made from: it stays valid one epoch behind
    # until it is moved to the new epoch (sessions.session_valid).
    kept_session: str | None = None

    class Settings:
        name = "users"
        indexes = [
            IndexModel([("email", pymongo.ASCENDING)], unique=True, name="email_unique"),
        ]


class LoginAttemptDocument(Document):
    """One failed login (or failed password confirmation), or one in flight."""

    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    email: str
    ip: str | None
    at: datetime
    # The trusted device the attempt came from (security.devices), if any.
    device: str | None = None

    class Settings:
        name = "login_attempts"
        indexes = [
            IndexModel([("email", pymongo.ASCENDING), ("at", pymongo.DESCENDING)], name="email_at"),
            IndexModel([("ip", pymongo.ASCENDING), ("at", pymongo.DESCENDING)], name="ip_at"),
            IndexModel(
                [("device", pymongo.ASCENDING), ("at", pymongo.DESCENDING)], name="device_at"
            ),
            IndexModel([("at", pymongo.ASCENDING)], name="at"),
        ]


class PasswordResetDocument(Document):
    id: str  # type: ignore[assignment]  # SHA-256 of the token mailed to the user
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    class Settings:
        name = "password_resets"
        indexes = [
            IndexModel(
                [("user_id", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)],
                name="user_created",
            ),
            IndexModel(
                [("expires_at", pymongo.ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"
            ),
        ]
