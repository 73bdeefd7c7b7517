"""The per-instance credential cache (security/credentials.py) on its own, against a
store whose reads the test releases one by one: messages carry no state, reads that
started before a change never settle it, a revocation is never undone, and private
streams hold or end their events by what the cache last read."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

import pytest

from cryptovault.errors import DomainError, Forbidden, Unauthenticated
from cryptovault.events.bus import MemoryBus
from cryptovault.security.audit import SECURITY_CHANNEL
from cryptovault.security.credentials import LiveCredentials
from cryptovault.security.viewer import Viewer, while_valid

VIEWER = Viewer("u1", session_id="s1", token_id="t1")
REVOKED = Unauthenticated("The session has ended", reason="SESSION_REVOKED")
WAIT = 10.0


class Store:
    """`revalidate` for the cache: each read takes the current state when it starts
    and answers once the test releases it (`await store.read()` then `.set()`)."""

    def __init__(self, state: Viewer | DomainError) -> None:
        self.state = state
        self.reads: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.count = 0

    async def __call__(self, viewers: Sequence[Viewer]) -> list[Viewer | DomainError]:
        self.count += 1
        answer = [self.state for _ in viewers]
        gate = asyncio.Event()
        await self.reads.put(gate)
        await gate.wait()
        return answer

    async def read(self) -> asyncio.Event:
        """The next read, started (its answer taken), not yet released."""
        return await asyncio.wait_for(self.reads.get(), WAIT)

    async def answer(self) -> None:
        (await self.read()).set()


@pytest.fixture
async def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def credentials(bus: MemoryBus) -> AsyncIterator[LiveCredentials]:
    live = LiveCredentials(bus, recheck_seconds=3600)
    yield live
    await live.close()


async def announce(bus: MemoryBus, action: str, user_id: str = "u1") -> None:
    await bus.publish(SECURITY_CHANNEL, {"action": action, "user_id": user_id})


async def test_a_read_started_before_a_change_does_not_settle_it(bus, credentials):
    store = Store(VIEWER)
    held = credentials.hold(VIEWER, store, credentials.mark())
    watch = held.watch
    assert watch is not None and watch.pending is None
    await announce(bus, "user.unfrozen")
    first = await store.read()  # read 1 has taken its answer: not frozen
    store.state = dataclasses.replace(VIEWER, frozen=True)
    await announce(bus, "user.frozen")  # announced while read 1 is in flight
    first.set()
    second = await store.read()
    # Read 1 is applied, but it cannot speak for the later change: still pending.
    assert watch.pending is not None and watch.viewer.frozen is False
    second.set()
    await asyncio.wait_for(watch.settled(), WAIT)
    assert watch.pending is None and watch.viewer.frozen is True
    assert held.current().frozen is True


async def test_messages_carry_no_state_so_reordered_ones_end_in_the_stores_state(bus, credentials):
    store = Store(VIEWER)
    held = credentials.hold(VIEWER, store, credentials.mark())
    # The store went frozen, then unfrozen; the two messages arrive the other way round.
    await announce(bus, "user.unfrozen")
    await announce(bus, "user.frozen")
    await store.answer()  # one read answers both
    await asyncio.wait_for(held.watch.settled(), WAIT)
    assert held.current().frozen is False
    assert store.count == 1
    # Messages about someone else, or about nothing credential-related, read nothing.
    await announce(bus, "user.frozen", user_id="u2")
    await announce(bus, "order.placed")
    assert held.watch.pending is None and store.count == 1


async def test_a_revoked_credential_stays_revoked_whatever_comes_later(bus, credentials):
    store = Store(REVOKED)
    held = credentials.hold(VIEWER, store, credentials.mark())
    await announce(bus, "auth.logout")
    await store.answer()
    await asyncio.wait_for(held.watch.settled(), WAIT)
    with pytest.raises(Unauthenticated) as refused:
        held.current()
    assert refused.value.extensions == {"reason": "SESSION_REVOKED"}
    # A late or repeated message, or a store that (wrongly) says valid again: no read,
    # no resurrection; another socket of the same credential is refused too.
    store.state = VIEWER
    await announce(bus, "auth.logout")
    await announce(bus, "user.unfrozen")
    assert store.count == 1
    again = credentials.hold(VIEWER, store, credentials.mark())
    with pytest.raises(Unauthenticated):
        again.current()


async def test_a_change_announced_before_a_socket_holds_its_watch_is_read(bus, credentials):
    store = Store(VIEWER)
    mark = credentials.mark()  # the socket starts authenticating
    await announce(bus, "apikey.revoked")  # no watch yet: nothing to read
    assert store.count == 0
    store.state = REVOKED
    held = credentials.hold(VIEWER, store, mark)  # its authentication read the old state
    assert held.watch.pending is not None
    await store.answer()
    await asyncio.wait_for(held.watch.settled(), WAIT)
    with pytest.raises(Unauthenticated):
        held.current()
    # A socket that started authenticating after the message is not read again.
    other = dataclasses.replace(VIEWER, session_id="s2", token_id="t2")
    fresh = credentials.hold(other, Store(other), credentials.mark())
    assert fresh.watch.pending is None


async def queue_source(queue: asyncio.Queue[int]) -> AsyncIterator[int]:
    while True:
        yield await queue.get()


async def test_a_private_stream_holds_events_while_a_change_is_read_then_ends(bus, credentials):
    store = Store(VIEWER)
    held = credentials.hold(VIEWER, store, credentials.mark())
    events: asyncio.Queue[int] = asyncio.Queue()
    relayed: list[int] = []

    async def consume() -> None:
        async for item in while_valid(held, queue_source(events)):
            relayed.append(item)

    stream = asyncio.create_task(consume())
    events.put_nowait(1)
    async with asyncio.timeout(WAIT):
        while relayed != [1]:
            await asyncio.sleep(0)
    await announce(bus, "apikey.revoked")
    store.state = REVOKED
    read = await store.read()
    events.put_nowait(2)  # arrives while the change is being read: held
    read.set()
    with pytest.raises(Unauthenticated) as ended:
        await asyncio.wait_for(stream, WAIT)
    assert ended.value.extensions == {"reason": "SESSION_REVOKED"}
    assert relayed == [1]


async def test_an_idle_private_stream_ends_on_a_loss_of_rights_and_not_on_a_gain(bus, credentials):
    store = Store(VIEWER)
    held = credentials.hold(VIEWER, store, credentials.mark())
    idle: asyncio.Queue[int] = asyncio.Queue()
    stream = asyncio.create_task(anext(while_valid(held, queue_source(idle))))

    store.state = dataclasses.replace(VIEWER, role="ADMIN")  # a promotion: a gain
    await announce(bus, "admin.promoted")
    await store.answer()
    await asyncio.wait_for(held.watch.settled(), WAIT)
    assert not stream.done()

    store.state = dataclasses.replace(VIEWER, frozen=True)  # a freeze: a loss
    await announce(bus, "user.frozen")
    await store.answer()
    with pytest.raises(Forbidden) as ended:
        await asyncio.wait_for(stream, WAIT)
    assert ended.value.extensions == {"reason": "ACCOUNT_FROZEN"}


async def test_a_failed_read_keeps_the_change_pending_and_is_retried(bus, credentials):
    calls = 0

    async def flaky(viewers: Sequence[Viewer]) -> list[Viewer | DomainError]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store unreachable")
        return [REVOKED for _ in viewers]

    held = credentials.hold(VIEWER, flaky, credentials.mark())
    await announce(bus, "auth.logout")
    await asyncio.wait_for(held.watch.settled(), WAIT)
    assert calls == 2
    with pytest.raises(Unauthenticated):
        held.current()


async def test_released_watches_are_forgotten(bus, credentials):
    store = Store(VIEWER)
    first = credentials.hold(VIEWER, store, credentials.mark())
    second = credentials.hold(VIEWER, store, credentials.mark())
    assert first.watch is second.watch and len(credentials) == 1
    credentials.release(first)
    assert len(credentials) == 1
    credentials.release(second)
    assert len(credentials) == 0
    await announce(bus, "auth.logout")
    assert store.count == 0
