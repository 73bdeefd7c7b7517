"""Device tokens ("device cookies", OWASP): what a browser or app receives when it
signs in, and sends back with its next `login`. Such a device has a throttling bucket
of its own (security.lockout): failed attempts made elsewhere on the account, by an
attacker or from the same address, never slow it down.

A token is `cvd_<payload>.<mac>`: the user id, a random device id and the time of
issue (ms), signed with a key derived from JWT_SECRET; nothing is stored. It proves only
that this device signed in to this account before: it opens no session and replaces
no password. It is refused once it is a year old, or when the account's password
changed after it was issued (a password reset drops every trust the old password
earned).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from cryptovault.documents.users import UserDocument

PREFIX = "cvd_"
TTL = timedelta(days=365)
MAX_TOKEN = 256


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DeviceTokens:
    def __init__(self, secret: str) -> None:
        # A key of its own: a device token can never pass for anything else.
        self._key = hashlib.sha256(b"cryptovault device token\0" + secret.encode()).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:18])

    def issue(self, user_id: str, now: datetime, device_id: str | None = None) -> str:
        """A token for this device (a new device id unless it already has one)."""
        issued = round(now.timestamp() * 1000)
        payload = _b64(f"{user_id}|{device_id or secrets.token_hex(12)}|{issued}".encode())
        return f"{PREFIX}{payload}.{self._mac(payload)}"

    def read(self, token: str | None, now: datetime) -> tuple[str, str, datetime] | None:
        """(user id, device id, issued at) of a well-formed, signed, unexpired token."""
        if not token or len(token) > MAX_TOKEN or not token.startswith(PREFIX):
            return None
        payload, _, mac = token[len(PREFIX) :].partition(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            user_id, device_id, issued = _unb64(payload).decode().split("|")
            issued_at = datetime.fromtimestamp(int(issued) / 1000, tz=UTC)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not now - TTL < issued_at <= now + timedelta(minutes=5):
            return None
        return user_id, device_id, issued_at

    def device_of(
        self,
        token: str | None,
        user: UserDocument | None,
        now: datetime,
        since: datetime | None = None,
    ) -> str | None:
        """The device id when `token` was issued to `user` since its password last
        changed (and since `since`); None otherwise."""
        found = self.read(token, now)
        if found is None or user is None or found[0] != user.id:
            return None
        for moment in (user.password_changed_at, since):
            if moment is not None and found[2] < _ms(moment):
                return None
        return found[1]


def _ms(moment: datetime) -> datetime:
    """An aware time at the store's millisecond precision (a token's too)."""
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment - timedelta(microseconds=moment.microsecond % 1000)
