"""Login throttling from the failed-attempts collection: 5 failures for an account
within 15 minutes lock it for 15 minutes; 20 failures from one IP address within 15
minutes refuse that address. Every decision is computed from the attempts'
timestamps; the collection's TTL index is housekeeping only.

An attempt is recorded *before* the password is checked and removed again if it
succeeds, so a burst of parallel guesses is counted as it happens: at most five of a
window get as far as a password check."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from beanie import SortDirection

from cryptovault.documents.users import LoginAttemptDocument
from cryptovault.errors import AccountLocked, RateLimited

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCK = timedelta(minutes=15)
IP_MAX_FAILURES = 20
IP_WINDOW = timedelta(minutes=15)
# A lock can only come from failures in this span before now.
LOOKBACK = WINDOW + LOCK


def locked_until(failures: Sequence[datetime], now: datetime) -> datetime | None:
    """When the account unlocks, or None if it is not locked at `now`: locked for LOCK
    after any MAX_FAILURES failures that fall within WINDOW of each other."""
    times = sorted(t for t in failures if now - LOOKBACK < t <= now)
    until: datetime | None = None
    for i in range(len(times) - MAX_FAILURES + 1):
        last = times[i + MAX_FAILURES - 1]
        if last - times[i] <= WINDOW:
            candidate = last + LOCK
            until = candidate if until is None else max(until, candidate)
    return until if until is not None and until > now else None


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


class LoginThrottle:
    async def begin(self, email: str, ip: str | None, now: datetime) -> LoginAttemptDocument:
        """Refuse a locked account or a throttled address; otherwise record the attempt
        as a failure until `succeeded` or `abandon` says otherwise. `now` has the
        store's millisecond precision (documents.common.now_ms)."""
        if ip is not None:
            await self._check_ip(ip, now)
        self._raise_if_locked(await self._failure_times(email, now), now)
        attempt = LoginAttemptDocument(email=email, ip=ip, at=now)
        await attempt.insert()
        # Every other attempt in flight counts as a failure until it resolves. Of any
        # six concurrent attempts the last to be inserted sees the other five, so a
        # parallel burst gets no more password checks than a sequence would.
        others = await LoginAttemptDocument.find(
            {"email": email, "at": {"$gt": now - LOOKBACK}, "_id": {"$ne": attempt.id}}
        ).to_list()
        until = locked_until([min(a.at, now) for a in others], now)
        if until is not None:
            await attempt.delete()
            raise AccountLocked(
                "Too many failed attempts: the account is locked for a while",
                retryAfter=_seconds_until(until, now),
            )
        return attempt

    async def failed(self, attempt: LoginAttemptDocument, now: datetime) -> datetime | None:
        """Keep the attempt as a failure; return when the account unlocks if this
        failure locked it."""
        times = await self._failure_times(attempt.email, now)
        until = locked_until(times, now)
        before = locked_until([t for t in times if t < attempt.at], now)
        return until if until is not None and before is None else None

    async def succeeded(self, attempt: LoginAttemptDocument) -> None:
        """A correct password resets the account's count."""
        await LoginAttemptDocument.find({"email": attempt.email}).delete()

    async def abandon(self, attempt: LoginAttemptDocument) -> None:
        """Neither success nor failure (e.g. a second factor is still needed)."""
        await attempt.delete()

    async def clear(self, email: str) -> None:
        await LoginAttemptDocument.find({"email": email}).delete()

    async def _failure_times(self, email: str, now: datetime) -> list[datetime]:
        found = (
            await LoginAttemptDocument.find({"email": email, "at": {"$gt": now - LOOKBACK}})
            .sort([("at", SortDirection.DESCENDING)])
            .limit(200)
            .to_list()
        )
        return [a.at for a in found]

    def _raise_if_locked(self, times: list[datetime], now: datetime) -> None:
        until = locked_until(times, now)
        if until is not None:
            raise AccountLocked(
                "Too many failed attempts: the account is locked for a while",
                retryAfter=_seconds_until(until, now),
            )

    async def _check_ip(self, ip: str, now: datetime) -> None:
        recent = (
            await LoginAttemptDocument.find({"ip": ip, "at": {"$gt": now - IP_WINDOW}})
            .sort([("at", SortDirection.DESCENDING)])
            .limit(IP_MAX_FAILURES)
            .to_list()
        )
        if len(recent) >= IP_MAX_FAILURES:
            oldest = min(a.at for a in recent)
            raise RateLimited(
                "Too many failed sign-in attempts from this address; try again later",
                retryAfter=_seconds_until(oldest + IP_WINDOW, now),
            )
