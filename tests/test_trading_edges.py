# ruff: noqa: F811  (pytest injects the imported `world` fixture by parameter name)
"""The edges an adversarial review of the money path found (each test failed on the
first version of the fenced engine): a freeze racing a placement, FOK sizing, the
migration of legacy data, a placement that stalls or loses its order, expiry between
sweeps, reconciliation while a sweep works. Docstrings describe the defect as found."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from pymongo import AsyncMongoClient

from cryptovault.documents.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from cryptovault.errors import Forbidden
from cryptovault.market.assets import ASSETS
from cryptovault.security.origin import SYSTEM
from cryptovault.trading.ledger import Ledger
from cryptovault.trading.reconcile import reconcile
from cryptovault.trading.rules import ZERO, Fees, OrderState, plan_fill
from tests.test_trading_faults import (  # noqa: F401  (the `world` fixture)
    ADMIN,
    LEASE,
    buy,
    clean,
    funded,
    set_price,
    until,
    world,
)
from tests.trading_faults import LIVE, World, check, create_indexes

migration = importlib.import_module("cryptovault.migrations.0002_fenced_orders_numbered_ledger")


# -- R1. freeze / account deletion vs a placement in flight ------------------------------


async def test_a_placement_in_flight_across_a_freeze_leaves_no_live_order(world: World):
    """Freezing (admin) and deleting an account called `cancel_all` once, which cancels
    the orders it finds. A placement whose permission check passed before the freeze
    but whose order was inserted after cancel_all's scan was never canceled: the frozen
    account kept a live order and the matcher filled it. Now the freeze sets the flag
    before canceling, and placement reads the flag after writing its order: one of the
    two always sees the other."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "orders.insert_one")  # permission checked, order not written

    async def freeze(engine) -> int:  # as the admin service: the flag, then the orders
        await engine.users.update_one(
            {"_id": user.user_id}, {"$set": {"frozen": True}}, upsert=True
        )
        return await engine.cancel_all(user.user_id, ADMIN, SYSTEM)

    assert await world.scheduler.finish(await world.act("freeze", freeze)) == 0  # none yet
    assert isinstance(await world.scheduler.finish(placing), Forbidden)
    crossing = set_price(world, "89.00")
    await world.scheduler.finish(await world.act("match", lambda e: e.match_tick(crossing)))
    (stored,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    trades = await world.db["trades"].count_documents({"order_id": stored["_id"]})
    assert (stored["status"], trades) == ("REJECTED", 0)
    await clean(world)


# -- R2. FOK: all or nothing ------------------------------------------------------------


def test_a_fok_short_of_the_book_by_less_than_min_size_is_not_filled_in_part():
    """plan_fill's docstring: "a FOK fills whole or not at all". The dust rule runs
    before the FOK rule: a FOK for 100 DOGE with 99.9 on offer fills 99.9 and closes
    FILLED (the 0.1 left is below minSize). test_trading_rules accepts it
    (`fill.close is FILLED or quantity == 0`)."""
    fees = Fees(Decimal("0.002"), Decimal("0.001"), Decimal("0.01"))
    doge = ASSETS["DOGE"]
    order = OrderState(Side.SELL, OrderType.LIMIT, Decimal(100), ZERO, ZERO, ZERO, Decimal(100))
    fill = plan_fill(
        order,
        doge,
        Decimal("0.15"),
        Decimal("99.9"),
        Liquidity.TAKER,
        fees,
        immediate=TimeInForce.FOK,
    )
    assert fill is not None
    assert fill.quantity in (ZERO, Decimal(100)), (fill.quantity, fill.close)


async def test_a_fok_order_fills_whole_or_not_at_all(world: World):
    """The same through the engine: the tick's book is 3 BTC (300 USD at 100); a FOK
    buy of 3.000005 BTC fills 3 and is answered FILLED."""
    user = await funded(world)
    request = buy(
        "3.000005", OrderType.LIMIT, limit_price=Decimal("101.00"), time_in_force=TimeInForce.FOK
    )
    answer = await world.scheduler.finish(
        await world.act("place", lambda e: e.place(user, request, SYSTEM))
    )
    assert answer.filled_quantity in (0, answer.quantity), (
        answer.status,
        answer.filled_quantity,
        answer.quantity,
    )


# -- R3. reconcile false positive while the sweep rejects a cut placement ----------------


async def test_reconcile_finds_nothing_wrong_while_a_sweep_rejects_a_voided_placement(world: World):
    """reconcile counts a PENDING order's hold_remaining as reserved as soon as an
    entry `hold:<id>` exists, but that entry may be the sweep's VOID: between the void
    and the reject (or for a whole lease if the sweep dies there) reconcile reports
    "held 0 != open orders' reservations 90.18" for money that was never held."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "ledger.insert_one")  # about to write its hold
    await world.scheduler.crash(placing)
    world.clock.advance(LEASE + 1)
    sweeping = await world.act("sweep", lambda e: e.recover())
    await until(world, sweeping, "ledger.insert_one")  # the void
    await world.scheduler.step(sweeping)  # void written; the reject is next
    await check(world.db)  # the oracle agrees nothing is wrong
    report = await reconcile(world.db, now=world.clock())
    assert report.ok, report.discrepancies


# -- R4. the migration on legacy data ----------------------------------------------------


@pytest.fixture
async def legacy_db(store_server) -> AsyncIterator[Any]:
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    db = client[f"legacy_{uuid.uuid4().hex[:10]}"]
    await create_indexes(db)
    try:
        yield db
    finally:
        await client.drop_database(db.name)
        await client.close()


NOW = datetime(2026, 12, 1, tzinfo=UTC)


def legacy_order(oid: str, status: str, hold: str, tif: str = "GTC", **kw: Any) -> dict:
    return {
        "_id": oid,
        "user_id": "u",
        "client_order_id": None,
        "idempotency_key": f"order:{oid}",
        "symbol": "BTC",
        "side": "BUY",
        "type": "LIMIT",
        "time_in_force": tif,
        "quantity": Decimal128("1"),
        "quote_quantity": None,
        "limit_price": Decimal128("100"),
        "stop_price": None,
        "expires_at": None,
        "status": status,
        "triggered": False,
        "filled_quantity": Decimal128("0"),
        "spent_quote": Decimal128("0"),
        "fees": Decimal128("0"),
        "hold_asset": "USD",
        "hold_remaining": Decimal128(hold),
        "fills": 0,
        "pending_fill": None,
        "release_due": NOW if status in ("CANCELED", "EXPIRED", "FILLED") else None,
        "history": [],
        "created_at": NOW,
        "updated_at": NOW,
        **kw,
    }


def legacy_balance(available: str, held: str, applied: list[str]) -> dict:
    return {
        "_id": "u:USD",
        "account": "u",
        "asset": "USD",
        "available": Decimal128(available),
        "held": Decimal128(held),
        "applied": [{"id": i, "after": Decimal128("1000")} for i in applied],
    }


async def test_a_migration_rerun_after_a_cut_release_releases_every_hold_once(legacy_db):
    """`_release` treats every DuplicateKeyError as "written by an earlier run".
    A first run cut off between release A's entry (slot u:USD#1) and its balance
    update leaves the balance at no seq; the rerun numbers release B as #1 too, its
    insert collides on the *slot*, is taken for done, and B's hold_remaining is zeroed
    without any release: 100 USD held forever by no order."""
    db = legacy_db
    await db["balances"].insert_one(legacy_balance("800", "200", ["hold:A", "hold:B"]))
    await db["orders"].insert_many(
        [legacy_order("A", "CANCELED", "100"), legacy_order("B", "CANCELED", "100")]
    )
    # The first run got as far as A's release entry (then the process died).
    await db["ledger"].insert_one(
        {
            "_id": "release:A",
            "slot": "u:USD#1",
            "seq": 1,
            "txn_id": "release:A",
            "account": "u",
            "asset": "USD",
            "amount": Decimal128("0"),
            "available_delta": Decimal128("100"),
            "held_delta": Decimal128("-100"),
            "lines": [],
            "balance_after": None,
            "kind": "release",
            "order_id": "A",
            "trade_id": None,
            "created_at": NOW,
        }
    )
    await migration.up(db)
    snap = await Ledger(db["ledger"], db["balances"]).catch_up("u", "USD")
    assert (snap.available, snap.held) == (Decimal(1000), Decimal(0)), snap


@pytest.mark.parametrize("status", ["PENDING", "OPEN"])
async def test_the_migration_cancels_a_legacy_ioc_instead_of_leaving_it_resting(legacy_db, status):
    """Defect 8 (an interrupted IOC/FOK reopened as a resting order) survives the
    migration: a legacy PENDING IOC whose hold was applied is set OPEN, and a legacy
    OPEN IOC (the previous version's crash between PENDING->OPEN and the IOC close)
    is left OPEN. After migrating, both rest and the matcher fills them later, as
    MAKER."""
    db = legacy_db
    await db["balances"].insert_one(legacy_balance("900", "100", ["hold:A"]))
    await db["orders"].insert_one(legacy_order("A", status, "100", tif="IOC"))
    await migration.up(db)
    order = await db["orders"].find_one({"_id": "A"})
    assert order["status"] not in LIVE, f"an IOC is {order['status']} after migrating"


async def test_the_migration_never_releases_a_hold_twice_when_its_id_left_the_64_window(legacy_db):
    """The migration decides "released already?" by the legacy `applied` window (the
    last 64 ids), the very mechanism issue 11 replaced. A CANCELED order whose release
    was applied (but whose hold_remaining was not zeroed before the crash) and whose
    balance moved 64 times since is released a second time: held goes negative,
    available gains 100 USD from nowhere. No guard (held >= amount) stops it."""
    db = legacy_db
    others = [f"fill:x:{n}:0" for n in range(64)]
    await db["balances"].insert_one(legacy_balance("1000", "0", others))
    await db["orders"].insert_one(legacy_order("A", "CANCELED", "100"))
    await migration.up(db)
    balance = await db["balances"].find_one({"_id": "u:USD"})
    assert balance["held"].to_decimal() >= 0, (balance["available"], balance["held"])


# -- R5. timing: a placement fills at the price it read, however old ---------------------


async def test_a_slow_placement_fills_at_the_latest_price(world: World):
    """The placement reads the quote once, before its first store command, and fills
    against that tick's price and book whenever it gets there (up to its lease: 30 s
    by default). Here the market moved 100 -> 150 and 9 s passed; the order still
    buys at 100.01 against the old tick's untouched book."""
    user = await funded(world)
    placing = await world.act("place", lambda e: e.place(user, buy("1"), SYSTEM))
    now = set_price(world, "150.00")
    world.clock.advance(LEASE - 1)
    answer = await world.scheduler.finish(placing)
    (trade,) = await world.db["trades"].find({"order_id": answer.id}).to_list()
    assert trade["price"].to_decimal() >= now.ask, (trade["price"], now.ask)


# -- R6. liquidity given back on every path ----------------------------------------------


@pytest.mark.parametrize("cut_before", ["users.find_one", "ledger.insert_many"])
async def test_a_placement_taken_over_gives_back_the_book_it_took(world: World, cut_before: str):
    """`_plan_on_tick` takes the plan's quantity from the tick's shared book; when the
    placement then finds it lost its order (its hold voided by the sweep) nothing gave
    it back: that part of the tick's book was gone though nothing traded (with Redis,
    for every instance)."""
    tick = set_price(world, "100.00")
    user = await funded(world)
    placing = await world.act("place", lambda e: e.place(user, buy("0.5"), SYSTEM))
    await until(world, placing, cut_before)  # planned (and recorded), funds not held yet
    assert await world.liquidity.left(tick) == Decimal("2.5")
    world.clock.advance(LEASE + 1)
    await world.scheduler.finish(await world.act("sweep", lambda e: e.recover()))
    answer = await world.scheduler.finish(placing)
    assert answer.status == OrderStatus.REJECTED  # the sweep voided its hold: no fill
    assert await world.liquidity.left(tick) == Decimal(3)
    assert await world.db["trades"].count_documents({}) == 0
    await clean(world)


# -- R7. GTD: expiry depends on the sweep's cadence ---------------------------------------


async def test_a_gtd_order_past_its_expiry_is_expired_not_filled_by_the_next_tick(world: World):
    """Only expire_due (the leader's sweep loop, once a second after recover(), which
    itself can take long at 20,000 orders) closes a GTD order; the matcher never looks
    at expires_at. A tick that arrives after expiresAt and before the sweep gets there
    fills the expired order."""
    from datetime import timedelta

    user = await funded(world)
    request = buy(
        "1",
        OrderType.LIMIT,
        limit_price=Decimal("90.00"),
        time_in_force=TimeInForce.GTD,
        expires_at=world.clock() + timedelta(seconds=5),
    )
    placed = await world.scheduler.finish(
        await world.act("place", lambda e: e.place(user, request, SYSTEM))
    )
    assert placed.status == "OPEN"
    world.clock.advance(6)  # past expiresAt; the sweep has not run yet
    crossing = set_price(world, "89.00")
    await world.scheduler.finish(await world.act("match", lambda e: e.match_tick(crossing)))
    assert await world.db["trades"].count_documents({"order_id": placed.id}) == 0


# -- R8. the answer of a placement that lost its hold to the sweep -----------------------


async def test_a_placement_whose_hold_was_voided_answers_a_final_state(world: World):
    """`place` returns the stored order as soon as its hold comes back VOID; if the
    sweep voided it but has not rejected the order yet, the client is answered
    PENDING (owned by the sweep), a state no other answer ever shows. _settle (as
    `_placed_already` does) would answer REJECTED."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "ledger.insert_one")  # about to write its hold
    world.clock.advance(LEASE + 1)
    sweeping = await world.act("sweep", lambda e: e.recover())
    await until(world, sweeping, "ledger.insert_one")  # the void
    await world.scheduler.step(sweeping)  # void written; the reject is next
    answer = await world.scheduler.finish(placing)
    await world.scheduler.finish(sweeping)
    assert answer.status == "REJECTED", answer.status


# -- R9. found by the soak: a balance left behind its ledger after a takeover ------------


async def test_a_hold_whose_writer_died_before_the_balance_is_rolled_forward_by_the_sweep(
    world: World,
):
    """The placement dies between its hold entry and the balance update. The sweep's
    _finish_placement asks `ledger.outcome(hold)` (ALREADY) and lets the order rest,
    but never rolls the balance forward (void() and apply() do on ALREADY; the
    separate outcome() call does not). The cached balance, which the account query and
    the portfolio read, shows the held funds as available until some later change of
    that balance happens to catch it up: here, for ever. (The soak of
    test_trading_model found it: "bob:USD: cached at 1 of 2 entries after settling".)"""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "balances.update_one")  # hold entry written
    await world.scheduler.crash(placing)
    world.clock.advance(LEASE + 1)
    await world.scheduler.finish(await world.act("sweep", lambda e: e.recover()))
    (order,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    assert order["status"] == "OPEN"
    balance = await world.db["balances"].find_one({"_id": f"{user.user_id}:USD"})
    assert balance["held"].to_decimal() == order["hold_remaining"].to_decimal(), (
        balance["available"],
        balance["held"],
    )
