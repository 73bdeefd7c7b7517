"""Passwords: Argon2id hashing off the event loop with bounded concurrency, and the
rules a new password and an email address must follow."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from cryptovault.config import Settings
from cryptovault.errors import BadUserInput

MIN_PASSWORD = 10
MAX_PASSWORD = 128
MAX_EMAIL = 254
# Local parts shorter than this are too common as substrings to forbid ("jo", "a").
MIN_LOCAL_PART_RULE = 3
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


@dataclass(frozen=True, slots=True)
class Argon2Profile:
    time_cost: int
    memory_kib: int
    parallelism: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Argon2Profile:
        return cls(
            settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
        )


# RFC 9106 section 4, second recommended option (for memory-constrained settings).
RFC9106_LOW_MEMORY = Argon2Profile(time_cost=3, memory_kib=65536, parallelism=4)


class PasswordHasher:
    """Argon2id in worker threads. Every hash holds `memory_kib` of memory for ~100 ms,
    so at most `concurrency` run at once; the rest wait their turn instead of
    exhausting memory or blocking the event loop."""

    def __init__(self, profile: Argon2Profile, concurrency: int = 2) -> None:
        self.profile = profile
        self._hasher = argon2.PasswordHasher(
            time_cost=profile.time_cost,
            memory_cost=profile.memory_kib,
            parallelism=profile.parallelism,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored_hash, password)

    # The two functions that run in worker threads.

    def _hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def verify_dummy(self, password: str) -> None:
        """Spend what a real verification costs, for callers with no account: an
        unknown email must not answer faster than a wrong password."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > MAX_EMAIL or not _EMAIL.match(value):
        raise BadUserInput("Enter a valid email address", field="email")
    return value


def check_new_password(password: str, email: str) -> None:
    """Length 10-128 characters and not containing the email's local part."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadUserInput(
            f"Passwords must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long",
            field="password",
        )
    local = email.partition("@")[0].lower()
    if len(local) >= MIN_LOCAL_PART_RULE and local in password.lower():
        raise BadUserInput("The password must not contain your email address", field="password")
