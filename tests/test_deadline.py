"""http/deadline.within: `await within(work, deadline)` answers what
`async with asyncio.timeout_at(deadline): await work` does, and sets no timer for
work that never waits."""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

import pytest

from cryptovault.http import deadline
from cryptovault.http.deadline import within


def _timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    made: list[float] = []
    real = asyncio.timeout_at

    def counting(when: float) -> asyncio.Timeout:
        made.append(when)
        return real(when)

    monkeypatch.setattr(deadline.asyncio, "timeout_at", counting)
    return made


async def test_work_that_never_waits_gets_no_timer(monkeypatch):
    made = _timers(monkeypatch)

    async def ready() -> str:
        return "pong"

    loop = asyncio.get_running_loop()
    assert await within(ready(), loop.time() + 10) == "pong"
    assert made == []


async def test_work_that_waits_gets_the_same_deadline(monkeypatch):
    made = _timers(monkeypatch)
    gate = asyncio.Event()

    async def waits() -> int:
        total = 0
        for n in range(3):
            await asyncio.sleep(0)  # a bare yield
            gate.set()
            await gate.wait()  # a future
            total += n
        return total

    when = asyncio.get_running_loop().time() + 10
    assert await within(waits(), when) == 3
    assert made == [when]


async def test_work_past_the_deadline_raises_timeout_error():
    event = asyncio.Event()
    finished: list[str] = []

    async def stuck() -> None:
        try:
            await event.wait()
        finally:
            finished.append("cleaned up")

    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await within(stuck(), loop.time() + 0.01)
    assert finished == ["cleaned up"]


async def test_errors_and_cancellation_pass_through():
    async def fails_at_once() -> None:
        raise ValueError("sync")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("async")

    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError, match="sync"):
        await within(fails_at_once(), loop.time() + 10)
    with pytest.raises(KeyError, match="async"):
        await within(fails_later(), loop.time() + 10)

    started = asyncio.Event()
    caught: list[str] = []

    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            caught.append("cancelled")
            raise

    task = asyncio.create_task(within(long(), loop.time() + 100))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caught == ["cancelled"]


async def test_work_that_handles_a_cancellation_goes_on():
    """A cancellation thrown in is the work's to handle, as with a plain await."""
    started = asyncio.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)
            return "handled"
        return "slept"

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(within(stubborn(), loop.time() + 100))
    await started.wait()
    task.cancel()
    assert await task == "handled"


async def test_a_ping_over_http_sets_no_request_timer(store_server, monkeypatch):
    """`{ ping }` never waits (no store, an in-memory budget): its request costs no
    timer; an operation that waits still gets one (and times out:
    tests/test_http_hardening.py)."""
    from tests.harness import gql, http, running

    async with running(store_server.url) as (app, services), http(app) as client:
        await gql(client, "{ ping }")  # parsed and validated: the lean path from now on
        made = _timers(monkeypatch)
        response = await gql(client, "{ ping }")
        assert response.status_code == 200 and response.json()["data"] == {"ping": "pong"}
        assert made == []

        async def waits(*args: object) -> tuple[list[object], bool]:
            await asyncio.sleep(0)
            return [], False

        monkeypatch.setattr(services.market, "candle_page", waits)
        candles = '{ candles(symbol: "BTC", interval: ONE_MINUTE) { pageInfo { hasNextPage } } }'
        response = await gql(client, candles)
        assert response.status_code == 200 and "errors" not in response.json()
        assert len(made) == 1


async def _past_the_deadline(run: Any) -> tuple[BaseException, dict[str, Any]]:
    """What `run(work, deadline)` raises, and what the work saw, when the deadline
    fires while the work waits and the work handles the cancellation, then fails."""
    seen: dict[str, Any] = {}

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as cancelled:
            seen["handling"] = type(cancelled).__name__
        seen["after handling"] = sys.exception()
        raise ValueError("after the deadline")

    loop = asyncio.get_running_loop()
    with pytest.raises(BaseException) as raised:
        await run(work(), loop.time() + 0.001)
    return raised.value, seen


async def test_the_work_sees_the_deadline_cancellation_as_with_timeout_at():
    """The cancellation is thrown into the work from outside any except block: once
    the work has handled it, nothing is being handled (sys.exception() is None) and
    what it raises next does not chain onto it ("During handling of the above
    exception...")."""

    async def timeout_at(work: Any, when: float) -> Any:
        async with asyncio.timeout_at(when):
            return await work

    expected, expected_seen = await _past_the_deadline(timeout_at)
    error, seen = await _past_the_deadline(within)
    assert expected_seen == {"handling": "CancelledError", "after handling": None}
    assert seen == expected_seen
    assert type(expected) is type(error) is ValueError
    assert expected.__context__ is None and expected.__cause__ is None
    assert error.__context__ is None and error.__cause__ is None
    assert "During handling" not in "".join(traceback.format_exception(error))
