"""The bounded Services.close as a stopping instance lives it: a normal close is
quiet, a close cut short (its budget spent, or its caller cancelling it) leaves no
fill, copier or connection running under a closed store, and no step starves the
money steps of their share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal

import pytest

from cryptovault.documents.enums import OrderStatus, OrderType, Side
from cryptovault.market.assets import ASSETS
from cryptovault.market.ticks import quote
from cryptovault.security.origin import SYSTEM
from cryptovault.security.viewer import Viewer
from cryptovault.services import start_services
from cryptovault.trading.rules import OrderRequest
from tests.conftest import REDIS_URL, make_settings


def _tick(services, price: str, symbol: str = "BTC"):
    t = quote(ASSETS[symbol], Decimal(price), Decimal(1), "test")
    services.market.apply(t)
    return t


async def _leading(services) -> None:
    """Until this instance holds the feed lease (the sweeps and copies run there)."""
    async with asyncio.timeout(30):  # a bound for a lease never taken, not a pace
        while not services.market.is_leader:
            await asyncio.sleep(0.05)


async def _buy(services, user_id: str, times: int, **order) -> list[OrderStatus]:
    """`times` BTC buys by one user; what each placement answered."""
    user = Viewer(user_id=user_id)
    placed = [
        await services.trading.place(
            user, OrderRequest(symbol="BTC", side=Side.BUY, **order), SYSTEM
        )
        for _ in range(times)
    ]
    return [p.status for p in placed]


def _warnings(caplog) -> list[tuple]:
    return [
        (r.name, r.levelname, r.getMessage(), getattr(r, "step", None))
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ]


@pytest.mark.redis
@pytest.mark.parametrize("budget", [2.0, 10.0])
async def test_a_normal_close_with_fills_logs_no_warning(store_server, caplog, budget):
    settings = make_settings(store_server.url, redis_url=REDIS_URL, shutdown_timeout_seconds=budget)
    services = await start_services(settings, feed=None)
    await _leading(services)
    _tick(services, "100.00")
    statuses = await _buy(
        services,
        "u-review",
        5,
        type=OrderType.LIMIT,
        quantity=Decimal("0.1"),
        limit_price=Decimal("99.00"),
    )
    assert statuses == [OrderStatus.OPEN] * 5  # resting, to fill on the next tick
    _tick(services, "98.00")  # the fills start: the close finds them under way
    await asyncio.sleep(0)
    with caplog.at_level(logging.DEBUG):
        await services.close()
    assert _warnings(caplog) == []


async def _started(store_server, **overrides):
    settings = make_settings(store_server.url, redis_url=REDIS_URL, **overrides)
    return await start_services(settings, feed=None)


@pytest.mark.redis
async def test_close_twice_is_quiet(store_server, caplog):
    services = await _started(store_server, shutdown_timeout_seconds=2.0)
    with caplog.at_level(logging.DEBUG):
        await services.close()
        await services.close()
    assert _warnings(caplog) == []


@pytest.mark.redis
async def test_close_cancelled_by_its_caller_still_closes_the_connections(store_server):
    """A close cancelled by its caller (a supervisor's own timeout) still closes the
    bus, Redis and the store; the cancellation is passed on."""
    from pymongo.errors import InvalidOperation

    services = await _started(store_server, shutdown_timeout_seconds=5.0)
    entered = asyncio.Event()
    real = services.alerts.close

    async def slow_alerts(timeout: float = 5.0) -> None:
        entered.set()
        await asyncio.sleep(3)
        await real(timeout)

    services.alerts.close = slow_alerts  # type: ignore[method-assign]
    closing = asyncio.ensure_future(services.close())
    await entered.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.sleep(0.1)
    with pytest.raises(InvalidOperation):
        await services.store.db["orders"].find_one({})


@pytest.mark.redis
async def test_a_slow_reset_mail_does_not_starve_fills_in_progress(store_server, caplog):
    """identity.drain (reset mails on a slow SMTP server) runs first and may take the
    whole budget (capped at 10 s, the default budget): trading then gets the 0.5 s
    floor, and a fill in progress that needs 1 s is cut (left for the sweep)."""
    services = await _started(store_server, shutdown_timeout_seconds=4.0)
    hung_mail = asyncio.ensure_future(asyncio.sleep(60))
    services.identity._background.add(hung_mail)
    fill_done = []

    async def fill_in_progress() -> None:
        while not services.trading._closing.is_set():  # a fill the stop finds under way
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        fill_done.append(True)

    fill = asyncio.ensure_future(fill_in_progress())
    services.trading._workers.add(fill)
    try:
        with caplog.at_level(logging.INFO, logger="cryptovault.services"):
            await services.close()
        assert fill_done, "the fill in progress was cut: the mail drain took the budget"
    finally:
        hung_mail.cancel()
        fill.cancel()


async def test_normal_close_with_the_embedded_store_is_quiet(tmp_path, caplog):
    settings = make_settings(None, data_dir=tmp_path, shutdown_timeout_seconds=2.0)
    services = await start_services(settings, feed=None)
    await _leading(services)
    _tick(services, "100.00")
    statuses = await _buy(
        services, "u-embedded", 3, type=OrderType.MARKET, quantity=Decimal("0.01")
    )
    assert statuses == [OrderStatus.FILLED] * 3
    with caplog.at_level(logging.DEBUG):
        await services.close()
    steps = next(r for r in caplog.records if r.message == "services closed").steps_ms  # type: ignore[attr-defined]
    assert {"trading", "market", "store"} <= set(steps)
    assert _warnings(caplog) == []


@pytest.mark.redis
async def test_the_sweep_still_repeats_until_the_close(store_server):
    """The sweeper waits on the close's event between sweeps now: it still sweeps
    again and again while the instance runs, and stops with the close."""
    services = await _started(store_server)
    calls = []
    real = services.trading.recover

    async def counting():
        calls.append(asyncio.get_running_loop().time())
        return await real()

    services.trading.recover = counting  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(30):  # a bound for a sweeper that stopped, not a pace
            while len(calls) < 3:
                await asyncio.sleep(0.05)
    finally:
        await services.close()
    swept = len(calls)
    await asyncio.sleep(1.5)
    assert services.market.is_leader is False
    assert len(calls) == swept, "the sweeper went on after the close"


@pytest.mark.redis
async def test_a_cut_trading_step_leaves_no_order_audit_copier_writing_after_the_store_closed(
    store_server, caplog
):
    """The trading step is cut while OrderAudit.close waits on its copier through
    asyncio.shield: the cancellation reaches the close, not the copier, which keeps
    running (left behind) and writes after the store was closed (ERROR "copying the
    orders' audit entries failed")."""
    services = await _started(store_server, shutdown_timeout_seconds=2.0)
    await _leading(services)
    copier = services.trading.order_audit
    real_copy = copier.copy
    copying = asyncio.Event()

    async def slow_copy(*args, **kwargs):  # a slow store under the copier's round
        copying.set()
        await asyncio.sleep(3.0)
        return await real_copy(*args, **kwargs)

    copier.copy = slow_copy  # type: ignore[method-assign]
    copier.nudge()
    await asyncio.wait_for(copying.wait(), 10)
    # A fill that takes the trading step's whole wait (cancelled at its end).
    fill = asyncio.ensure_future(asyncio.sleep(60))
    services.trading._workers.add(fill)
    with caplog.at_level(logging.INFO):
        await services.close()
        left_behind = copier._task is not None and not copier._task.done()
        await asyncio.sleep(3.5)  # what a left-behind copier does meanwhile
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not left_behind, "the order-audit copier still runs after services.close()"
    assert errors == []


@pytest.mark.redis
async def test_a_cancelled_trading_close_cancels_the_fills_it_waited_for(store_server):
    """TradingEngine.close cut while it waits for fills in progress (asyncio.wait does
    not cancel what it waits for): the fills must not go on under a closing store."""
    services = await _started(store_server)
    fill = asyncio.ensure_future(asyncio.sleep(60))
    services.trading._workers.add(fill)
    try:
        closing = asyncio.ensure_future(services.trading.close(30))
        await asyncio.sleep(0.2)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.sleep(0)
        assert fill.done(), "the fill still runs after the trading close was cut"
    finally:
        fill.cancel()
        await services.close()


@pytest.mark.redis
async def test_a_start_that_fails_halfway_stops_what_it_started(store_server, monkeypatch):
    """start_services failing after parts of it run (here: a bad feed configuration)
    stops those parts before it closes the connections: no trading sweeper, order
    audit copier, portfolio, credential or candle-writer task, nor the bus reader,
    goes on against closed connections (Redis would reconnect under them)."""
    import cryptovault.services as services_module

    def broken_feed(settings):
        raise RuntimeError("bad feed configuration")

    monkeypatch.setattr(services_module, "build_feed", broken_feed)
    before = asyncio.all_tasks()
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    with pytest.raises(RuntimeError, match="bad feed configuration"):
        await start_services(settings, feed="auto")
    await asyncio.sleep(0.1)
    left = sorted(t.get_name() for t in asyncio.all_tasks() - before if not t.done())
    for task in asyncio.all_tasks() - before:
        task.cancel()
    assert left == []


async def test_the_lifespan_shutdown_goes_on_past_subscription_groups_that_do_not_stop(
    tmp_path, caplog
):
    """The app's own lifespan (real services, embedded store): subscription groups
    whose close never ends (a group task swallowing its cancellation) are cancelled
    and logged after SHUTDOWN_TIMEOUT_SECONDS; the services still close and the
    lifespan reports its shutdown complete."""
    from cryptovault.app import create_app

    settings = make_settings(None, data_dir=tmp_path, shutdown_timeout_seconds=1.0)
    app = create_app(settings)
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.ensure_future(app(scope, inbox.get, send))
    released = asyncio.Event()

    async def never_ends() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # only `released` ends it
                await released.wait()

    try:
        await inbox.put({"type": "lifespan.startup"})
        async with asyncio.timeout(60):  # a bound for a hung start, not a measurement
            while "lifespan.startup.complete" not in sent:
                assert "lifespan.startup.failed" not in sent
                await asyncio.sleep(0.05)
        groups = app.state.subscription_groups
        assert groups is not None
        groups.close = never_ends
        with caplog.at_level(logging.INFO):
            await inbox.put({"type": "lifespan.shutdown"})
            done, _ = await asyncio.wait({running}, timeout=30)
        assert done, "the lifespan's shutdown still waits on the subscription groups"
        assert "lifespan.shutdown.complete" in sent
        overran = [r for r in caplog.records if r.message.startswith("shutdown step did not")]
        assert [r.step for r in overran] == ["subscriptions"]  # type: ignore[attr-defined]
        assert any(r.message == "services closed" for r in caplog.records)
    finally:
        released.set()
        if not running.done():
            running.cancel()
        with contextlib.suppress(BaseException):
            await running
