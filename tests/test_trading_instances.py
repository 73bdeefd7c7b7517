"""Two app instances on one store and one Redis: concurrent orders through both
spend each dollar once; order updates reach the viewer's subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from cryptovault.app import create_app
from cryptovault.services import start_services
from cryptovault.trading.reconcile import reconcile
from tests.conftest import REDIS_URL, GraphQLClient, bearer, error_codes, serve, sign_up, tick

PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"


LIMIT_BUY = {
    "symbol": "BTC",
    "side": "BUY",
    "type": "LIMIT",
    "quantity": "1",
    "limitPrice": "50.00",
}
MARKET_BUY = {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": "0.1"}


async def order_updates_until_canceled(
    url: str, token: str, place: Callable[[], Awaitable[str]]
) -> tuple[str, list[dict]]:
    """Subscribe to `orderUpdates` at `url` as `token`, run `place` (which returns
    the id of the order it places and cancels), and return that id and the events
    received up to the first CANCELED."""
    transport = WebsocketsTransport(
        url=f"ws://{url}/graphql", init_payload={"authorization": f"Bearer {token}"}
    )
    async with Client(transport=transport) as session:
        seen: list[dict] = []

        async def listen() -> None:
            async for event in session.subscribe(
                gql("subscription { orderUpdates { id status filledQuantity } }")
            ):
                seen.append(event["orderUpdates"])
                if event["orderUpdates"]["status"] == "CANCELED":
                    return

        task = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        order_id = await place()
        await asyncio.wait_for(task, 10)
    return order_id, seen


async def place_then_cancel_mine(mine: GraphQLClient, other: GraphQLClient) -> str:
    # Someone else's order never shows up in the owner's stream.
    await other.data(PLACE, {"i": MARKET_BUY})
    order_id = (await mine.data(PLACE, {"i": LIMIT_BUY}))["placeOrder"]["id"]
    await mine.data("mutation($id: ID!) { cancelOrder(id: $id) { id } }", {"id": order_id})
    return order_id


@pytest.mark.redis
async def test_concurrent_buys_through_two_instances_spend_each_dollar_once(settings):
    from dataclasses import replace

    shared = replace(settings, redis_url=REDIS_URL)
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None)
    try:
        for s in (a, b):
            s.market.apply(tick("ETH", "2000.00"))
        clients = []
        for s in (a, b):
            transport = httpx.ASGITransport(
                app=create_app(shared, services=s), client=("10.7.0.1", 1)
            )
            clients.append(
                GraphQLClient(httpx.AsyncClient(transport=transport, base_url="http://t"))
            )
        token = (await sign_up(clients[0]))["accessToken"]
        for c in clients:
            c.headers.update(bearer(token))
        order = {"symbol": "ETH", "side": "BUY", "type": "MARKET", "quantity": "0.45"}
        bodies = await asyncio.gather(
            *(clients[n % 2].execute(PLACE, {"i": order}) for n in range(60))
        )
        filled = [b for b in bodies if not b.get("errors")]
        assert {tuple(error_codes(b)) for b in bodies if b.get("errors")} == {
            ("INSUFFICIENT_FUNDS",)
        }
        assert len(filled) in (10, 11)
        account = await clients[1].data("{ account { balances { asset available held } } }")
        got = {x["asset"]: x for x in account["account"]["balances"]}
        assert Decimal(got["USD"]["available"]) >= 0 and Decimal(got["USD"]["held"]) == 0
        assert Decimal(got["ETH"]["available"]) == Decimal("0.45") * len(filled)
        report = await reconcile(a.store.db)
        assert report.ok, report.discrepancies
        for c in clients:
            await c.http.aclose()
    finally:
        await a.close()
        await b.close()


async def test_order_updates_stream_the_viewers_orders(app, services, user_gql, gql_at):
    services.market.apply(tick("BTC", "100.00"))
    other = gql_at()
    other.headers.update(bearer((await sign_up(other))["accessToken"]))
    async with serve(app) as url:
        mine, seen = await order_updates_until_canceled(
            url,
            user_gql.payload["accessToken"],
            lambda: place_then_cancel_mine(user_gql, other),
        )
    assert {e["id"] for e in seen} == {mine}
    assert [e["status"] for e in seen] == ["OPEN", "CANCELED"]


@pytest.mark.redis
async def test_an_order_placed_on_one_instance_streams_to_its_owner_on_another(settings):
    """Instance A takes the orders; the owner's `orderUpdates` runs on instance B:
    the events cross through Redis, and only the owner's reach the owner."""
    from dataclasses import replace

    shared = replace(settings, redis_url=REDIS_URL)
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None)
    clients: list[GraphQLClient] = []
    try:
        for s in (a, b):
            s.market.apply(tick("BTC", "100.00"))
        for ip in ("10.7.1.1", "10.7.1.2"):
            transport = httpx.ASGITransport(app=create_app(shared, services=a), client=(ip, 1))
            clients.append(
                GraphQLClient(httpx.AsyncClient(transport=transport, base_url="http://t"))
            )
        owner, other = clients
        token = (await sign_up(owner))["accessToken"]
        owner.headers.update(bearer(token))
        other.headers.update(bearer((await sign_up(other))["accessToken"]))
        async with serve(create_app(shared, services=b)) as url:
            mine, seen = await order_updates_until_canceled(
                url, token, lambda: place_then_cancel_mine(owner, other)
            )
        assert [(e["id"], e["status"]) for e in seen] == [(mine, "OPEN"), (mine, "CANCELED")]
    finally:
        for c in clients:
            await c.http.aclose()
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_two_instances_never_sell_more_than_a_ticks_book_between_them(settings):
    """Liquidity was counted per instance: two instances each sold the tick's whole top
    of book (3,800 USD filled on a 2,000 USD book in 3 of 10 rounds)."""
    from dataclasses import replace

    shared = replace(settings, redis_url=REDIS_URL, top_of_book_usd=Decimal(500))
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None)
    try:
        clients = []
        for s in (a, b):
            transport = httpx.ASGITransport(
                app=create_app(shared, services=s), client=("10.7.0.2", 1)
            )
            client = GraphQLClient(httpx.AsyncClient(transport=transport, base_url="http://t"))
            client.headers.update(bearer((await sign_up(client))["accessToken"]))
            clients.append(client)
        order = {
            "symbol": "SOL",
            "side": "BUY",
            "type": "MARKET",
            "quantity": "3",
            "timeInForce": "IOC",
        }
        for round_ in range(10):
            t = tick("SOL", "100.00")  # one tick, seen by both instances: 5 SOL on offer
            for s in (a, b):
                s.market.apply(t)
            bodies = await asyncio.gather(
                *(
                    c.execute(
                        "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status filledQuantity } }",
                        {"i": order},
                    )
                    for c in clients
                )
            )
            assert all(not body.get("errors") for body in bodies), bodies
            filled = [Decimal(body["data"]["placeOrder"]["filledQuantity"]) for body in bodies]
            assert sum(filled) <= Decimal(5), (round_, filled)
            assert sum(filled) == Decimal(5)  # and the whole book is used: 3 + 2
        report = await reconcile(a.store.db)
        assert report.ok, report.discrepancies
        for c in clients:
            await c.http.aclose()
    finally:
        await a.close()
        await b.close()
