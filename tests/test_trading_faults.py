"""The money path under pauses, races and crashes, one schedule at a time: a request,
a tick or a sweep stopped (or killed) before any of its store commands, the others
going on, the clock moved past leases, the stopped one resumed. Each test names the
defect of issue 11 it guards against; the model test (test_trading_model.py) tries
random schedules of all of them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from cryptovault.documents.enums import OrderType, Side, TimeInForce
from cryptovault.errors import Conflict, InsufficientFunds
from cryptovault.events.bus import MemoryBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import ASSETS
from cryptovault.market.service import MarketService
from cryptovault.market.ticks import Tick, quote
from cryptovault.observability.metrics import Metrics
from cryptovault.security.audit import security_topic
from cryptovault.security.origin import SYSTEM, Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading.liquidity import MemoryLiquidity
from cryptovault.trading.reconcile import reconcile
from cryptovault.trading.rules import OrderRequest
from tests.conftest import make_settings
from tests.trading_faults import Actor, World, audit_entries, check, create_indexes

LEASE = 10.0
ADMIN = Viewer(user_id="admin-1", role="ADMIN")


@pytest.fixture
async def world(store_server) -> AsyncIterator[World]:
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    db = client[f"faults_{uuid.uuid4().hex[:10]}"]
    await create_indexes(db)
    settings = make_settings(
        store_server.url, order_lease_seconds=LEASE, starting_balance_usd=Decimal(1000)
    )
    world = World(db, settings, MarketService(MemoryBus(), Hub()), MemoryLiquidity(Decimal(300)))
    set_price(world, "100.00")
    try:
        yield world
    finally:
        await client.drop_database(db.name)
        await client.close()


def set_price(world: World, price: str, symbol: str = "BTC"):
    world.clock.advance(0.001)  # every tick its own time (and its own book)
    t = quote(ASSETS[symbol], Decimal(price), Decimal(1), "test", timestamp=world.clock())
    world.market.apply(t)
    return t


async def funded(world: World, btc: str | None = None) -> Viewer:
    user = Viewer(user_id=f"u-{uuid.uuid4().hex[:8]}")
    engine = world.engine()
    await engine.ensure_account(user.user_id)
    if btc:
        await engine.adjust_balance(
            ADMIN, user.user_id, "BTC", Decimal(btc), "seed", SYSTEM, "seed"
        )
    return user


def buy(quantity: str, kind: OrderType = OrderType.MARKET, **kw) -> OrderRequest:
    return OrderRequest(symbol="BTC", side=Side.BUY, type=kind, quantity=Decimal(quantity), **kw)


async def sweep(world: World) -> dict[str, int]:
    actor = await world.act("sweep", lambda e: e.recover())
    return await world.scheduler.finish(actor)


async def until(world: World, actor: Actor, command: str, times: int = 1) -> None:
    """Step the actor until `times` commands named `command` are next in line."""
    seen = 0
    while True:
        assert actor.waiting, f"{actor.name} finished before {command}"
        if actor.next == command:
            seen += 1
            if seen == times:
                return
        await world.scheduler.step(actor)


async def order(world: World, order_id: str) -> dict:
    return await world.db["orders"].find_one({"_id": order_id})


async def copy_audit(world: World) -> int:
    """The audit copier, run to the end (by a process of its own)."""
    actor = await world.act("copy", lambda e: e.order_audit.drain())
    return await world.scheduler.finish(actor)


async def clean(world: World) -> None:
    await copy_audit(world)
    await check(world.db, settled=True)
    report = await reconcile(world.db, now=world.clock())
    assert report.ok, report.discrepancies


# -- 1. the sweep never races live work ------------------------------------------------


async def placement_commands(world: World, request: OrderRequest) -> int:
    """How many store commands an undisturbed placement sends."""
    user = await funded(world, btc="1")
    actor = await world.act("probe", lambda e: e.place(user, request, SYSTEM))
    await world.scheduler.finish(actor)
    return actor.sent


@pytest.mark.parametrize(
    "request_",
    [
        buy("1", OrderType.LIMIT, limit_price=Decimal("90.00")),  # rests
        buy("2"),  # fills over the book (300 USD per tick: part now)
        buy("0.5", time_in_force=TimeInForce.IOC),
        OrderRequest(
            symbol="BTC",
            side=Side.SELL,
            type=OrderType.LIMIT,
            quantity=Decimal("0.5"),
            limit_price=Decimal("99.00"),
        ),
    ],
    ids=["resting-limit", "market-partial", "ioc", "marketable-sell"],
)
async def test_a_placement_stalled_at_any_point_past_its_lease_answers_the_truth(
    world: World, request_: OrderRequest
):
    """Defect 1: a slow request found its order REJECTED by the sweep and failed with
    INTERNAL_SERVER_ERROR while its hold stayed applied. Now, stalled before any of its
    commands for longer than its lease, the sweep finishes or rejects the placement and
    the request, when it wakes up, changes nothing and answers the order's true state."""
    total = await placement_commands(world, request_)
    assert total >= 5
    for point in range(1, total):
        set_price(world, "100.00")  # a fresh tick: a fresh book, as the probe had
        user = await funded(world, btc="1")
        placing = await world.act("place", lambda e, u=user: e.place(u, request_, SYSTEM))
        for _ in range(point):
            if placing.waiting:
                await world.scheduler.step(placing)
        world.clock.advance(LEASE + 1)
        await sweep(world)
        await check(world.db)
        answer = await world.scheduler.finish(placing)
        assert not isinstance(answer, BaseException) or isinstance(answer, InsufficientFunds), (
            point,
            repr(answer),
        )
        if not isinstance(answer, BaseException):
            stored = await order(world, answer.id)
            assert stored["status"] == answer.status, (point, answer.status, stored["status"])
        await clean(world)


async def test_a_placement_slower_than_usual_but_within_its_lease_is_left_alone(world: World):
    user = await funded(world)
    placing = await world.act("place", lambda e: e.place(user, buy("0.5"), SYSTEM))
    await until(world, placing, "ledger.insert_many")  # about to reserve the funds and fill
    world.clock.advance(LEASE - 1)  # slow, not dead
    assert await sweep(world) == {"orders": 0, "adjustments": 0, "failed": 0}
    answer = await world.scheduler.finish(placing)
    assert answer.status == "FILLED"
    await clean(world)


# -- 2. a change is applied once, however late it is retried ---------------------------


async def test_a_fill_resumed_after_the_sweep_finished_it_and_70_more_changes_is_not_applied_again(
    world: World,
):
    """Defect 2: a balance remembered its last 64 changes; a fill leg resumed after
    more than 64 others was applied a second time."""
    user = await funded(world)
    resting = await world.scheduler.finish(
        await world.act(
            "place",
            lambda e: e.place(
                user, buy("1", OrderType.LIMIT, limit_price=Decimal("99.00")), SYSTEM
            ),
        )
    )
    assert resting.status == "OPEN"
    crossing = set_price(world, "98.00")
    matcher = await world.act("match", lambda e: e.match_tick(crossing))
    await until(world, matcher, "ledger.insert_many")  # the fill planned, its entries next
    world.clock.advance(LEASE + 1)
    await sweep(world)  # takes the fill over and completes it
    engine = world.engine()
    for n in range(70):  # the user's USD balance moves on, far beyond 64 changes
        await engine.adjust_balance(
            ADMIN, user.user_id, "USD", Decimal("0.01"), "tip", SYSTEM, f"k{n}"
        )
    before = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    await world.scheduler.finish(matcher)  # wakes up, completes "its" fill
    after = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert (after["available"], after["held"]) == (before["available"], before["held"])
    assert len(await world.db["trades"].find({"order_id": resting.id}).to_list()) == 1
    await clean(world)


# -- 3. sizing: never more than the hold; the sweep isolates a failing order ----------


async def test_a_quote_quantity_buy_never_costs_more_than_it_holds(world: World):
    """Defect 3: 1,000.00 USD at ask 91,265.79 cost 998.01 + 2.00 fee = 1,000.01."""
    world.liquidity = MemoryLiquidity(Decimal(250_000))
    world.clock.advance(0.001)
    ask = Decimal("91265.79")
    world.market.apply(Tick("BTC", ask - 1, ask - 2, ask, Decimal(1), world.clock()))
    user = await funded(world)
    request = OrderRequest(
        symbol="BTC", side=Side.BUY, type=OrderType.MARKET, quote_quantity=Decimal("1000.00")
    )
    done = await world.scheduler.finish(
        await world.act("place", lambda e: e.place(user, request, SYSTEM))
    )
    assert done.status == "FILLED" and done.hold_remaining == 0
    spent = done.spent_quote.quantize(Decimal("0.01"), rounding="ROUND_CEILING") + done.fees
    assert spent <= Decimal("1000.00")
    balance = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert balance["available"].to_decimal() == Decimal(1000) - spent
    await clean(world)


async def test_one_order_the_sweep_cannot_settle_does_not_stop_it_for_anyone_else(world: World):
    """Defect 3 (second half): one bad order made the sweep raise every second, so a
    GTD order due later was never expired. Now the bad one is logged, counted, retried
    with back-off, and the sweep goes on."""
    metrics = Metrics("test")
    user = await funded(world)
    engine = world.engine()
    engine.metrics = metrics
    placed = []
    for limit in ("90.00", "91.00"):
        placed.append(
            await engine.place(user, buy("1", OrderType.LIMIT, limit_price=Decimal(limit)), SYSTEM)
        )
    # An order whose owner died with work no store can complete (a fill needing more
    # than the order holds): the sweep fails on it every time.
    broken = {
        "n": 0,
        "quantity": Decimal128("1"),
        "price": Decimal128("90"),
        "cash": Decimal128("90"),
        "fee": Decimal128("5000"),
        "fee_basis": Decimal128("0"),
        "liquidity": "MAKER",
        "held_used": Decimal128("5090"),
        "release": Decimal128("0"),
        "close": None,
        "reason": None,
        "at": world.clock(),
    }
    await world.db["orders"].update_one(
        {"_id": placed[0].id},
        {"$set": {"owner": "dead", "lease_until": world.clock(), "work": broken}},
    )
    expiring = await engine.place(
        user,
        buy(
            "1",
            OrderType.LIMIT,
            limit_price=Decimal("80.00"),
            time_in_force=TimeInForce.GTD,
            expires_at=world.clock() + timedelta(seconds=5),
        ),
        SYSTEM,
    )
    world.clock.advance(6)
    found = await engine.recover()
    assert found["failed"] == 1
    assert await engine.expire_due() == 1
    assert (await order(world, expiring.id))["status"] == "EXPIRED"
    failures = 'cryptovault_trading_sweep_failures_total{kind="order"} 1.0'
    assert failures in metrics.render().decode()
    await engine.recover()  # backing off: not tried again at once
    assert failures in metrics.render().decode()


# -- 5. no dust -------------------------------------------------------------------------


async def test_a_marketable_limit_buy_at_the_ask_fills_whole(world: World):
    """Defect 5: 0.00002 BTC at the ask filled 0.00001989 and stayed PARTIALLY_FILLED
    forever (its hold and the affordability check disagreed by a cent)."""
    world.liquidity = MemoryLiquidity(Decimal(250_000))
    world.clock.advance(0.001)
    ask = Decimal("91265.79")
    world.market.apply(Tick("BTC", ask - 1, ask - 2, ask, Decimal(1), world.clock()))
    user = await funded(world)
    request = buy("0.00002", OrderType.LIMIT, limit_price=ask)
    done = await world.scheduler.finish(
        await world.act("place", lambda e: e.place(user, request, SYSTEM))
    )
    assert (done.status, done.filled_quantity, done.hold_remaining) == (
        "FILLED",
        Decimal("0.00002"),
        0,
    )
    await clean(world)


# -- 6. placement owns its order until it answers ---------------------------------------


@pytest.mark.parametrize("tif", [TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK])
async def test_a_tick_matched_while_an_order_is_being_placed_never_fills_it(
    world: World, tif: TimeInForce
):
    """Defect 6: the leader's matcher claimed a just-OPEN order before its placement
    did: an IOC filled twice 10 s apart, a FOK in 2 trades, market orders answered
    OPEN, and marketable limits paid the maker fee."""
    user = await funded(world)
    request = buy("0.5", OrderType.LIMIT, limit_price=Decimal("101.00"), time_in_force=tif)
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    # Funds held and its fill's entries written (planned before the order was), its
    # trade and its completion next.
    await until(world, placing, "trades.insert_one")
    crossing = set_price(world, "100.00")
    matcher = await world.act("match", lambda e: e.match_tick(crossing))
    await world.scheduler.finish(matcher)
    assert await world.db["trades"].count_documents({}) == 0  # not its order to fill
    done = await world.scheduler.finish(placing)
    assert done.status == "FILLED"
    trades = await world.db["trades"].find({"order_id": done.id}).to_list()
    assert [t["liquidity"] for t in trades] == ["TAKER"]
    # Later ticks find nothing left to fill.
    later = set_price(world, "99.00")
    await world.scheduler.finish(await world.act("match", lambda e: e.match_tick(later)))
    assert await world.db["trades"].count_documents({"order_id": done.id}) == 1
    await clean(world)


@pytest.mark.parametrize(
    ("limit", "cut_before", "decided"),
    [
        ("101.00", "balances.bulk_write", "FILLED"),  # its hold and fill entries written
        ("101.00", "trades.insert_one", "FILLED"),
        ("101.00", "orders.find_one_and_update", "FILLED"),
        ("90.00", "balances.update_one", "CANCELED"),  # not fillable: hold and release
        ("90.00", "orders.find_one_and_update", "CANCELED"),
    ],
)
async def test_an_ioc_cut_off_after_reserving_is_finished_as_decided_not_left_resting(
    world: World, limit: str, cut_before: str, decided: str
):
    """Defect 8: an interrupted IOC/FOK was reopened by the sweep as a resting order.
    Its fill (or cancel) is decided when it is placed and recorded in the order: the
    sweep carries that out, once."""
    user = await funded(world)
    request = buy("0.5", OrderType.LIMIT, limit_price=Decimal(limit), time_in_force=TimeInForce.IOC)
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, cut_before)
    await world.scheduler.crash(placing)
    world.clock.advance(LEASE + 1)
    await sweep(world)
    (cut,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    assert cut["status"] == decided
    trades = await world.db["trades"].count_documents({"order_id": cut["_id"]})
    assert trades == (1 if decided == "FILLED" else 0)
    await clean(world)


# -- 7. one book per tick, whichever instance fills -------------------------------------


async def test_two_instances_placing_on_one_tick_share_its_book(world: World):
    """Defect 7: two instances each sold the tick's whole top of book."""
    buyers = [await funded(world) for _ in range(2)]
    book = Decimal(3)  # 300 USD at 100.00
    placing = [
        await world.act(f"place{i}", lambda e, u=u: e.place(u, buy("2.5"), SYSTEM))
        for i, u in enumerate(buyers)
    ]
    for actor in placing:  # interleaved: both read the same tick before either fills
        await until(world, actor, "orders.find_one_and_update")
    answers = [await world.scheduler.finish(a) for a in placing]
    filled = sum((a.filled_quantity for a in answers), Decimal(0))
    assert filled == book  # 2.5 to one, the 0.5 left to the other: not 5
    assert sorted(a.status for a in answers) == ["FILLED", "PARTIALLY_FILLED"]
    await clean(world)


# -- 8. admin adjustments, ambiguous failures -------------------------------------------


async def test_an_adjustment_sent_twice_concurrently_is_applied_once(world: World):
    user = await funded(world)
    first, second = [
        await world.act(
            f"adjust{n}",
            lambda e: e.adjust_balance(
                ADMIN, user.user_id, "USD", Decimal("25.00"), "goodwill", SYSTEM, "ticket-7"
            ),
        )
        for n in range(2)
    ]
    while first.waiting or second.waiting:  # alternate their commands
        for actor in (first, second):
            if actor.waiting:
                await world.scheduler.step(actor)
    assert first.task.result() == second.task.result() == "USD"
    balance = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert balance["available"].to_decimal() == Decimal("1025.00")
    assert len(await audit_entries(world.db, "admin.balance_adjusted")) == 1
    with pytest.raises(Conflict):  # the same key for a different adjustment
        await world.engine().adjust_balance(
            ADMIN, user.user_id, "USD", Decimal("30.00"), "x", SYSTEM, "ticket-7"
        )
    await clean(world)


@pytest.mark.parametrize(
    "cut_before", ["ledger.insert_one", "balances.update_one", "adjustments.update_one"]
)
async def test_an_adjustment_cut_off_between_its_writes_is_finished_by_the_sweep(
    world: World, cut_before: str
):
    user = await funded(world)
    actor = await world.act(
        "adjust",
        lambda e: e.adjust_balance(
            ADMIN, user.user_id, "USD", Decimal("-40.00"), "fee refund reversal", SYSTEM, "k1"
        ),
    )
    await until(world, actor, cut_before)
    await world.scheduler.crash(actor)
    world.clock.advance(LEASE + 1)
    assert (await sweep(world))["adjustments"] == 1
    balance = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert balance["available"].to_decimal() == Decimal("960.00")
    assert len(await audit_entries(world.db, "admin.balance_adjusted")) == 1
    assert (await world.db["adjustments"].find_one({}))["state"] == "applied"
    await clean(world)


async def test_a_debit_adjustment_refused_for_funds_stays_refused(world: World):
    user = await funded(world)
    engine = world.engine()
    with pytest.raises(InsufficientFunds):
        await engine.adjust_balance(
            ADMIN, user.user_id, "USD", Decimal("-5000"), "x", SYSTEM, "big"
        )
    await engine.adjust_balance(
        ADMIN, user.user_id, "USD", Decimal("9000"), "top up", SYSTEM, "top"
    )
    with pytest.raises(InsufficientFunds):  # a retry is the same refused adjustment
        await engine.adjust_balance(
            ADMIN, user.user_id, "USD", Decimal("-5000"), "x", SYSTEM, "big"
        )
    balance = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert balance["available"].to_decimal() == Decimal("10000")
    await clean(world)


async def test_a_hold_that_fails_ambiguously_is_settled_by_the_sweep_not_orphaned(world: World):
    """Defect 8: a hold call that failed after the store applied it (a timeout) made
    placement delete its order, orphaning the hold."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "balances.update_one")  # the hold's entry is written
    await world.scheduler.step(placing)  # ... and applied; the answer is lost:
    gate, placing.gate = placing.gate, None
    placing.parked.clear()
    gate.set_exception(AutoReconnect("connection reset"))
    await world.scheduler._parked(placing)
    assert isinstance(placing.task.exception(), AutoReconnect)  # the request failed
    (cut,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    assert cut["status"] == "PENDING"  # not deleted: its hold may be applied
    world.clock.advance(LEASE + 1)
    await sweep(world)
    assert (await order(world, cut["_id"]))["status"] == "OPEN"  # its hold was applied
    await clean(world)


class LostMidBatch:
    """A ledger collection whose next batch insert reaches the store only in part (the
    first `written` entries, as an ordered insert applies them) and then fails: the
    connection is lost in the middle of the batch, and so is the process."""

    def __init__(self, inner: Any, written: int) -> None:
        self.inner, self.written = inner, written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def insert_many(self, documents: list[dict[str, Any]], **kwargs: Any) -> Any:
        await self.inner.scheduler.gate("ledger.insert_many")
        if self.written:
            await self.inner.inner.insert_many(documents[: self.written], **kwargs)
        raise AutoReconnect("connection reset in the middle of a batch")


@pytest.mark.parametrize(
    ("side", "written"),
    [(Side.BUY, 0), (Side.BUY, 1), (Side.BUY, 2), (Side.SELL, 1), (Side.SELL, 2)],
)
async def test_a_placement_whose_batch_reached_the_store_in_part_is_finished_by_the_sweep(
    world: World, side: Side, written: int
):
    """Its hold and fill entries are one ordered insert: a prefix of it may be written
    when the placement dies. With the hold written, the sweep carries out the fill
    recorded in the order (each entry once); without it, the order is rejected."""
    user = await funded(world, btc="1")
    engine = world.engine()
    engine.ledger.entries = LostMidBatch(engine.ledger.entries, written)  # type: ignore[assignment]
    request = OrderRequest(symbol="BTC", side=side, type=OrderType.MARKET, quantity=Decimal("0.5"))
    placing = await world.scheduler.start("place", engine.place(user, request, SYSTEM))
    await until(world, placing, "ledger.insert_many")
    await world.scheduler.step(placing)  # the batch, in part; the request fails
    assert isinstance(placing.task.exception(), AutoReconnect)
    await world.scheduler.crash(placing)
    world.clock.advance(LEASE + 1)
    await sweep(world)
    (cut,) = await world.db["orders"].find({"user_id": user.user_id, "side": side.value}).to_list()
    assert cut["status"] == ("REJECTED" if written == 0 else "FILLED")
    assert await world.db["trades"].count_documents({"order_id": cut["_id"]}) == (written > 0)
    await clean(world)


async def cancel_commands(world: World) -> int:
    """How many store commands an undisturbed cancel of a resting order sends."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    resting = await world.scheduler.finish(
        await world.act("p", lambda e: e.place(user, request, SYSTEM))
    )
    actor = await world.act("probe", lambda e: e.cancel(user, resting.id, SYSTEM))
    await world.scheduler.finish(actor)
    return actor.sent


@pytest.mark.parametrize(
    "request_",
    [
        buy("1", OrderType.LIMIT, limit_price=Decimal("90.00")),  # rests
        buy("0.5"),  # fills at once: the hold and both legs in one batch
        buy("2"),  # fills over the book: part now, the rest rests
        buy("0.5", OrderType.LIMIT, limit_price=Decimal("90.00"), time_in_force=TimeInForce.IOC),
        OrderRequest(symbol="BTC", side=Side.SELL, type=OrderType.MARKET, quantity=Decimal("0.5")),
    ],
    ids=["resting-limit", "market", "market-partial", "ioc-canceled", "market-sell"],
)
async def test_a_placement_killed_at_any_point_is_finished_or_rejected_by_the_sweep(
    world: World, request_: OrderRequest
):
    """The placement's process dies before each of its store commands in turn (the
    batched ones included): the sweep finishes what its recorded plan says or rejects
    it, every entry once, and the books are settled and reconciled."""
    total = await placement_commands(world, request_)
    for point in range(total):
        set_price(world, "100.00")
        user = await funded(world, btc="1")
        placing = await world.act("place", lambda e, u=user: e.place(u, request_, SYSTEM))
        for _ in range(point):
            await world.scheduler.step(placing)
        await world.scheduler.crash(placing)
        world.clock.advance(LEASE + 1)
        await sweep(world)
        # None when it died before writing its order (opening the account first).
        for cut in await world.db["orders"].find({"user_id": user.user_id}).to_list():
            settled = ("REJECTED", "OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELED")
            assert cut["status"] in settled and cut["owner"] is None, (point, cut["status"])
        await clean(world)


async def test_a_cancel_killed_at_any_point_is_carried_out_by_the_sweep(world: World):
    """The cancel records itself on the order in the write that takes it: killed before
    any later command, the sweep releases the hold and closes the order, once."""
    total = await cancel_commands(world)
    assert total >= 4
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    for point in range(1, total):
        user = await funded(world)
        placing = await world.act("p", lambda e, u=user: e.place(u, request, SYSTEM))
        resting = await world.scheduler.finish(placing)
        canceling = await world.act(
            "cancel", lambda e, u=user, o=resting.id: e.cancel(u, o, SYSTEM)
        )
        for _ in range(point):
            await world.scheduler.step(canceling)
        await world.scheduler.crash(canceling)
        world.clock.advance(LEASE + 1)
        await sweep(world)
        stored = await order(world, resting.id)
        assert stored["status"] == "CANCELED" and stored["owner"] is None, point
        assert await world.db["ledger"].count_documents({"_id": f"release:{resting.id}"}) == 1
        await clean(world)
        # Its entry rode on the write that took the order: logged once, by the user.
        (canceled,) = await entries_for(world, resting.id, "order.canceled")
        assert canceled["actor_id"] == user.user_id, point


async def test_reconcile_counts_a_cancel_cut_off_between_its_release_and_its_close(world: World):
    """A cancel records itself as the order's close request, not as work: what it
    releases follows from the order. Cut off after its release entry, reconcile still
    finds the held amount equal to what the order reserves (its release included)."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    resting = await world.scheduler.finish(
        await world.act("place", lambda e: e.place(user, request, SYSTEM))
    )
    canceling = await world.act("cancel", lambda e: e.cancel(user, resting.id, SYSTEM))
    await until(world, canceling, "orders.find_one_and_update", times=2)  # released; close next
    await world.scheduler.crash(canceling)
    assert await world.db["ledger"].count_documents({"_id": f"release:{resting.id}"}) == 1
    report = await reconcile(world.db, now=world.clock())
    assert report.ok, report.discrepancies
    world.clock.advance(LEASE + 1)
    await sweep(world)
    assert (await order(world, resting.id))["status"] == "CANCELED"
    await clean(world)


async def test_a_batch_refused_in_the_middle_applies_the_rest_one_by_one(world: World):
    """Another instance moved the buyer's BTC balance after this one's snapshot of it:
    the batch (hold, USD leg, BTC leg) is refused at the BTC leg's number, after the
    first two were written. Each entry is still written once, at the right number."""
    user = await funded(world, btc="1")
    here, there = world.engine(), world.engine()
    await world.scheduler.finish(  # `here` sees the BTC balance (a sale of 0.5)
        await world.scheduler.start(
            "sell",
            here.place(
                user,
                OrderRequest(
                    symbol="BTC", side=Side.SELL, type=OrderType.MARKET, quantity=Decimal("0.5")
                ),
                SYSTEM,
            ),
        )
    )
    await there.adjust_balance(ADMIN, user.user_id, "BTC", Decimal("0.25"), "gift", SYSTEM, "g")
    set_price(world, "100.00")
    buying = await world.scheduler.start("buy", here.place(user, buy("0.5"), SYSTEM))
    done = await world.scheduler.finish(buying)
    assert done.status == "FILLED"
    btc = await world.db["balances"].find_one({"_id": f"{user.user_id}:BTC"})
    assert btc["available"].to_decimal() == Decimal("1.25")
    assert btc["seq"] == await world.db["ledger"].count_documents(
        {"account": user.user_id, "asset": "BTC", "seq": {"$ne": None}}
    )
    await clean(world)


# -- 9. audit entries: written with the order, copied once ------------------------------


async def entries_for(world: World, order_id: str, action: str) -> list[dict[str, Any]]:
    return (
        await world.db["audit_log"]
        .find({"target": f"order:{order_id}", "action": action})
        .to_list()
    )


async def test_the_audit_copier_killed_at_any_point_stores_and_pushes_each_entry_once(
    world: World,
):
    """The copier dies before each of its commands in turn (the read, the batch insert,
    the clearing): the entries stay pending in their orders and the next copier stores
    what is missing. Each entry is in the log once and reaches the user's
    securityEvents once (a repeated push is dropped by its id)."""
    user = await funded(world)
    engine = world.engine()
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    origin = Origin(ip="10.9.8.7", user_agent="Trader/2", request_id="req-9")
    with world.audit.hub.subscribe(security_topic(user.user_id)) as pushed:
        first = await engine.place(user, request, origin)
        probe = await world.act("probe", lambda e: e.order_audit.copy())
        assert await world.scheduler.finish(probe) == 1
        total = probe.sent
        assert total == 3  # read, insert, clear
        orders = [first.id]
        for point in range(total):
            placed = await engine.place(user, request, origin)
            await engine.cancel(user, placed.id, origin)
            orders.append(placed.id)
            copier = await world.act("copy", lambda e: e.order_audit.copy())
            for _ in range(point):
                await world.scheduler.step(copier)
            await world.scheduler.crash(copier)
            # Nothing cleared: this order's entries, and those of the copies before.
            left = await world.db["orders"].count_documents({"audit_state": "pending"})
            assert left == point + 1
        assert await copy_audit(world) == total
        await clean(world)
        logged = await world.db["audit_log"].find({"user_id": user.user_id}).to_list()
        seen = [pushed.queue.get_nowait().id for _ in range(pushed.queue.qsize())]
    assert sorted((e["action"], e["target"]) for e in logged) == sorted(
        [("order.placed", f"order:{o}") for o in orders]
        + [("order.canceled", f"order:{o}") for o in orders[1:]]
    )
    assert sorted(seen) == sorted(e["_id"] for e in logged)  # each pushed once
    placed_entry = next(e for e in logged if e["target"] == f"order:{first.id}")
    assert (placed_entry["ip"], placed_entry["user_agent"], placed_entry["request_id"]) == (
        "10.9.8.7",
        "Trader/2",
        "req-9",
    )
    assert placed_entry["details"]["limitPrice"] == "90.00"


@pytest.mark.parametrize(
    ("request_", "ends"),
    [
        (buy("0.5"), "FILLED"),  # its placement fills it: the cancel canceled nothing
        (buy("1", OrderType.LIMIT, limit_price=Decimal("90.00")), "CANCELED"),
    ],
    ids=["filled-first", "canceled"],
)
async def test_a_cancel_asked_during_placement_is_logged_only_if_it_cancels(
    world: World, request_: OrderRequest, ends: str
):
    """A cancel of an order still being placed asks its owner (the entry rides on
    that write). The owner's close keeps the entry if the order is canceled and drops
    it if the order is filled instead: the log never says a filled order was canceled."""
    user = await funded(world)
    placing = await world.act("place", lambda e: e.place(user, request_, SYSTEM))
    await until(world, placing, "orders.find_one_and_update")  # its last write next
    (pending_order,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    canceling = await world.act("cancel", lambda e: e.cancel(user, pending_order["_id"], SYSTEM))
    answer = await world.scheduler.finish(canceling)
    assert answer.close_request is not None  # asked of its owner: cancelRequested
    done = await world.scheduler.finish(placing)
    assert done.status == ends
    await clean(world)
    canceled = await entries_for(world, done.id, "order.canceled")
    assert len(canceled) == (ends == "CANCELED")
    assert len(await entries_for(world, done.id, "order.placed")) == 1
