"""The audit copier's loop (trading/order_audit.py): it runs its rounds only while it
leads, and asks again right before each round, so a round it had waited for is not run
once leadership has moved (a test pausing the background copier relies on that too)."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptovault.trading.order_audit import OrderAudit


class Rounds(OrderAudit):
    """The loop with its store round replaced by a count of rounds."""

    def __init__(self, answers: Any = lambda asked: True, **kw: Any) -> None:
        super().__init__(orders=None, audit=None, is_active=self.leads, **kw)  # type: ignore[arg-type]
        self.answers = answers  # the n-th answer to "do I lead?" (n from 1)
        self.leading: bool | None = None  # overrides the answers when set
        self.rounds = 0
        self.times_asked = 0

    def leads(self) -> bool:
        self.times_asked += 1
        return self.answers(self.times_asked) if self.leading is None else self.leading

    async def copy(self, limit: int = 500) -> int:
        self.rounds += 1
        return 0


async def until(copier: Rounds, condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_round_waited_for_is_not_run_once_leadership_moves() -> None:
    # Asked 1st: leads (round 1 at once). 2nd, the next iteration: leads, so the loop
    # waits `every` for its next round. 3rd, after that wait: no longer leads. From
    # the 8th on it leads again. The answers go by call, not by time.
    copier = Rounds(lambda asked: asked <= 2 or asked >= 8, every=0.02, catch_up=0.02)
    copier.start()
    try:
        await until(copier, lambda: copier.times_asked >= 7)
        assert copier.rounds == 1  # no round after the wait, none as a follower
        await until(copier, lambda: copier.rounds >= 2)  # leads again: rounds resume
    finally:
        copier.leading = False
        await copier.close(timeout=5)


async def test_closing_during_the_wait_ends_the_loop_without_another_round() -> None:
    copier = Rounds(every=30.0, catch_up=30.0)
    copier.start()
    await until(copier, lambda: copier.rounds == 1)
    copier.nudge()  # the loop now waits `every` (30 s) before its next round
    await until(copier, lambda: copier.times_asked >= 2)
    copier.leading = False  # close() drains only as the leader: count the loop's rounds
    task = copier._task
    assert task is not None
    await copier.close(timeout=10)
    # The wait ended at close(), and the loop with it (not cancelled after the timeout).
    assert copier.rounds == 1 and task.done() and not task.cancelled()
