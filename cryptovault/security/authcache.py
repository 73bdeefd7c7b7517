"""What this instance knows of the credentials it accepted recently, so that an
authenticated request reads nothing from the store (README "Authentication").

An entry holds what authentication answers for one credential (an access token, or
an API key by the digest of its secret): the user, role, freeze, and what the
credential needs checked on each request without a read (its expiry, when it was
last recorded as used). Only accepted credentials are kept: a refusal is read again
each time.

How an entry stops being used:
- every change that alters what authentication answers is audited, and the audit
  entry (`credentials.CREDENTIAL_ACTIONS`) reaches every instance through the bus
  (this instance's own changes at once, before the entry is published): every entry
  of that user is dropped;
- a reader takes a ticket before it reads the store and may fill the cache only if
  no invalidation of that user (nor a clear) happened since: a read that raced a
  revocation can never put the state from before the revocation back;
- when bus messages may have been lost (a Redis reconnect), everything is dropped;
- whatever happens to messages, an entry is used for at most `max_age` seconds
  (AUTH_CACHE_SECONDS; 0 turns the cache off: every request reads the store).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptovault.events.bus import EventBus
from cryptovault.security.audit import SECURITY_CHANNEL
from cryptovault.security.credentials import CREDENTIAL_ACTIONS

log = logging.getLogger(__name__)

MAX_ENTRIES = 50_000
# Invalidations remembered per user for reads in flight; past that, one clear.
MAX_REMEMBERED = 10_000

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    user_id: str
    value: T
    filled_at: float


class AuthCache:
    """Per instance; keys are credentials ("t:<token id>", "k:<key digest>")."""

    def __init__(
        self,
        max_age: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Entry[Any]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        # Invalidations so far; the latest per user; everything before `_floor` is
        # forgotten (a clear).
        self._seq = 0
        self._user_seq: dict[str, int] = {}
        self._floor = 0

    @property
    def enabled(self) -> bool:
        return self.max_age > 0

    def __len__(self) -> int:
        return len(self._entries)

    def attach(self, bus: EventBus) -> None:
        """Follow credential changes on the bus (before the bus starts)."""
        bus.subscribe(SECURITY_CHANNEL, self._on_message)
        bus.on_reconnect(self._on_reconnect)

    # -- readers ----------------------------------------------------------------------

    def ticket(self) -> int:
        """Taken before reading the store; handed to `put` with what was read."""
        return self._seq

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() - entry.filled_at >= self.max_age:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: str, user_id: str, value: Any, ticket: int) -> bool:
        """Keep `value`, read after `ticket` was taken, unless the user's credentials
        (or everything) were invalidated since: then what was read may be older than
        the change, and the next request reads again."""
        if not self.enabled or ticket < max(self._floor, self._user_seq.get(user_id, 0)):
            return False
        self._drop(key)
        self._entries[key] = _Entry(user_id, value, self.clock())
        self._by_user.setdefault(user_id, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        return True

    def keys_of(self, user_id: str) -> frozenset[str]:
        return frozenset(self._by_user.get(user_id, ()))

    # -- invalidation -----------------------------------------------------------------

    def observe(self, message: dict[str, Any]) -> None:
        """An audit entry (from the bus, or recorded on this instance)."""
        user_id = message.get("user_id")
        if message.get("action") in CREDENTIAL_ACTIONS and isinstance(user_id, str):
            self.invalidate(user_id)

    def invalidate(self, user_id: str) -> None:
        """The user's credentials may stand differently: drop them, and refuse fills
        from reads that started before now."""
        self._seq += 1
        self._user_seq[user_id] = self._seq
        if len(self._user_seq) > MAX_REMEMBERED:
            self._user_seq.clear()
            self._floor = self._seq
        for key in self._by_user.pop(user_id, ()):
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._seq += 1
        self._floor = self._seq
        self._user_seq.clear()
        self._entries.clear()
        self._by_user.clear()

    async def _on_message(self, message: dict[str, Any]) -> None:
        self.observe(message)

    async def _on_reconnect(self) -> None:
        # Messages published while the bus was away are lost: nothing kept is sure.
        log.info("bus reconnected: dropping cached credentials", extra={"entries": len(self)})
        self.clear()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        keys = self._by_user.get(entry.user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[entry.user_id]
