"""Sign-in throttling: a progressive delay after failed attempts, per account, per
client IP and per trusted device (README "Lockout").

Failures are counted in buckets: an account's (attempts without a device token for
it), a client IP's (the same attempts, by address) and a trusted device's (attempts
carrying a valid device token for the account, which are counted nowhere else). Once
a bucket holds `free` failures within its lookback, each attempt must wait
BASE_DELAY x 2^(failures - free) after the latest failure, at most MAX_DELAY. So an
attacker cannot lock anyone out for long: a device that signed in to the account
before has its own bucket, and a correct password with a correct second factor passes
any delay (`Attempt.held_back`).

Every decision is computed from the attempts' timestamps; the retention sweep is
housekeeping only. An attempt is recorded *before* the password is checked and
removed again if it turns out not to be a failure, so a burst of parallel guesses is
counted as it happens: no more of a burst get as far as a password check than a
sequence would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import SortDirection

from cryptovault.documents.users import LoginAttemptDocument
from cryptovault.errors import AccountLocked, DomainError, RateLimited

BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(minutes=15)
# Doublings from BASE_DELAY to MAX_DELAY: more failures than free + this change nothing.
_STEPS = math.ceil(math.log2(MAX_DELAY / BASE_DELAY)) + 1


@dataclass(frozen=True, slots=True)
class Bucket:
    free: int
    lookback: timedelta


ACCOUNT = Bucket(free=5, lookback=timedelta(hours=24))
DEVICE = Bucket(free=5, lookback=timedelta(hours=24))
# A shared address (an office, a carrier's NAT) gets more before it is slowed down,
# and forgets sooner; its signed-in devices are not slowed down at all.
IP = Bucket(free=20, lookback=timedelta(hours=1))
# Wrong second-factor codes, apart from passwords: a held-back account passes a right
# password with a right code, so codes need their own brake (~100 guesses a day at
# most once held back, for 1-in-333,000 odds each). Counted per account for unknown
# devices, and per trusted device or session of the account.
SECOND_FACTOR = Bucket(free=5, lookback=timedelta(hours=24))


def next_attempt_at(bucket: Bucket, failures: Sequence[datetime], now: datetime) -> datetime:
    """When the next attempt of a bucket with these failures may be made."""
    recent = sorted(t for t in failures if now - bucket.lookback < t <= now)
    excess = len(recent) - bucket.free
    if excess < 0:
        return now
    delay = min(BASE_DELAY * 2 ** min(excess, _STEPS), MAX_DELAY)
    return recent[-1] + delay


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class Attempt:
    record: LoginAttemptDocument
    # Why the attempt is held back (ACCOUNT_LOCKED, RATE_LIMITED), or None. A held-back
    # attempt may only pass with a correct password *and* second factor.
    held_back: DomainError | None


class LoginThrottle:
    async def begin(
        self, email: str, ip: str | None, now: datetime, device: str | None = None
    ) -> Attempt:
        """Record an attempt as a failure (until `succeeded`, `passed` or `abandon`
        says otherwise) and say whether it is held back. `device`: the id of a valid
        device token for this account. `now` has the store's millisecond precision
        (documents.common.now_ms)."""
        record = LoginAttemptDocument(email=email, ip=ip, at=now, device=device)
        await record.insert()
        return Attempt(record, await self._held_back(record, now))

    async def admit(self, email: str, ip: str | None, now: datetime, session: str) -> Attempt:
        """`begin` for a password or code confirmed from a signed-in session (change
        password, turn two-factor off): the session is its own bucket, and a held-back
        attempt is refused at once."""
        attempt = await self.begin(email, ip, now, device=f"session:{session}")
        if attempt.held_back is not None:
            await self.abandon(attempt)
            raise attempt.held_back
        return attempt

    async def _held_back(self, record: LoginAttemptDocument, now: datetime) -> DomainError | None:
        # Every other attempt in flight counts as a failure until it resolves: of a
        # parallel burst, the attempts inserted last see the others.
        others: dict[str, Any] = {"_id": {"$ne": record.id}}
        if record.device is not None:
            times = await self._times({"device": record.device, **others}, DEVICE, now)
            until = next_attempt_at(DEVICE, times, now)
            return _locked(until, now) if until > now else None
        if record.ip is not None:
            times = await self._times({"ip": record.ip, "device": None, **others}, IP, now)
            until = next_attempt_at(IP, times, now)
            if until > now:
                return RateLimited(
                    "Too many failed sign-in attempts from this address: try again later, "
                    "or sign in from a device that signed in before",
                    retryAfter=_seconds_until(until, now),
                    scope="ip",
                )
        times = await self._times({"email": record.email, "device": None, **others}, ACCOUNT, now)
        until = next_attempt_at(ACCOUNT, times, now)
        return _locked(until, now) if until > now else None

    async def failed(self, attempt: Attempt, now: datetime) -> datetime | None:
        """Keep the attempt as a failure; return until when its bucket is now held
        back, if this failure holds it back."""
        record = attempt.record
        bucket, query = (
            (DEVICE, {"device": record.device})
            if record.device is not None
            else (ACCOUNT, {"email": record.email, "device": None})
        )
        until = next_attempt_at(bucket, await self._times(query, bucket, now), now)
        return until if until > now else None

    async def succeeded(self, attempt: Attempt) -> None:
        """A correct sign-in clears its bucket's failures (an account's, or a device's).
        An address's failures are not cleared: they may be someone else's."""
        record = attempt.record
        if record.device is not None:
            await LoginAttemptDocument.find({"device": record.device}).delete()
        else:
            await LoginAttemptDocument.find({"email": record.email, "device": None}).delete()

    async def abandon(self, attempt: Attempt) -> None:
        """Neither success nor failure (a second factor is still needed; a held-back
        attempt that passed with its second factor clears nobody's failures)."""
        await attempt.record.delete()

    async def begin_code(
        self, user_id: str, email: str, now: datetime, device: str | None = None
    ) -> LoginAttemptDocument:
        """Record a second-factor code attempt as wrong (until `code_passed`) and refuse
        it (RATE_LIMITED) while the bucket's wrong codes hold it back. Recorded before
        the check, like a password attempt: of a parallel burst, no more get as far as
        a code check than a sequence would. `device`: a trusted device or session of
        the account, whose codes are counted apart from everyone else's."""
        record = LoginAttemptDocument(email=email, ip=None, at=now, device=_codes(user_id, device))
        await record.insert()
        others = {"device": record.device, "_id": {"$ne": record.id}}
        until = next_attempt_at(SECOND_FACTOR, await self._times(others, SECOND_FACTOR, now), now)
        if until > now:
            # A refused attempt checks nothing: it is not counted.
            await record.delete()
            raise RateLimited(
                "Too many wrong two-factor codes: try again later",
                retryAfter=_seconds_until(until, now),
                scope="two_factor",
            )
        return record

    async def code_passed(self, record: LoginAttemptDocument) -> None:
        """A right code clears its own bucket's wrong codes."""
        await LoginAttemptDocument.find({"device": record.device}).delete()

    async def clear(self, email: str) -> None:
        await LoginAttemptDocument.find({"email": email}).delete()

    async def _times(self, query: dict[str, Any], bucket: Bucket, now: datetime) -> list[datetime]:
        """The latest failures that can matter: free + _STEPS of them at most."""
        found = (
            await LoginAttemptDocument.find({**query, "at": {"$gt": now - bucket.lookback}})
            .sort([("at", SortDirection.DESCENDING)])
            .limit(bucket.free + _STEPS + 1)
            .to_list()
        )
        return [min(a.at, now) for a in found]


def _codes(user_id: str, device: str | None) -> str:
    # Wrong codes are kept as attempts of a pseudo-device: no password bucket counts
    # them. A trusted device's (or session's) codes have a bucket of their own, so
    # someone who has only the password cannot hold back the owner's second factor.
    return f"codes:{user_id}" if device is None else f"codes:{user_id}:{device}"


def _locked(until: datetime, now: datetime) -> AccountLocked:
    return AccountLocked(
        "Too many failed sign-in attempts for this account: try again later, sign in from "
        "a device that signed in before, or add your two-factor code",
        retryAfter=_seconds_until(until, now),
    )
