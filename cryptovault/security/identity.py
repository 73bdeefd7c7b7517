"""Accounts and sign-in: registration, login with lockout and a second factor,
refresh, logout, password change and reset, two-factor setup, admin bootstrap.
Domain code only: callers pass an Origin and get domain errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cryptovault.config import Settings
from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import RefreshTokenDocument, SessionDocument
from cryptovault.documents.users import (
    PasswordResetDocument,
    UserDocument,
)
from cryptovault.errors import (
    BadUserInput,
    Conflict,
    NotFound,
    RateLimited,
    TwoFactorRequired,
    Unauthenticated,
)
from cryptovault.observability.metrics import Metrics
from cryptovault.security.audit import AuditLog
from cryptovault.security.devices import DeviceTokens
from cryptovault.security.lockout import Attempt, LoginThrottle
from cryptovault.security.mailer import Mail, Mailer
from cryptovault.security.origin import SYSTEM, Origin
from cryptovault.security.passwords import (
    MAX_PASSWORD,
    Argon2Profile,
    PasswordHasher,
    check_new_password,
    normalize_email,
)
from cryptovault.security.sessions import SessionStore, epoch_is, session_valid
from cryptovault.security.tokens import IssuedToken, TokenIssuer, digest, new_secret
from cryptovault.security.totp import TotpVault
from cryptovault.security.viewer import Viewer

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid email or password"
RESET_TTL = timedelta(minutes=30)
# One reset mail per account per minute at most: the endpoint cannot be used to
# flood someone's inbox.
RESET_MAIL_INTERVAL = timedelta(minutes=1)
MAX_FREEZE_REASON = 500
# What `create_admin` did.
type AdminOutcome = Literal["created", "promoted", "unchanged"]


@dataclass(frozen=True, slots=True)
class SignIn:
    """What register, login and refresh return."""

    user: UserDocument
    access: IssuedToken
    refresh_token: str
    refresh_expires_at: datetime
    session_id: str
    # Register and login only (security.devices).
    device_token: str | None = None


@dataclass(frozen=True, slots=True)
class TwoFactorSetup:
    secret: str
    otpauth_uri: str
    recovery_codes: list[str]


class IdentityService:
    def __init__(
        self,
        settings: Settings,
        audit: AuditLog,
        mailer: Mailer,
        hasher: PasswordHasher | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.audit = audit
        self.mailer = mailer
        self.hasher = hasher or PasswordHasher(
            Argon2Profile.from_settings(settings), settings.password_hash_concurrency
        )
        self.tokens = TokenIssuer(
            settings.jwt_secret, timedelta(seconds=settings.access_token_ttl_seconds)
        )
        self.sessions = SessionStore(timedelta(days=settings.refresh_token_ttl_days), audit)
        self.throttle = LoginThrottle()
        self.devices = DeviceTokens(settings.jwt_secret)
        self.totp = TotpVault(settings.totp_encryption_key)
        self._background: set[asyncio.Task[None]] = set()

    # -- accounts ----------------------------------------------------------------------

    async def get_user(self, user_id: str) -> UserDocument | None:
        return await UserDocument.get(user_id)

    async def _require_user(self, viewer: Viewer) -> UserDocument:
        user = await UserDocument.get(viewer.user_id)
        if user is None:
            raise Unauthenticated("The account no longer exists")
        return user

    async def register(self, email: str, password: str, origin: Origin) -> SignIn:
        email = normalize_email(email)
        check_new_password(password, email)
        if await UserDocument.find_one({"email": email}) is not None:
            raise Conflict("An account with this email already exists", field="email")
        now = now_ms()
        user = UserDocument(
            email=email,
            password_hash=await self.hasher.hash(password),
            created_at=now,
            updated_at=now,
            password_changed_at=now,
            last_login_at=now,
        )
        try:
            await user.insert()
        except DuplicateKeyError:  # registered concurrently
            raise Conflict("An account with this email already exists", field="email") from None
        await self.audit.record("user.registered", actor=user.id, origin=origin)
        return await self._sign_in(user, origin, now)

    async def _sign_in(
        self, user: UserDocument, origin: Origin, now: datetime, device: str | None = None
    ) -> SignIn:
        grant = await self.sessions.start(user.id, origin, now, epoch=user.session_epoch)
        access = self.tokens.issue(user.id, user.role, grant.session.id, now)
        device_token = self.devices.issue(user.id, now, device)
        return SignIn(
            user, access, grant.refresh_token, grant.expires_at, grant.session.id, device_token
        )

    # -- login -------------------------------------------------------------------------

    async def login(
        self,
        email: str,
        password: str,
        otp: str | None,
        origin: Origin,
        device_token: str | None = None,
    ) -> SignIn:
        """`device_token`: what this device received when it last signed in (its
        failed attempts are throttled apart from everyone else's, security.lockout)."""
        email = normalize_email(email)
        if len(password) > MAX_PASSWORD:
            # No account has such a password: refuse before spending Argon2 on it,
            # the same way for every email.
            raise Unauthenticated(BAD_CREDENTIALS)
        now = now_ms()
        user = await UserDocument.find_one({"email": email})
        device = self.devices.device_of(device_token, user, now)
        attempt = await self.throttle.begin(email, origin.ip_key, now, device)
        otp = otp.strip() if otp else None
        # Held back by failed attempts, only a correct password with a correct second
        # factor passes, and every refusal looks the same: no password oracle.
        held_back = attempt.held_back
        if held_back is not None and not otp:
            await self.throttle.abandon(attempt)
            raise held_back
        if user is None:
            # The same Argon2 work as a real check: no timing difference to learn from.
            await self.hasher.verify_dummy(password)
        if user is None or not await self.hasher.verify(user.password_hash, password):
            user_id = user.id if user is not None else None
            await self._login_failed(attempt, email, user_id, "bad_credentials", origin, now)
            raise held_back or Unauthenticated(BAD_CREDENTIALS)
        if user.two_factor_enabled:
            if not otp:
                await self.throttle.abandon(attempt)
                raise TwoFactorRequired(
                    "Enter the code from your authenticator app (or a recovery code)"
                )
            # Its own bucket of codes only for a device that signed in with a code
            # before (a token from before two-factor was on could be anyone's).
            code_device = (
                self.devices.device_of(device_token, user, now, since=user.two_factor_at)
                if user.two_factor_at is not None
                else None
            )
            try:
                passed = await self._check_second_factor(user, otp, origin, code_device)
            except RateLimited:
                passed = False
                if held_back is None:  # the password is known to be right: say why
                    await self._login_failed(attempt, email, user.id, "otp_held_back", origin, now)
                    raise
            if not passed:
                await self._login_failed(attempt, email, user.id, "bad_otp", origin, now)
                raise held_back or TwoFactorRequired("Invalid two-factor code")
        elif held_back is not None:
            # A right password without a second factor cannot pass a held-back attempt;
            # it is refused and counted exactly like a wrong one, or the next attempt's
            # delay would tell which guess was right.
            await self._login_failed(attempt, email, user.id, "held_back", origin, now)
            raise held_back
        if held_back is None:
            await self.throttle.succeeded(attempt)
        else:
            # Passed with its second factor: the failures it was held back by stay.
            await self.throttle.abandon(attempt)
        updates: dict[str, Any] = {"last_login_at": now}
        if self.hasher.needs_rehash(user.password_hash):
            # Parameters changed since this hash was made: upgrade it now that we
            # hold the plain password.
            updates["password_hash"] = await self.hasher.hash(password)
        # Conditional on the hash just verified: a reset or promotion that replaced it
        # meanwhile is not undone by writing the old password back, upgraded.
        await UserDocument.get_pymongo_collection().update_one(
            {"_id": user.id, "password_hash": user.password_hash}, {"$set": updates}
        )
        for key, value in updates.items():
            setattr(user, key, value)
        signed_in = await self._sign_in(user, origin, now, device)
        await self.audit.record(
            "auth.login.succeeded",
            actor=user.id,
            target=f"session:{signed_in.session_id}",
            origin=origin,
            details={"two_factor": user.two_factor_enabled, "known_device": device is not None},
        )
        return signed_in

    async def _login_failed(
        self,
        attempt: Attempt,
        email: str,
        user_id: str | None,
        reason: str,
        origin: Origin,
        now: datetime,
    ) -> None:
        locked_until = await self.throttle.failed(attempt, now)
        if self.metrics is not None:
            self.metrics.login_failed(reason)
        await self.audit.record(
            "auth.login.failed",
            actor=None,
            user_id=user_id,
            origin=origin,
            details={"email": email, "reason": reason},
        )
        if locked_until is not None:
            await self.audit.record(
                "auth.account.locked",
                actor=None,
                user_id=user_id,
                origin=origin,
                details={"email": email, "locked_until": locked_until},
            )

    async def _check_second_factor(
        self, user: UserDocument, code: str, origin: Origin, device: str | None
    ) -> bool:
        """A current TOTP code (never the same one twice) or an unused recovery code.
        Wrong codes are counted apart from passwords (lockout.SECOND_FACTOR): per
        account for unknown devices, wherever tried, and per trusted device or session
        (`device`). Once a bucket is held back even a right code is refused with
        RATE_LIMITED until the delay has passed, so a stolen password does not buy
        unlimited guesses at six digits, nor a way to hold back the owner's devices."""
        record = await self.throttle.begin_code(user.id, user.email, now_ms(), device)
        passed = await self._second_factor_matches(user, code, origin)
        if passed:
            await self.throttle.code_passed(record)
        return passed

    async def _code_session(self, user: UserDocument, viewer: Viewer) -> str | None:
        """A session's own bucket of codes, for a session that signed in with a code
        (since two-factor was last turned on); others count with unknown devices."""
        if user.two_factor_at is None or viewer.session_id is None:
            return None
        session = await SessionDocument.get(viewer.session_id)
        if session is None or _aware(session.created_at) < _aware(user.two_factor_at):
            return None
        return f"session:{viewer.session_id}"

    async def _second_factor_matches(self, user: UserDocument, code: str, origin: Origin) -> bool:
        if user.totp_secret is None:
            return False
        step = self.totp.matching_step(self.totp.decrypt(user.totp_secret), code)
        collection = UserDocument.get_pymongo_collection()
        if step is not None:
            result = await collection.update_one(
                {
                    "_id": user.id,
                    "$or": [{"totp_last_step": None}, {"totp_last_step": {"$lt": step}}],
                },
                {"$set": {"totp_last_step": step}},
            )
            return result.modified_count == 1
        if not self.totp.looks_like_recovery_code(code):
            return False
        hashed = self.totp.hash_recovery_code(code)
        updated = await collection.find_one_and_update(
            {"_id": user.id, "recovery_codes": hashed},
            {"$pull": {"recovery_codes": hashed}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            return False
        await self.audit.record(
            "auth.2fa.recovery_code_used",
            actor=user.id,
            origin=origin,
            details={"remaining": len(updated.get("recovery_codes", []))},
        )
        return True

    # -- tokens and sessions -----------------------------------------------------------

    async def refresh(self, refresh_token: str, origin: Origin) -> SignIn:
        now = now_ms()
        grant = await self.sessions.rotate(refresh_token, origin, now)
        user = await UserDocument.get(grant.session.user_id)
        if user is None:
            raise Unauthenticated("The account no longer exists")
        if not session_valid(
            grant.session.id, grant.session.epoch, user.session_epoch, user.kept_session
        ):
            raise Unauthenticated("The session has ended", reason="SESSION_REVOKED")
        access = self.tokens.issue(user.id, user.role, grant.session.id, now)
        return SignIn(user, access, grant.refresh_token, grant.expires_at, grant.session.id)

    async def logout(
        self, viewer: Viewer | None, origin: Origin, refresh_token: str | None
    ) -> None:
        """End the caller's session: the one of its access token, or of its refresh
        token (a browser whose access token already expired). The access token itself
        is blacklisted until it expires."""
        now = now_ms()
        session_id: str | None = None
        user_id: str | None = None
        if viewer is not None and viewer.session_id is not None:
            session_id, user_id = viewer.session_id, viewer.user_id
            if viewer.token_id is not None and viewer.expires_at is not None:
                await self.sessions.blacklist(viewer.token_id, viewer.user_id, viewer.expires_at)
        elif refresh_token:
            known = await RefreshTokenDocument.get(digest(refresh_token))
            if known is None:
                raise Unauthenticated("Invalid refresh token", reason="REFRESH_TOKEN_INVALID")
            session_id, user_id = known.session_id, known.user_id
        else:
            raise Unauthenticated("Authentication required")
        await self.sessions.revoke(user_id, session_id, now, "logout")
        await self.audit.record(
            "auth.logout",
            actor=viewer or user_id,
            user_id=user_id,
            target=f"session:{session_id}",
            origin=origin,
        )

    async def revoke_session(self, viewer: Viewer, session_id: str, origin: Origin) -> None:
        if not await self.sessions.revoke(viewer.user_id, session_id, now_ms(), "revoked"):
            raise NotFound("No such session", id=session_id)
        await self.audit.record(
            "session.revoked", actor=viewer, target=f"session:{session_id}", origin=origin
        )

    async def revoke_other_sessions(self, viewer: Viewer, origin: Origin) -> int:
        count = await self.sessions.revoke_all(
            viewer.user_id, now_ms(), "revoked", keep=viewer.session_id
        )
        await self.audit.record(
            "session.others_revoked", actor=viewer, origin=origin, details={"count": count}
        )
        return count

    # -- passwords ---------------------------------------------------------------------

    async def change_password(self, viewer: Viewer, current: str, new: str, origin: Origin) -> int:
        """Returns how many other sessions were revoked."""
        user = await self._require_user(viewer)
        check_new_password(new, user.email)
        now = now_ms()
        attempt = await self.throttle.admit(user.email, origin.ip, now, _session_of(viewer))
        if not await self.hasher.verify(user.password_hash, current):
            await self._login_failed(attempt, user.email, user.id, "bad_password", origin, now)
            raise BadUserInput("The current password is incorrect", field="currentPassword")
        await self.throttle.succeeded(attempt)
        # Conditional on the password just verified and the sessions' epoch: of two
        # concurrent changes (or a change racing a reset or a promotion) one wins,
        # the other is refused; every other session ends with this write.
        hashed = await self.hasher.hash(new)
        changed = await UserDocument.get_pymongo_collection().update_one(
            {
                "_id": user.id,
                "password_hash": user.password_hash,
                "session_epoch": epoch_is(user.session_epoch),
            },
            {
                "$set": {
                    "password_hash": hashed,
                    "password_changed_at": now,
                    "updated_at": now,
                    "kept_session": viewer.session_id,
                },
                "$inc": {"session_epoch": 1},
            },
        )
        if changed.modified_count != 1:
            raise Conflict("The password or the account's sessions changed meanwhile; try again")
        if viewer.session_id is not None:
            # The kept session moves to the new epoch (until then `kept_session` keeps
            # it valid; after a crash here, the next change from it moves it).
            await self.sessions.advance(viewer.session_id, user.session_epoch + 1)
        revoked = await self.sessions.revoke_all(
            user.id, now, "password_changed", keep=viewer.session_id
        )
        await self.audit.record(
            "auth.password.changed",
            actor=viewer,
            origin=origin,
            details={"sessions_revoked": revoked},
        )
        return revoked

    async def _reset_password(self, user: UserDocument, password: str, now: datetime) -> bool:
        """Set the password and end every session in the same write; False if the
        account was deleted (conditional: a deletion racing the reset wins)."""
        hashed = await self.hasher.hash(password)
        result = await UserDocument.get_pymongo_collection().update_one(
            {"_id": user.id, "deleted_at": None},
            {
                "$set": {
                    "password_hash": hashed,
                    "password_changed_at": now,
                    "updated_at": now,
                    "kept_session": None,
                },
                "$inc": {"session_epoch": 1},
            },
        )
        return result.modified_count == 1

    async def request_password_reset(self, email: str, origin: Origin) -> None:
        """Always succeeds the same way: whether the account exists is not revealed
        (the lookup and the mail happen after the answer)."""
        email = normalize_email(email)
        self._spawn(self._send_reset(email, origin))

    async def _send_reset(self, email: str, origin: Origin) -> None:
        user = await UserDocument.find_one({"email": email})
        if user is None:
            return
        now = now_ms()
        # Atomic, so concurrent requests cannot both pass.
        claimed = await UserDocument.get_pymongo_collection().update_one(
            {
                "_id": user.id,
                "$or": [
                    {"last_reset_mail_at": None},
                    {"last_reset_mail_at": {"$lte": now - RESET_MAIL_INTERVAL}},
                ],
            },
            {"$set": {"last_reset_mail_at": now}},
        )
        if claimed.modified_count != 1:
            return
        token = new_secret()
        await PasswordResetDocument(
            id=digest(token), user_id=user.id, created_at=now, expires_at=now + RESET_TTL
        ).insert()
        await self.audit.record(
            "auth.password.reset_requested", actor=None, user_id=user.id, origin=origin
        )
        await self.mailer.send(self._reset_mail(user.email, token))

    def _reset_mail(self, email: str, token: str) -> Mail:
        minutes = int(RESET_TTL.total_seconds() // 60)
        lines = ["Someone asked to reset the password of your CryptoVault account.", ""]
        secret = token
        if self.settings.password_reset_url:
            secret = self.settings.password_reset_url.replace("{token}", token)
            lines += ["Choose a new password here:", secret]
        else:
            lines += [
                "Your reset token:",
                token,
                "",
                "Use it with the resetPassword mutation: "
                'resetPassword(token: "...", newPassword: "...").',
            ]
        lines += [
            "",
            f"It works once, within {minutes} minutes. Every session of the account is signed",
            "out when the password changes. If you did not ask for this, ignore this mail.",
        ]
        return Mail(
            to=email,
            subject="Reset your CryptoVault password",
            body="\n".join(lines),
            secrets=(secret, token),
        )

    async def reset_password(self, token: str, new_password: str, origin: Origin) -> None:
        invalid = BadUserInput("This reset token is invalid or has expired", field="token")
        now = now_ms()
        token_id = digest(token.strip()) if token and len(token) <= 512 else None
        if token_id is None:
            raise invalid
        pending = await PasswordResetDocument.find_one(
            {"_id": token_id, "used_at": None, "expires_at": {"$gt": now}}
        )
        user = await UserDocument.get(pending.user_id) if pending else None
        if pending is None or user is None or user.deleted_at is not None:
            raise invalid
        # Validate before spending the token: a rejected password keeps it usable.
        check_new_password(new_password, user.email)
        spent = await PasswordResetDocument.get_pymongo_collection().find_one_and_update(
            {"_id": token_id, "used_at": None, "expires_at": {"$gt": now}},
            {"$set": {"used_at": now}},
        )
        if spent is None:
            raise invalid
        if not await self._reset_password(user, new_password, now):
            # Deleted meanwhile: a deleted account never gets a password again.
            raise invalid
        revoked = await self.sessions.revoke_all(user.id, now, "password_reset")
        await PasswordResetDocument.find({"user_id": user.id, "used_at": None}).delete()
        await self.throttle.clear(user.email)
        await self.audit.record(
            "auth.password.reset",
            actor=user.id,
            origin=origin,
            details={"sessions_revoked": revoked},
        )

    # -- two-factor authentication -----------------------------------------------------

    async def begin_two_factor(self, viewer: Viewer, origin: Origin) -> TwoFactorSetup:
        user = await self._require_user(viewer)
        if user.two_factor_enabled:
            raise Conflict("Two-factor authentication is already on")
        secret = self.totp.new_secret()
        codes = self.totp.new_recovery_codes()
        await UserDocument.find_one({"_id": user.id}).update(
            {
                "$set": {
                    "totp_pending_secret": self.totp.encrypt(secret),
                    "pending_recovery_codes": [self.totp.hash_recovery_code(c) for c in codes],
                    "updated_at": now_ms(),
                }
            }
        )
        await self.audit.record("auth.2fa.setup_started", actor=viewer, origin=origin)
        return TwoFactorSetup(secret, self.totp.provisioning_uri(secret, user.email), codes)

    async def confirm_two_factor(self, viewer: Viewer, code: str, origin: Origin) -> UserDocument:
        user = await self._require_user(viewer)
        if user.two_factor_enabled:
            raise Conflict("Two-factor authentication is already on")
        if user.totp_pending_secret is None:
            raise BadUserInput("Start with enableTwoFactor", field="code")
        step = self.totp.matching_step(self.totp.decrypt(user.totp_pending_secret), code)
        if step is None:
            raise BadUserInput("Invalid code: enter the current code from your app", field="code")
        result = await UserDocument.get_pymongo_collection().update_one(
            {"_id": user.id, "totp_pending_secret": user.totp_pending_secret},
            {
                "$set": {
                    "two_factor_enabled": True,
                    "two_factor_at": now_ms(),
                    "totp_secret": user.totp_pending_secret,
                    "recovery_codes": user.pending_recovery_codes,
                    "totp_last_step": step,
                    "totp_pending_secret": None,
                    "pending_recovery_codes": [],
                    "updated_at": now_ms(),
                }
            },
        )
        if result.modified_count != 1:
            raise Conflict("Two-factor setup changed meanwhile; start again")
        await self.audit.record("auth.2fa.enabled", actor=viewer, origin=origin)
        return await self._require_user(viewer)

    async def disable_two_factor(self, viewer: Viewer, code: str, origin: Origin) -> UserDocument:
        user = await self._require_user(viewer)
        if not user.two_factor_enabled:
            raise Conflict("Two-factor authentication is already off")
        now = now_ms()
        # Guessing codes through this door counts like guessing them at login.
        attempt = await self.throttle.admit(user.email, origin.ip, now, _session_of(viewer))
        try:
            passed = await self._check_second_factor(
                user, code, origin, await self._code_session(user, viewer)
            )
        except RateLimited:
            await self.throttle.abandon(attempt)
            raise
        if not passed:
            await self._login_failed(attempt, user.email, user.id, "bad_otp", origin, now)
            raise BadUserInput("Invalid code", field="code")
        await self.throttle.succeeded(attempt)
        await UserDocument.find_one({"_id": user.id}).update(
            {
                "$set": {
                    "two_factor_enabled": False,
                    "totp_secret": None,
                    "totp_last_step": None,
                    "recovery_codes": [],
                    "updated_at": now,
                }
            }
        )
        await self.audit.record("auth.2fa.disabled", actor=viewer, origin=origin)
        return await self._require_user(viewer)

    # -- administration ----------------------------------------------------------------

    async def create_admin(
        self, email: str, password: str | None, promote_existing: bool = False
    ) -> tuple[UserDocument, AdminOutcome]:
        """Create an admin account. An existing account is refused unless
        `promote_existing`: whoever registered the address may not be the operator, so
        the promoted account keeps nothing of its registrant (sessions, API keys,
        password, second factor): its owner signs in after a password reset, which
        needs the mailbox."""
        email = normalize_email(email)
        existing = await UserDocument.find_one({"email": email})
        if existing is not None:
            if existing.role == "ADMIN":
                return existing, "unchanged"
            if not promote_existing:
                raise Conflict(
                    "An account with this email already exists and anyone may have "
                    "registered it: to make it an admin, promote it explicitly (its "
                    "sessions and API keys are revoked and it must reset its password)",
                    field="email",
                )
            return await self._promote(existing), "promoted"
        if password is None:
            raise BadUserInput("A password is required to create an account", field="password")
        check_new_password(password, email)
        now = now_ms()
        user = UserDocument(
            email=email,
            password_hash=await self.hasher.hash(password),
            role="ADMIN",
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        await user.insert()
        await self.audit.record("admin.created", actor=None, user_id=user.id, origin=SYSTEM)
        return user, "created"

    async def _promote(self, user: UserDocument) -> UserDocument:
        now = now_ms()
        # A password nobody knows: the registrant's no longer signs in.
        unusable = await self.hasher.hash(new_secret())
        await UserDocument.find_one({"_id": user.id}).update(
            {
                "$set": {
                    "role": "ADMIN",
                    "password_hash": unusable,
                    "password_changed_at": now,
                    "updated_at": now,
                    "two_factor_enabled": False,
                    "totp_secret": None,
                    "totp_pending_secret": None,
                    "totp_last_step": None,
                    "recovery_codes": [],
                    "pending_recovery_codes": [],
                    "kept_session": None,
                },
                # In the same write as the role: no credential of the registrant's,
                # even one being issued right now, is ever valid as an admin's.
                "$inc": {"session_epoch": 1, "key_epoch": 1},
            }
        )
        sessions = await self.sessions.revoke_all(user.id, now, "promoted to admin")
        keys = await ApiKeyDocument.get_pymongo_collection().update_many(
            {"user_id": user.id, "revoked_at": None}, {"$set": {"revoked_at": now}}
        )
        await self.audit.record(
            "admin.promoted",
            actor=None,
            user_id=user.id,
            origin=SYSTEM,
            details={
                "sessions_revoked": sessions,
                "api_keys_revoked": keys.modified_count,
                "two_factor_removed": user.two_factor_enabled,
                "password_reset_required": True,
            },
        )
        promoted = await UserDocument.get(user.id)
        assert promoted is not None
        return promoted

    async def set_frozen(
        self, user_id: str, frozen: bool, reason: str | None, actor: Viewer | None, origin: Origin
    ) -> UserDocument:
        """Freeze (read-only: no trading, no new API keys) or unfreeze an account."""
        if frozen and not (reason and reason.strip()):
            raise BadUserInput("Give a reason for freezing the account", field="reason")
        if reason is not None and len(reason) > MAX_FREEZE_REASON:
            raise BadUserInput(
                f"Reasons are at most {MAX_FREEZE_REASON} characters", field="reason"
            )
        updated = await UserDocument.get_pymongo_collection().find_one_and_update(
            {"_id": user_id},
            {
                "$set": {
                    "frozen": frozen,
                    "frozen_reason": reason.strip() if frozen and reason else None,
                    "updated_at": now_ms(),
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise NotFound("No such user", id=user_id)
        await self.audit.record(
            "user.frozen" if frozen else "user.unfrozen",
            actor=actor,
            user_id=user_id,
            target=f"user:{user_id}",
            origin=origin,
            details={"reason": reason} if frozen else {},
        )
        user = await UserDocument.get(user_id)
        assert user is not None
        return user

    # -- background work ---------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background identity task failed")

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, within: float = 10.0) -> None:
        """Wait for background work (reset mails) to finish; used at shutdown."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=within)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _session_of(viewer: Viewer) -> str:
    # Password and code confirmations need a user session (IsUserSession).
    return viewer.session_id or f"user:{viewer.user_id}"
