"""The schema partners build on: enum-typed successors of String fields, the Node
interface (node/nodes with each object's own permission and owner checks), and the
admin's trading statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptovault.documents.trading import OrderDocument
from cryptovault.resolvers.nodes import MAX_NODES
from tests.conftest import bearer, error_codes, sign_up, tick
from tests.test_admin import admin_headers

PLACE = """mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"""
HISTORY = """query($id: ID!) { order(id: $id) { history { status type } } }"""
FILLS = "query($id: ID!) { order(id: $id) { trades { id quantity price } } }"
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


NODE = """query($id: ID!) { node(id: $id) { __typename id
  ... on Order { status } ... on Trade { orderId } ... on PriceAlert { symbol }
  ... on ApiKey { name } ... on User { email } } }"""
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
ALERT = """mutation { createPriceAlert(input: {symbol: "BTC", condition: ABOVE, value: "500"}) {
  id } }"""
KEY = 'mutation($s: [ApiKeyScope!]!) { createApiKey(name: "n", scopes: $s) { key apiKey { id } } }'


async def owned_objects(gql) -> dict[str, str]:
    """One object of each Node type owned by the caller: typename -> id."""
    bought = await place(gql, symbol="BTC", side="BUY", type="MARKET", quantity="1")
    resting = await place(
        gql, symbol="BTC", side="BUY", type="LIMIT", quantity="1", limitPrice="5.00"
    )
    trade = (await gql.data(FILLS, {"id": bought["id"]}))["order"]["trades"][0]["id"]
    alert = (await gql.data(ALERT))["createPriceAlert"]["id"]
    key = (await gql.data(KEY, {"s": ["MARKET_READ"]}))["createApiKey"]["apiKey"]["id"]
    user = gql.payload["user"]["id"]
    return {
        "Order": resting["id"],
        "Trade": trade,
        "PriceAlert": alert,
        "ApiKey": key,
        "User": user,
    }


async def test_node_refetches_each_of_the_callers_objects_by_id(user_gql):
    objects = await owned_objects(user_gql)
    for typename, object_id in objects.items():
        node = (await user_gql.data(NODE, {"id": object_id}))["node"]
        assert (node["__typename"], node["id"]) == (typename, object_id)
    assert (await user_gql.data(NODE, {"id": objects["Order"]}))["node"]["status"] == "OPEN"
    ids = [objects["Trade"], "nope", objects["Order"], "0" * 24, objects["Trade"]]
    found = (await user_gql.data(NODES, {"ids": ids}))["nodes"]
    assert found == [
        {"__typename": "Trade", "id": objects["Trade"]},
        None,
        {"__typename": "Order", "id": objects["Order"]},
        None,
        {"__typename": "Trade", "id": objects["Trade"]},
    ]


async def test_another_users_objects_are_null_and_admins_read_only_users(
    user_gql, gql_at, services
):
    objects = await owned_objects(user_gql)
    other = gql_at()
    mine = await sign_up(other)
    other.headers.update(bearer(mine["accessToken"]))
    ids = list(objects.values())
    assert (await other.data(NODES, {"ids": ids}))["nodes"] == [None] * len(ids)
    assert (await other.data(NODE, {"id": mine["user"]["id"]}))["node"]["__typename"] == "User"
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    seen = (await admin.data(NODES, {"ids": ids}))["nodes"]
    assert seen == [None] * (len(ids) - 1) + [{"__typename": "User", "id": objects["User"]}]
    assert error_codes(await gql_at().execute(NODE, {"id": objects["Order"]})) == [
        "UNAUTHENTICATED"
    ]


async def test_api_key_scopes_apply_to_node(user_gql, gql_at):
    objects = await owned_objects(user_gql)
    market_only = gql_at()
    market_only.headers["X-API-Key"] = (await user_gql.data(KEY, {"s": ["MARKET_READ"]}))[
        "createApiKey"
    ]["key"]
    body = await market_only.execute(NODE, {"id": objects["Order"]})
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["scope"] == "portfolio:read"
    reader = gql_at()
    reader.headers["X-API-Key"] = (await user_gql.data(KEY, {"s": ["PORTFOLIO_READ"]}))[
        "createApiKey"
    ]["key"]
    assert (await reader.data(NODE, {"id": objects["Trade"]}))["node"]["id"] == objects["Trade"]
    # An API key never reads API keys, its owner's included.
    assert error_codes(await reader.execute(NODE, {"id": objects["ApiKey"]})) == ["FORBIDDEN"]
    assert (await reader.data(NODE, {"id": objects["User"]}))["node"]["__typename"] == "User"


async def test_nodes_costs_one_object_per_id_and_refuses_too_many(user_gql):
    three = await user_gql.execute(NODES, {"ids": ["a", "b", "c"]})
    assert three["extensions"]["cost"]["requestedQueryCost"] == 3
    body = await user_gql.execute(NODES, {"ids": [str(i) for i in range(MAX_NODES + 1)]})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    single = await user_gql.execute(NODE, {"id": "x"})
    assert single["extensions"]["cost"]["requestedQueryCost"] == 1


STATS = "{ stats { orders24h trades24h tradeVolume24h openOrders } }"


async def test_stats_count_the_last_days_orders_fills_volume_and_open_orders(
    user_gql, gql_at, services
):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    before = (await admin.data(STATS))["stats"]
    bought = await place(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="2")
    resting = await place(
        user_gql, symbol="ETH", side="BUY", type="LIMIT", quantity="1", limitPrice="5.00"
    )
    fills = (await user_gql.data(FILLS, {"id": bought["id"]}))["order"]["trades"]
    after = (await admin.data(STATS))["stats"]
    assert after["orders24h"] == before["orders24h"] + 2
    assert after["trades24h"] == before["trades24h"] + len(fills)
    volume = sum(Decimal(f["quantity"]) * Decimal(f["price"]) for f in fills)
    assert Decimal(after["tradeVolume24h"]) - Decimal(before["tradeVolume24h"]) == volume
    assert after["openOrders"] == before["openOrders"] + 1
    # An order from two days ago is not of the last 24 hours, but is still open.
    await OrderDocument.get_pymongo_collection().update_one(
        {"_id": resting["id"]}, {"$set": {"created_at": datetime.now(UTC) - timedelta(days=2)}}
    )
    later = (await admin.data(STATS))["stats"]
    assert later["orders24h"] == after["orders24h"] - 1
    assert later["openOrders"] == after["openOrders"]
    assert error_codes(await user_gql.execute(STATS)) == ["FORBIDDEN"]
