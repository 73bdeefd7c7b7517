"""The credentials held open by this instance's WebSockets, and how they learn that
one was revoked or changed (DESIGN "Revocation is an event").

A socket's credential (a session's access token or an API key) is checked against
the store once, at connection_init; from then on its state lives in a
`CredentialWatch`, shared by every socket and stream of that credential on this
instance. Hot paths (each operation, each event of a private stream) read the watch,
never the store.

How a change arrives: every credential change is audited (`CREDENTIAL_ACTIONS`), and
audit entries travel on the bus to every instance. An entry only says "user X's
credentials changed": the instance marks X's watches pending (their private streams
hold events, new operations wait) and reads their state again from the store, in one
batch. Nothing in a message is trusted as state, so a late, repeated or reordered
message can only cause a redundant read.

Invariants:
- Reads are sequenced per watch: a read's result is applied only if no read started
  after it was applied already, so two reads finishing out of order cannot bring an
  older state back (e.g. "unfrozen" over a newer "frozen").
- Revocation is terminal: once a read found the credential refused, the watch stays
  refused, whatever a later read says.
- Messages can be lost (Redis pub/sub has no replay): every watch is read again on a
  bus reconnect and every `recheck_seconds` anyway, so staleness is bounded even then.
- A socket that authenticated while a change was on its way is not missed: a change
  for its user seen after its authentication started makes its new watch pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from cryptovault.errors import DomainError
from cryptovault.events.bus import EventBus
from cryptovault.security.audit import SECURITY_CHANNEL
from cryptovault.security.viewer import Viewer, lost_rights

log = logging.getLogger(__name__)

# Audited actions after which a user's open credentials may stand differently.
CREDENTIAL_ACTIONS = frozenset(
    {
        "apikey.revoked",
        "auth.logout",
        "auth.password.changed",
        "auth.password.reset",
        "auth.refresh_token.reused",
        "session.revoked",
        "session.others_revoked",
        "admin.sessions.revoked",
        "admin.promoted",
        "user.frozen",
        "user.unfrozen",
        "user.deleted",
    }
)
# Watches read per store query (each read is one `$in` per collection).
BATCH = 500
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
# Invalidations remembered per user for sockets still authenticating (see `mark`).
MAX_REMEMBERED = 10_000

Revalidate = Callable[[Sequence[Viewer]], Awaitable[list[Viewer | DomainError]]]
Listener = Callable[[DomainError], None]


def _fresh(error: DomainError) -> DomainError:
    # Each raise gets its own instance: one exception object raised in several tasks
    # would share (and grow) one traceback.
    return type(error)(error.message, **error.extensions)


class Interrupt:
    """A private stream waiting for its next event: woken when its viewer is refused."""

    __slots__ = ("error", "scope", "viewer")

    def __init__(self, viewer: Viewer, scope: asyncio.Timeout) -> None:
        self.viewer = viewer
        self.scope = scope
        self.error: DomainError | None = None


class CredentialWatch:
    """One credential held by this instance's sockets: its state as last read."""

    __slots__ = (
        "_applied",
        "_interrupts",
        "_listeners",
        "_started",
        "_wanted",
        "error",
        "holders",
        "key",
        "pending",
        "revalidate",
        "user_id",
        "viewer",
    )

    def __init__(self, key: Hashable, viewer: Viewer, revalidate: Revalidate) -> None:
        self.key = key
        self.user_id = viewer.user_id
        self.revalidate = revalidate
        self.viewer = dataclasses.replace(viewer, watch=self)
        # Why the credential is refused; once set, for good.
        self.error: DomainError | None = None
        # Set while a change announced on the bus is being read: hold events until then.
        self.pending: asyncio.Future[None] | None = None
        self.holders = 0
        self._started = 0  # sequence number of the latest read started
        self._applied = 0  # ... and of the latest read applied
        self._wanted = 0  # the read that settles `pending`
        self._interrupts: set[Interrupt] = set()
        self._listeners: dict[Listener, None] = {}

    # -- what hot paths read --------------------------------------------------------

    def current_viewer(self) -> Viewer:
        if self.error is not None:
            raise _fresh(self.error)
        return self.viewer

    def refusal(self, viewer: Viewer) -> DomainError | None:
        """Why work authorized for `viewer` (this credential as it stood then) must
        stop now, or None."""
        if self.error is not None:
            return _fresh(self.error)
        if self.viewer is viewer:
            return None
        return lost_rights(viewer, self.viewer)

    async def settled(self) -> None:
        """Until a change announced on the bus has been read."""
        if self.pending is not None:
            await asyncio.shield(self.pending)

    @contextlib.contextmanager
    def interrupting(self, viewer: Viewer, scope: asyncio.Timeout) -> Iterator[Interrupt]:
        """While a stream of `viewer` awaits an event: end the wait (its timeout
        scope expires at once) as soon as `viewer` is refused."""
        interrupt = Interrupt(viewer, scope)
        self._interrupts.add(interrupt)
        try:
            yield interrupt
        finally:
            self._interrupts.discard(interrupt)

    def listen(self, listener: Listener) -> None:
        """Call `listener(error)` once if the credential is revoked (sockets close)."""
        self._listeners[listener] = None

    def unlisten(self, listener: Listener) -> None:
        self._listeners.pop(listener, None)

    # -- reads ----------------------------------------------------------------------

    def _invalidate(self) -> None:
        if self.error is not None:
            return
        self._wanted = self._started + 1
        if self.pending is None:
            self.pending = asyncio.get_running_loop().create_future()

    def _begin(self) -> int:
        self._started += 1
        return self._started

    def _apply(self, sequence: int, outcome: Viewer | DomainError) -> None:
        if self.error is None and sequence > self._applied:
            self._applied = sequence
            if isinstance(outcome, DomainError):
                self.error = outcome
            elif outcome != self.viewer:
                self.viewer = dataclasses.replace(outcome, watch=self)
            self._wake_refused()
        if self.pending is not None and (self.error is not None or self._applied >= self._wanted):
            self.pending.set_result(None)
            self.pending = None

    def _wake_refused(self) -> None:
        for interrupt in list(self._interrupts):
            if interrupt.error is None:
                interrupt.error = self.refusal(interrupt.viewer)
                if interrupt.error is not None:
                    interrupt.scope.reschedule(asyncio.get_running_loop().time())
        if self.error is not None:
            listeners, self._listeners = list(self._listeners), {}
            for listener in listeners:
                try:
                    listener(_fresh(self.error))
                except Exception:
                    log.exception("a revoked credential's listener failed")


def credential_key(viewer: Viewer) -> Hashable:
    return (viewer.user_id, viewer.session_id, viewer.token_id, viewer.api_key_id)


class LiveCredentials:
    """This instance's credential watches (one per credential held by its sockets)."""

    def __init__(self, bus: EventBus, recheck_seconds: float) -> None:
        self.recheck_seconds = recheck_seconds
        self._watches: dict[Hashable, CredentialWatch] = {}
        self._by_user: dict[str, set[CredentialWatch]] = {}
        self._dirty: dict[CredentialWatch, None] = {}
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Invalidations seen, and the latest per user (see `mark`).
        self._seen = 0
        self._last_seen: dict[str, int] = {}
        self._forgotten_before = 0
        bus.subscribe(SECURITY_CHANNEL, self._on_security_event)
        bus.on_reconnect(self.resync)

    def __len__(self) -> int:
        return len(self._watches)

    # -- sockets --------------------------------------------------------------------

    def mark(self) -> int:
        """Taken before authenticating a socket, handed to `hold` after: a change
        for its user announced in between makes its watch pending at once."""
        return self._seen

    def hold(self, viewer: Viewer, revalidate: Revalidate, mark: int) -> Viewer:
        """The viewer bound to its credential's watch (one more socket holds it)."""
        key = credential_key(viewer)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = CredentialWatch(key, viewer, revalidate)
            self._by_user.setdefault(viewer.user_id, set()).add(watch)
        elif watch.error is None and watch.viewer != viewer:
            # Two reads of one credential disagree: read it once more.
            self._read_soon([watch])
        watch.holders += 1
        if max(self._forgotten_before, self._last_seen.get(viewer.user_id, 0)) > mark:
            self._read_soon([watch])
        return watch.viewer

    def release(self, viewer: Viewer) -> None:
        watch = viewer.watch
        if watch is None or self._watches.get(watch.key) is not watch:
            return
        watch.holders -= 1
        if watch.holders <= 0:
            del self._watches[watch.key]
            self._dirty.pop(watch, None)
            others = self._by_user.get(watch.user_id)
            if others is not None:
                others.discard(watch)
                if not others:
                    del self._by_user[watch.user_id]

    # -- changes --------------------------------------------------------------------

    async def _on_security_event(self, message: dict[str, Any]) -> None:
        user_id = message.get("user_id")
        if message.get("action") in CREDENTIAL_ACTIONS and isinstance(user_id, str):
            self.invalidate(user_id)

    def invalidate(self, user_id: str) -> None:
        """The user's credentials may have changed: read them again."""
        self._seen += 1
        self._last_seen[user_id] = self._seen
        if len(self._last_seen) > MAX_REMEMBERED:
            self._last_seen.clear()
            self._forgotten_before = self._seen
        self._read_soon(self._by_user.get(user_id, ()))

    async def resync(self) -> None:
        """Bus messages may have been lost (a reconnect): read every credential."""
        self._seen += 1
        self._forgotten_before = self._seen
        self._last_seen.clear()
        log.info("re-reading every open credential", extra={"credentials": len(self._watches)})
        self._read_soon(self._watches.values())

    def _read_soon(self, watches: Iterable[CredentialWatch], pending: bool = True) -> None:
        for watch in list(watches):
            if watch.error is not None:
                continue
            if pending:
                watch._invalidate()
            self._dirty[watch] = None
        if self._dirty and (self._reader is None or self._reader.done()):
            self._reader = asyncio.create_task(self._read(), name="credential-reads")

    async def _read(self) -> None:
        failures = 0
        while self._dirty:
            batch = list(self._dirty)[:BATCH]
            for watch in batch:
                del self._dirty[watch]
            try:
                await self._read_batch(batch)
                failures = 0
            except Exception as exc:
                # Keep what was announced pending (its streams hold their events):
                # serving a possibly revoked credential is worse than a pause.
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning(
                    "could not read credentials; retrying",
                    extra={"error": repr(exc), "retry_in_s": delay},
                )
                for watch in batch:
                    if watch.pending is not None and self._watches.get(watch.key) is watch:
                        self._dirty[watch] = None
                await asyncio.sleep(delay)

    async def _read_batch(self, batch: list[CredentialWatch]) -> None:
        by_reader: dict[Revalidate, list[CredentialWatch]] = {}
        for watch in batch:
            by_reader.setdefault(watch.revalidate, []).append(watch)
        for revalidate, watches in by_reader.items():
            sequences = [w._begin() for w in watches]
            outcomes = await revalidate([w.viewer for w in watches])
            for watch, sequence, outcome in zip(watches, sequences, outcomes, strict=True):
                was_refused = watch.error is not None
                watch._apply(sequence, outcome)
                if watch.error is not None and not was_refused:
                    log.info(
                        "open credential refused",
                        extra={
                            "user_id": watch.user_id,
                            "reason": watch.error.extensions.get("reason"),
                            "sockets": watch.holders,
                        },
                    )

    # -- bounded staleness ----------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="credential-sweep")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            # Not pending: nothing announced a change, so nothing waits for this read.
            self._read_soon(self._watches.values(), pending=False)

    async def close(self) -> None:
        for task in (self._sweeper, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._reader = None
