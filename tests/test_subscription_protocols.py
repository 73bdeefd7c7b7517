"""Grouped subscriptions look exactly like Strawberry's own to a client: the same
conversation, on both protocols, produces the same frames byte for byte in "grouped"
and "naive" mode; and a third-party client (gql) sees the usual protocol behaviour:
several subscriptions per socket, unsubscribing, errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cryptovault.app import create_app
from cryptovault.market.candles import Interval
from cryptovault.market.service import candle_topic, price_topic
from tests.conftest import serve, tick

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing
PRICES = "subscription P($s: [String!]) { prices(symbols: $s) { symbol price bid ask timestamp } }"
CANDLES = 'subscription { candles(symbol: "SOL", interval: FIVE_MINUTES) { symbol interval close closed } }'
UNKNOWN_SYMBOL = 'subscription { prices(symbols: ["NOPE"]) { price } }'
UNKNOWN_FIELD = 'subscription { prices(symbols: ["ETH"]) { nope } }'
A_QUERY = '{ prices(symbols: ["ETH"]) { symbol price } }'
OTHER_SELECTION = 'subscription { prices(symbols: ["ETH"]) { symbol } }'


class Peer:
    """A raw protocol client that records every frame it receives, as text."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[str] = []

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self) -> dict:
        text = await asyncio.wait_for(self.ws.recv(), WAIT)
        self.frames.append(text)
        return json.loads(text)

    async def until_done(self, op: str) -> None:
        """Until operation `op` is over (complete or error) or the socket closed."""
        try:
            while (message := await self.recv()).get("id") != op or message["type"] not in (
                "complete",
                "error",
            ):
                pass
        except ConnectionClosed as closed:
            self.frames.append(f"closed {closed.rcvd.code if closed.rcvd else 1006}")

    async def close_code(self) -> int:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await self.recv()
        code = closed.value.rcvd.code if closed.value.rcvd else 1006
        self.frames.append(f"closed {code}")
        return code


async def until(condition, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def app_in(mode: str, settings, services) -> AsyncIterator[str]:
    async with serve(create_app(replace(settings, subscription_mode=mode), services)) as url:
        yield url


def stamp(i: int) -> datetime:
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    return base + timedelta(milliseconds=i)


async def transport_ws_conversation(url: str, services, at: datetime) -> list[str]:
    hub, market = services.hub, services.market
    async with connect(f"ws://{url}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        peer = Peer(ws)
        await peer.send({"type": "connection_init", "payload": {}})
        assert (await peer.recv())["type"] == "connection_ack"
        await peer.send({"type": "ping"})
        await peer.recv()
        for op, query, variables in [
            ("a", PRICES, {"s": ["ETH"]}),
            ("b", PRICES, {"s": ["BTC"]}),
            ("c", CANDLES, None),
        ]:
            payload = {"query": query, "variables": variables} if variables else {"query": query}
            await peer.send({"id": op, "type": "subscribe", "payload": payload})
        await until(lambda: hub.subscriber_count(price_topic("ETH")) == 1, "a")
        await until(lambda: hub.subscriber_count(price_topic("BTC")) == 1, "b")
        await until(lambda: hub.subscriber_count(candle_topic("SOL", Interval.FIVE_MINUTES)), "c")
        market.apply(tick("ETH", "3000.00", at=at))
        await peer.recv()
        market.apply(tick("BTC", "90000.00", at=at))
        await peer.recv()
        market.apply(tick("SOL", "140.00", at=at))
        await peer.recv()
        # A bad symbol: a `next` with the error, then `complete`.
        await peer.send({"id": "d", "type": "subscribe", "payload": {"query": UNKNOWN_SYMBOL}})
        await peer.recv()
        await peer.recv()
        # An invalid document: `error`.
        await peer.send({"id": "e", "type": "subscribe", "payload": {"query": UNKNOWN_FIELD}})
        await peer.recv()
        # A query over the socket: `next`, `complete`.
        await peer.send({"id": "f", "type": "subscribe", "payload": {"query": A_QUERY}})
        await peer.recv()
        await peer.recv()
        # Unsubscribe from ETH: its ticks no longer come, BTC's still do.
        await peer.send({"id": "a", "type": "complete"})
        await until(lambda: hub.subscriber_count(price_topic("ETH")) == 0, "a gone")
        market.apply(tick("ETH", "3001.00", at=at + timedelta(milliseconds=1)))
        market.apply(tick("BTC", "90001.00", at=at + timedelta(milliseconds=1)))
        await peer.recv()
        # The same id again, now with another selection.
        await peer.send({"id": "a", "type": "subscribe", "payload": {"query": OTHER_SELECTION}})
        await until(lambda: hub.subscriber_count(price_topic("ETH")) == 1, "a again")
        market.apply(tick("ETH", "3002.00", at=at + timedelta(milliseconds=2)))
        await peer.recv()
        # Bad syntax: whatever Strawberry answers (an error, or closing with 4400).
        await peer.send({"id": "h", "type": "subscribe", "payload": {"query": "subscription {"}})
        await peer.until_done("h")
        return peer.frames


async def graphql_ws_conversation(url: str, services, at: datetime) -> list[str]:
    hub, market = services.hub, services.market
    async with connect(f"ws://{url}/graphql", subprotocols=["graphql-ws"]) as ws:
        peer = Peer(ws)
        await peer.send({"type": "connection_init", "payload": {}})
        assert (await peer.recv())["type"] == "connection_ack"
        await peer.send(
            {"id": "a", "type": "start", "payload": {"query": PRICES, "variables": {"s": ["ETH"]}}}
        )
        await peer.send({"id": "c", "type": "start", "payload": {"query": CANDLES}})
        await until(lambda: hub.subscriber_count(price_topic("ETH")) == 1, "a")
        await until(lambda: hub.subscriber_count(candle_topic("SOL", Interval.FIVE_MINUTES)), "c")
        market.apply(tick("ETH", "3000.00", at=at))
        await peer.recv()
        market.apply(tick("SOL", "140.00", at=at))
        await peer.recv()
        await peer.send({"id": "d", "type": "start", "payload": {"query": UNKNOWN_SYMBOL}})
        await peer.recv()
        await peer.recv()
        await peer.send({"id": "e", "type": "start", "payload": {"query": UNKNOWN_FIELD}})
        await peer.recv()
        await peer.send({"id": "f", "type": "start", "payload": {"query": A_QUERY}})
        await peer.recv()
        # `stop` is confirmed with `complete`.
        await peer.send({"id": "a", "type": "stop"})
        await peer.recv()
        await until(lambda: hub.subscriber_count(price_topic("ETH")) == 0, "a gone")
        await peer.send({"type": "connection_terminate"})
        await peer.close_code()
        return peer.frames


@pytest.mark.parametrize("conversation", [transport_ws_conversation, graphql_ws_conversation])
async def test_grouped_mode_sends_the_same_frames_as_strawberry(settings, services, conversation):
    at = stamp(0)
    frames = {}
    for mode in ("naive", "grouped"):
        async with app_in(mode, settings, services) as url:
            frames[mode] = await conversation(url, services, at)
    # A query's cost report carries the caller's budget left, which moves with time.
    budget_left = re.compile(r'"currentlyAvailable":\d+')
    assert [budget_left.sub("", f) for f in frames["grouped"]] == [
        budget_left.sub("", f) for f in frames["naive"]
    ]
    # The conversation did exercise data, errors and completion.
    text = "\n".join(frames["grouped"])
    assert '"price":"3000.00"' in text and "BAD_USER_INPUT" in text and "complete" in text
    assert "3001.00" not in text


async def test_many_subscribers_share_one_execution_and_the_group_dies_with_the_last(
    settings, services
):
    hub, market = services.hub, services.market
    app = create_app(replace(settings, subscription_mode="grouped"), services)
    groups = app.state.subscription_groups
    async with serve(app) as url:
        sockets = []
        try:
            for i in range(30):
                ws = await connect(f"ws://{url}/graphql", subprotocols=["graphql-transport-ws"])
                sockets.append(ws)
                await ws.send(json.dumps({"type": "connection_init"}))
                await ws.recv()
                # Written differently, the same document: the same group.
                query = PRICES if i % 2 else PRICES.replace(" {", "  {  ") + "  # same"
                payload = {"query": query, "variables": {"s": ["LINK"]}}
                await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
            other = {"query": PRICES, "variables": {"s": ["LINK", "DOT"]}}
            await sockets[0].send(json.dumps({"id": "x", "type": "subscribe", "payload": other}))
            await until(lambda: groups.stats() == {"groups": 2, "subscribers": 31}, "joined")
            # One source per group: two hub subscriptions on LINK, not 31.
            assert hub.subscriber_count(price_topic("LINK")) == 2
            market.apply(tick("LINK", "14.500", at=stamp(5)))
            frames = [json.loads(await asyncio.wait_for(ws.recv(), WAIT)) for ws in sockets]
            # Each subscriber gets its own id around the same payload.
            assert [f["id"] for f in frames[1:]] == [str(i) for i in range(1, 30)]
            assert len({json.dumps(f["payload"]) for f in frames}) == 1
            assert frames[1]["payload"]["data"]["prices"]["price"] == "14.500"
            for ws in sockets[1:]:
                await ws.close()
            await until(lambda: groups.stats()["subscribers"] == 2, "left")
            assert groups.stats()["groups"] == 2
        finally:
            for ws in sockets:
                await ws.close()
        await until(lambda: groups.stats() == {"groups": 0, "subscribers": 0}, "all gone")
        assert hub.subscriber_count(price_topic("LINK")) == 0


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_gql_client_runs_two_subscriptions_on_one_socket_and_unsubscribes(
    live_url, services, protocol
):
    hub, market = services.hub, services.market
    transport = WebsocketsTransport(url=f"ws://{live_url}/graphql", subprotocols=[protocol])
    async with Client(transport=transport) as session:
        doge: list[dict] = []
        ada: list[dict] = []

        async def consume(symbol: str, into: list[dict], n: int) -> None:
            request = gql(PRICES)
            request.variable_values = {"s": [symbol]}
            async for item in session.subscribe(request):
                into.append(item["prices"])
                if len(into) == n:
                    return  # leaving the loop unsubscribes

        first = asyncio.create_task(consume("DOGE", doge, 2))
        second = asyncio.create_task(consume("ADA", ada, 4))
        await until(lambda: hub.subscriber_count(price_topic("DOGE")) == 1, "doge")
        await until(lambda: hub.subscriber_count(price_topic("ADA")) == 1, "ada")
        for i in range(2):
            market.apply(tick("DOGE", f"0.{20 + i}000", at=stamp(10 + i)))
            market.apply(tick("ADA", f"0.{60 + i}000", at=stamp(10 + i)))
            await until(lambda i=i: len(doge) > i and len(ada) > i, "both")
        await asyncio.wait_for(first, WAIT)
        # DOGE's group is gone with its only subscriber; ADA streams on.
        await until(lambda: hub.subscriber_count(price_topic("DOGE")) == 0, "doge gone")
        for i in range(2, 4):
            market.apply(tick("ADA", f"0.{60 + i}000", at=stamp(10 + i)))
            await until(lambda i=i: len(ada) > i, "ada")
        await asyncio.wait_for(second, WAIT)
    assert [Decimal(p["price"]) for p in doge] == [Decimal("0.20"), Decimal("0.21")]
    assert [Decimal(p["price"]) for p in ada] == [Decimal(f"0.6{i}") for i in range(4)]
    await until(lambda: hub.subscriber_count(price_topic("ADA")) == 0, "ada gone")


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize(
    ("document", "code"),
    [(UNKNOWN_SYMBOL, "BAD_USER_INPUT"), (UNKNOWN_FIELD, "BAD_USER_INPUT")],
)
async def test_gql_client_gets_errors_with_their_codes(live_url, protocol, document, code):
    transport = WebsocketsTransport(url=f"ws://{live_url}/graphql", subprotocols=[protocol])
    async with Client(transport=transport) as session:
        with pytest.raises(TransportQueryError) as err:
            async for _ in session.subscribe(gql(document)):
                pass
    assert err.value.errors[0]["extensions"]["code"] == code
