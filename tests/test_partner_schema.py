"""The schema partners build on: enum-typed successors of String fields, the Node
interface (node/nodes with each object's own permission and owner checks), and the
admin's trading statistics."""

from __future__ import annotations

import pytest

from tests.conftest import tick

PLACE = """mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"""
HISTORY = """query($id: ID!) { order(id: $id) { history { status type } } }"""
LEDGER = "{ ledger(first: 50) { edges { node { kind type } } } }"


@pytest.fixture(autouse=True)
def quotes(services):
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "2000.00"))


async def place(gql, **fields) -> dict:
    return (await gql.data(PLACE, {"i": fields}))["placeOrder"]


async def test_order_events_and_ledger_entries_have_enum_types_matching_the_strings(
    user_gql, services
):
    await place(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="1")
    stop = await place(
        user_gql, symbol="BTC", side="SELL", type="STOP", quantity="1", stopPrice="90.00"
    )
    falling = tick("BTC", "89.00")
    services.market.apply(falling)
    await services.trading.match_tick(falling)
    history = (await user_gql.data(HISTORY, {"id": stop["id"]}))["order"]["history"]
    assert [e["type"] for e in history] == [e["status"] for e in history]
    assert "TRIGGERED" in [e["type"] for e in history] and history[-1]["type"] == "FILLED"
    entries = [e["node"] for e in (await user_gql.data(LEDGER))["ledger"]["edges"]]
    assert {e["type"] for e in entries} == {"FUNDING", "TRADE"}
    assert all(e["type"] == e["kind"].upper() for e in entries)
