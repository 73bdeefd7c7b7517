"""Two-factor authentication: TOTP (RFC 6238, via pyotp) with secrets encrypted at
rest, and single-use recovery codes stored as keyed hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

import pyotp
from cryptography.fernet import Fernet, InvalidToken

ISSUER = "CryptoVault"
RECOVERY_CODES = 10
# Base32 without look-alikes; 10 characters = 50 bits per code.
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# Accept the previous and next 30 s step: phones drift and users type slowly.
VALID_WINDOW = 1


class TotpVault:
    def __init__(self, encryption_key: str) -> None:
        key = encryption_key.encode()
        self._fernet = Fernet(key)
        # Recovery-code hashes are keyed, so a leaked collection alone cannot be
        # brute-forced offline (50-bit codes are too short for a plain hash).
        self._code_key = hashlib.sha256(b"recovery-codes:" + base64.urlsafe_b64decode(key)).digest()

    # -- secrets -----------------------------------------------------------------------

    @staticmethod
    def new_secret() -> str:
        return pyotp.random_base32()

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise RuntimeError(
                "a stored TOTP secret cannot be decrypted: was TOTP_ENCRYPTION_KEY changed?"
            ) from None

    @staticmethod
    def provisioning_uri(secret: str, email: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)

    @staticmethod
    def matching_step(secret: str, code: str, now: datetime | None = None) -> int | None:
        """The time step `code` belongs to (within the allowed window), or None. The
        caller stores the step so the same code cannot be used twice."""
        code = code.strip().replace(" ", "")
        if not (code.isdigit() and len(code) == 6):
            return None
        totp = pyotp.TOTP(secret)
        moment = now or datetime.now(UTC)
        for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
            at = moment + timedelta(seconds=offset * totp.interval)
            if hmac.compare_digest(totp.at(at), code):
                return totp.timecode(at)
        return None

    # -- recovery codes ----------------------------------------------------------------

    @staticmethod
    def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
        codes = []
        for _ in range(count):
            raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
            codes.append(f"{raw[:5]}-{raw[5:]}")
        return codes

    def hash_recovery_code(self, code: str) -> str:
        normalized = code.strip().upper().replace("-", "").replace(" ", "")
        return hmac.new(self._code_key, normalized.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def looks_like_recovery_code(code: str) -> bool:
        normalized = code.strip().upper().replace("-", "").replace(" ", "")
        return len(normalized) == 10 and all(c in _ALPHABET for c in normalized)
