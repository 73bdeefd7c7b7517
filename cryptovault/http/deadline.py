"""A deadline for work that may never wait: `await within(work, deadline)` is
`async with asyncio.timeout_at(deadline): await work`, except that the timeout (a
Timeout and a timer on the loop) is only set once `work` first suspends. Until then
nothing else runs on the event loop, so no timer could have fired: work that finishes
without waiting for anything (a kept answer, `{ ping }`) costs no timer, and work that
does wait is stopped at the same deadline as before.

    deadline = asyncio.get_running_loop().time() + settings.request_timeout_seconds
    response = await within(serve(request), deadline)  # TimeoutError past the deadline
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["within"]


async def within[T](work: Coroutine[Any, Any, T], deadline: float) -> T:
    """`work`'s result, or TimeoutError once the loop's clock passes `deadline` while
    `work` waits (`asyncio.timeout_at`'s rules: a CancelledError of its own becomes
    TimeoutError; any other cancellation goes through).

    One difference remains, because the timeout starts after `work`'s first step: if
    that step cancels its own task (`current_task().cancel()`) and `deadline` has
    already passed when it suspends, the timeout counts that cancellation as one
    before its own and raises TimeoutError, where `timeout_at` entered first would
    let the CancelledError through."""
    try:
        waiting = work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    async with asyncio.timeout_at(deadline):
        return await _Resumed(work, waiting)


class _Resumed[T]:
    """Awaiting it goes on with `work`, a coroutine stepped once that suspended on
    `waiting`: what `await work` would have done from there (the task's wake-ups and
    exceptions, cancellation included, are passed on)."""

    __slots__ = ("waiting", "work")

    def __init__(self, work: Coroutine[Any, Any, T], waiting: Any) -> None:
        self.work = work
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, T]:
        work, waiting = self.work, self.waiting
        while True:
            thrown: BaseException | None = None
            try:
                yield waiting
            except GeneratorExit:
                work.close()
                raise
            except BaseException as exc:
                thrown = exc
            # Thrown in outside the handler above: inside it, the work would run with
            # `thrown` as the exception being handled (its sys.exception() once it has
            # handled the cancellation, the __context__ of whatever it raises next).
            try:
                waiting = work.send(None) if thrown is None else work.throw(thrown)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            finally:
                thrown = None  # no cycle: exception -> traceback -> this frame
