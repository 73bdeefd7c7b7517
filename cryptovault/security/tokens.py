"""Access tokens (signed JWTs) and opaque secrets (refresh tokens, reset tokens, API
keys), which are only ever stored as their SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from cryptovault.errors import Unauthenticated

ALGORITHM = "HS256"
ACCESS = "access"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    role: str
    session_id: str
    token_id: str  # the `jti`
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: AccessClaims


class TokenIssuer:
    def __init__(self, secret: str, ttl: timedelta) -> None:
        self._secret = secret
        self.ttl = ttl

    def issue(
        self,
        user_id: str,
        role: str,
        session_id: str,
        now: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        claims = AccessClaims(
            user_id=user_id,
            role=role,
            session_id=session_id,
            token_id=uuid.uuid4().hex,
            issued_at=issued,
            expires_at=issued + (ttl or self.ttl),
        )
        payload = {
            "sub": user_id,
            "jti": claims.token_id,
            "iat": int(claims.issued_at.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "type": ACCESS,
            "role": role,
            "sid": session_id,
        }
        return IssuedToken(jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims)

    def decode(self, token: str) -> AccessClaims:
        """Verify signature (HS256 only: `none` and every other algorithm are refused),
        expiry and required claims."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("Invalid access token", reason="TOKEN_INVALID") from None
        sub, sid = payload.get("sub"), payload.get("sid")
        if payload.get("type") != ACCESS or not isinstance(sid, str) or not isinstance(sub, str):
            raise Unauthenticated("Invalid access token", reason="TOKEN_INVALID")
        return AccessClaims(
            user_id=sub,
            role=str(payload.get("role", "USER")),
            session_id=sid,
            token_id=str(payload["jti"]),
            issued_at=datetime.fromtimestamp(payload["iat"], UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )


def new_secret(nbytes: int = 32) -> str:
    """A random URL-safe secret (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """What the store keeps instead of a high-entropy secret. A plain hash suffices
    for 256-bit random values (no dictionary to attack); passwords use Argon2."""
    return hashlib.sha256(secret.encode()).hexdigest()
