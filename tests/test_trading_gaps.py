# ruff: noqa: F811  (pytest injects the imported `world` fixture by parameter name)
"""Behaviours no other test pinned down: a mutation review of the money path broke
the engine one way at a time and these are the breaks the suite let through (each
docstring names the mutant it kills)."""

from __future__ import annotations

from decimal import Decimal

from cryptovault.documents.enums import OrderType, TimeInForce
from cryptovault.security.origin import SYSTEM
from tests.test_trading_faults import (
    LEASE,
    buy,
    clean,
    funded,
    set_price,
    sweep,
    until,
    world,  # noqa: F401
)
from tests.trading_faults import World


async def test_a_cancel_asked_while_a_resting_order_is_being_placed_cancels_it(world: World):
    """Kills "let_go without close_request=None": the placement must carry out a close
    asked while it owned the order, not let it rest with the request forgotten."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "orders.find_one_and_update")  # held; its let-go is next
    (pending,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    canceling = await world.act("cancel", lambda e: e.cancel(user, pending["_id"], SYSTEM))
    answer = await world.scheduler.finish(canceling)
    assert answer.close_request is not None  # asked of the owner
    done = await world.scheduler.finish(placing)
    assert done.status == "CANCELED" and done.hold_remaining == 0
    await clean(world)


async def test_the_matcher_never_takes_an_order_a_cancel_owns(world: World):
    """Kills "the matcher ignores owner": between a cancel's take and its close, a
    crossing tick must not fill the order (the fence alone does not stop it: the
    matcher reads the order after the cancel took it)."""
    user = await funded(world)
    placed = await world.scheduler.finish(
        await world.act(
            "place",
            lambda e: e.place(
                user, buy("1", OrderType.LIMIT, limit_price=Decimal("90.00")), SYSTEM
            ),
        )
    )
    canceling = await world.act("cancel", lambda e: e.cancel(user, placed.id, SYSTEM))
    await until(world, canceling, "orders.find_one_and_update", times=2)  # taken; close next
    crossing = set_price(world, "89.00")
    await world.scheduler.finish(await world.act("match", lambda e: e.match_tick(crossing)))
    answer = await world.scheduler.finish(canceling)
    assert not isinstance(answer, BaseException), repr(answer)
    assert answer.status == "CANCELED"
    assert await world.db["trades"].count_documents({"order_id": placed.id}) == 0
    await clean(world)


async def test_what_a_plan_does_not_use_goes_back_to_the_ticks_book(world: World):
    """Kills "no give-back in _plan_on_tick": a FOK that cannot fill takes the whole
    book (3 BTC) to decide, then must return it for the next order on the same tick."""
    tick = set_price(world, "100.00")
    first, second = await funded(world), await funded(world)
    fok = buy("5", OrderType.LIMIT, limit_price=Decimal("101.00"), time_in_force=TimeInForce.FOK)
    killed = await world.scheduler.finish(
        await world.act("fok", lambda e: e.place(first, fok, SYSTEM))
    )
    assert killed.status == "CANCELED" and killed.filled_quantity == 0
    assert await world.liquidity.left(tick) == Decimal(3)
    bought = await world.scheduler.finish(
        await world.act("buy", lambda e: e.place(second, buy("2.5"), SYSTEM))
    )
    assert bought.status == "FILLED"
    await clean(world)


async def test_the_sweep_leaves_live_work_alone_until_its_lease_runs_out(world: World):
    """Kills "take_over ignores the lease" together with the sweep's query: owned work
    within its lease is its owner's, at any point of a fill."""
    user = await funded(world)
    placed = await world.scheduler.finish(
        await world.act(
            "place",
            lambda e: e.place(
                user, buy("1", OrderType.LIMIT, limit_price=Decimal("99.00")), SYSTEM
            ),
        )
    )
    crossing = set_price(world, "98.00")
    matcher = await world.act("match", lambda e: e.match_tick(crossing))
    await until(world, matcher, "ledger.insert_many")  # the fill recorded, entries next
    world.clock.advance(LEASE - 1)
    assert await sweep(world) == {"orders": 0, "adjustments": 0, "failed": 0}
    owned = await world.db["orders"].find_one({"_id": placed.id})
    assert owned["owner"].startswith("match:")
    await world.scheduler.finish(matcher)
    await clean(world)


async def test_a_matcher_that_read_an_order_before_it_was_canceled_does_not_fill_it(
    world: World,
):
    """Kills "take() without the fence condition": the matcher's cursor read the order
    OPEN; a cancel then took, closed and let it go (owner None again). The matcher's
    take must fail on the fence, or it fills a CANCELED order whose hold was released."""
    user = await funded(world)
    placed = await world.scheduler.finish(
        await world.act(
            "place",
            lambda e: e.place(
                user, buy("1", OrderType.LIMIT, limit_price=Decimal("90.00")), SYSTEM
            ),
        )
    )
    crossing = set_price(world, "89.00")
    matcher = await world.act("match", lambda e: e.match_tick(crossing))
    await until(world, matcher, "orders.find_one_and_update")  # read it OPEN; take next
    canceled = await world.scheduler.finish(
        await world.act("cancel", lambda e: e.cancel(user, placed.id, SYSTEM))
    )
    assert canceled.status == "CANCELED"
    await world.scheduler.finish(matcher)
    stored = await world.db["orders"].find_one({"_id": placed.id})
    assert stored["status"] == "CANCELED"
    assert await world.db["trades"].count_documents({"order_id": placed.id}) == 0
    await clean(world)


async def test_a_sweep_that_dies_after_voiding_a_hold_is_finished_as_a_rejection(world: World):
    """Kills "outcome() reads a void as ALREADY": the next sweep must find the hold
    voided and reject the order, not let it rest reserving funds nobody holds."""
    user = await funded(world)
    request = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))
    placing = await world.act("place", lambda e: e.place(user, request, SYSTEM))
    await until(world, placing, "ledger.insert_one")  # about to write its hold
    await world.scheduler.crash(placing)
    world.clock.advance(LEASE + 1)
    first = await world.act("sweep", lambda e: e.recover())
    await until(world, first, "ledger.insert_one")  # the void
    await world.scheduler.step(first)  # void written; dies before the reject
    await world.scheduler.crash(first)
    world.clock.advance(LEASE + 1)
    await sweep(world)
    (order,) = await world.db["orders"].find({"user_id": user.user_id}).to_list()
    assert order["status"] == "REJECTED"
    await clean(world)


async def test_reconcile_counts_a_fill_whose_entries_are_written_before_its_order(
    world: World,
):
    """Kills "reconcile ignores in-flight work": between a fill's ledger entries and
    the order's update, the hold moved but the order still says it reserves it all."""
    from cryptovault.trading.reconcile import reconcile

    user = await funded(world)
    placed = await world.scheduler.finish(
        await world.act(
            "place",
            lambda e: e.place(
                user, buy("1", OrderType.LIMIT, limit_price=Decimal("99.00")), SYSTEM
            ),
        )
    )
    crossing = set_price(world, "98.00")
    matcher = await world.act("match", lambda e: e.match_tick(crossing))
    await until(world, matcher, "trades.insert_one")  # both legs applied, order not yet
    report = await reconcile(world.db, now=world.clock())
    assert report.ok, report.discrepancies
    await world.scheduler.finish(matcher)
    assert (await world.db["orders"].find_one({"_id": placed.id}))["status"] == "FILLED"
    await clean(world)
