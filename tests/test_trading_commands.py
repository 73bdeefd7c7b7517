"""Store commands per order (issue 13): a market order that fills at once, a resting
limit order and its cancel, counted command by command with pymongo command monitoring.

Counted so that timing cannot change the figure: only commands sent from the test's
own task (and tasks it starts) count (CommandCounter.only_this_task), the portfolio's
trade points are written by one background writer that belongs to no request (and are
counted on their own below), and each account's balances are warm (this instance's
snapshot of them is current, as it is for an account trading), so the figures are the
steady state, command for command. Authentication is counted apart: through the API,
an order costs exactly what the engine sends: authentication is served from the
instance's cache (security.authcache), 0 store commands once a credential is known.

An order's audit entries ride on its own writes (the insert carries `order.placed`, the
cancel's take carries `order.canceled`) and the feed leader's copier stores them in
batches (trading/order_audit.py): counted on their own below, per round, not per order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.enums import OrderType, Side
from cryptovault.documents.portfolio import PortfolioSnapshotDocument
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading.rules import OrderRequest
from tests.conftest import bearer, sign_up, tick

# What one order costs, in order. Each line is needed for crash safety (README,
# "Store commands per order").
MARKET = [
    # The order, owned by its placement, its fill planned in it, its order.placed
    # audit entry carried (copied to the audit log once it is placed).
    ("insert", "orders"),
    ("find", "users"),  # frozen? (after the insert: a freeze in flight cannot miss it)
    ("insert", "ledger"),  # its hold and both legs of its fill (numbered entries)
    ("update", "balances"),  # both balances moved past them (one command)
    ("insert", "trades"),
    ("findAndModify", "orders"),  # FILLED, the rest of its hold released, let go
]
RESTING = [
    ("insert", "orders"),  # with order.placed
    ("find", "users"),
    ("insert", "ledger"),  # its hold
    ("update", "balances"),
    ("findAndModify", "orders"),  # OPEN, let go: only now can a tick fill it
]
CANCEL = [
    ("findAndModify", "orders"),  # taken, the cancel and order.canceled recorded in it
    ("insert", "ledger"),  # its hold released
    ("update", "balances"),
    ("findAndModify", "orders"),  # CANCELED, let go
]
# A round of the audit copier, however many orders it copies (up to its batch).
COPY_ROUND = [
    ("find", "orders"),  # orders with entries pending (an index), unowned
    ("insert", "audit_log"),  # every entry of the round
    ("update", "orders"),  # exactly those entries removed from each order
]
# The targets of issue 13 (authentication excluded).
MARKET_TARGET = 10
MUTATION_TARGET = 5

PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"
CANCEL_ORDER = "mutation($id: ID!) { cancelOrder(id: $id) { id status } }"


@pytest.fixture(autouse=True)
def quotes(services):
    services.market.apply(tick("BTC", "100.00"))


def market(side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest("BTC", side, OrderType.MARKET, quantity=Decimal("0.1"))


def resting() -> OrderRequest:
    return OrderRequest(
        "BTC", Side.BUY, OrderType.LIMIT, quantity=Decimal("0.1"), limit_price=Decimal("50.00")
    )


async def counted(commands, work) -> tuple[Any, list[tuple[str, str | None]]]:
    commands.only_this_task()
    commands.reset()
    result = await work
    return result, list(commands.targets)


async def trader(gql_at) -> tuple[Any, Viewer]:
    client = gql_at()
    payload = await sign_up(client)
    client.headers.update(bearer(payload["accessToken"]))
    return client, Viewer(payload["user"]["id"])


async def warm(services, viewer: Viewer) -> None:
    """A first order of each kind: the account funded, its balances seen."""
    engine = services.trading
    await engine.place(viewer, market(), Origin())
    await engine.place(viewer, market(Side.SELL), Origin())
    order = await engine.place(viewer, resting(), Origin())
    await engine.cancel(viewer, order.id, Origin())


async def test_an_order_costs_the_store_commands_crash_safety_needs_and_no_more(
    services, commands, gql_at
):
    _, viewer = await trader(gql_at)
    await warm(services, viewer)
    engine = services.trading

    filled, sent = await counted(commands, engine.place(viewer, market(), Origin()))
    assert filled.status == "FILLED"
    assert sent == MARKET
    assert len(sent) <= MARKET_TARGET

    sold, sent = await counted(commands, engine.place(viewer, market(Side.SELL), Origin()))
    assert sold.status == "FILLED" and sent == MARKET

    order, placing = await counted(commands, engine.place(viewer, resting(), Origin()))
    assert order.status == "OPEN" and placing == RESTING
    canceled, canceling = await counted(commands, engine.cancel(viewer, order.id, Origin()))
    assert canceled.status == "CANCELED" and canceling == CANCEL
    assert len(placing) <= MUTATION_TARGET and len(canceling) <= MUTATION_TARGET


async def test_through_the_api_an_order_costs_authentication_and_the_engine_only(
    services, commands, gql_at
):
    client, viewer = await trader(gql_at)
    await warm(services, viewer)
    await client.data("{ ping }")  # the first request fills the authentication cache
    _, authentication = await counted(commands, client.data("{ ping }"))
    assert authentication == []  # then no store command to authenticate

    async def api(query: str, variables: dict[str, Any]) -> tuple[dict, list]:
        return await counted(commands, client.data(query, variables))

    fields = {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": "0.1"}
    body, sent = await api(PLACE, {"i": fields})
    assert body["placeOrder"]["status"] == "FILLED" and sent == MARKET
    fields = {**fields, "type": "LIMIT", "limitPrice": "50.00"}
    body, sent = await api(PLACE, {"i": fields})
    assert body["placeOrder"]["status"] == "OPEN" and sent == RESTING
    body, sent = await api(CANCEL_ORDER, {"id": body["placeOrder"]["id"]})
    assert body["cancelOrder"]["status"] == "CANCELED" and sent == CANCEL


async def test_trade_points_are_one_per_account_per_interval_however_many_trades(
    services, commands, gql_at
):
    """The portfolio history point after a trade: the first at once, then at most one
    per interval (written at its end, with every trade of it), never on the request."""
    portfolio = services.portfolio
    every, portfolio.trade_point_every = portfolio.trade_point_every, 3600.0
    try:
        _, viewer = await trader(gql_at)
        points = PortfolioSnapshotDocument.find({"user_id": viewer.user_id, "reason": "trade"})
        await services.trading.place(viewer, market(), Origin())  # the first trade
        await portfolio.drain()  # its point is due at once (taken here if not yet)
        assert await points.count() == 1
        for side in [Side.SELL, Side.BUY] * 3:
            _, sent = await counted(
                commands, services.trading.place(viewer, market(side), Origin())
            )
            assert sent == MARKET  # no history point on the request
        assert await points.count() == 1  # the next is due an interval after the first
        assert await portfolio.write_trade_points(until=0.0) == 0  # nothing due yet
        assert await portfolio.drain() is None and await points.count() == 2  # one for six
    finally:
        portfolio.trade_point_every = every


async def entries_of(user_id: str) -> list[tuple[str, str]]:
    found = AuditEntryDocument.find({"user_id": user_id})
    return sorted([(e.action, e.target or "") async for e in found])


async def test_the_audit_entries_of_many_orders_cost_one_copier_round(services, commands, gql_at):
    """Each order's entries reach the audit log once, copied in one round of 3
    commands for every order let go since the last round (off every request)."""
    _, viewer = await trader(gql_at)
    await warm(services, viewer)
    copier = services.trading.order_audit
    active, copier.is_active = copier.is_active, lambda: False  # the background one rests
    try:
        await copier.drain()  # the warm-up's entries (after any round under way)
        engine = services.trading
        placed = [await engine.place(viewer, resting(), Origin()) for _ in range(4)]
        await engine.cancel(viewer, placed[0].id, Origin())
        filled = await engine.place(viewer, market(), Origin())
        copied, sent = await counted(commands, copier.copy())
        assert copied == 5 and sent == COPY_ROUND
        assert await copier.copy() == 0  # nothing left pending
    finally:
        copier.is_active = active
    targets = [f"order:{o.id}" for o in (*placed, filled)]
    expected = [("order.canceled", targets[0])] + [("order.placed", t) for t in targets]
    assert [e for e in await entries_of(viewer.user_id) if e[1] in targets] == sorted(expected)
    left = {"_id": {"$in": [o.id for o in (*placed, filled)]}, "audit_state": {"$ne": None}}
    assert await services.store.db["orders"].count_documents(left) == 0
