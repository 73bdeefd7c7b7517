"""Live prices and candles over WebSocket, checked with a third-party protocol client
(gql's websockets transport) on both protocols, against a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import tick

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"


async def collect(
    url: str, document: str, variables: dict | None, n: int, protocol: str, push
) -> list[dict[str, Any]]:
    transport = WebsocketsTransport(url=f"ws://{url}/graphql", subprotocols=[protocol])
    async with Client(transport=transport) as session:
        results: list[dict[str, Any]] = []

        async def consume() -> None:
            request = gql(document)
            request.variable_values = variables
            stream: AsyncIterator[dict] = session.subscribe(request)
            async for item in stream:
                results.append(item)
                if len(results) == n:
                    return

        task = asyncio.create_task(consume())
        # Keep pushing ticks until the subscriber has what it needs (it may join
        # after the first pushes).
        for _ in range(200):
            if task.done():
                break
            await push()
            await asyncio.sleep(0.02)
        await asyncio.wait_for(task, 5)
        return results


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, GRAPHQL_WS])
async def test_prices_subscription_streams_only_requested_symbols(live_url, services, protocol):
    prices = iter(range(1000, 2000))

    async def push() -> None:
        p = next(prices)
        await services.market.publish_tick(tick("ETH", f"{p}.00"))
        await services.market.publish_tick(tick("BTC", f"{p * 10}.00"))

    events = await collect(
        live_url,
        'subscription { prices(symbols: ["ETH"]) { symbol price bid ask timestamp } }',
        None,
        3,
        protocol,
        push,
    )
    assert [e["prices"]["symbol"] for e in events] == ["ETH"] * 3
    values = [int(e["prices"]["price"].split(".")[0]) for e in events]
    assert values == sorted(values) and len(set(values)) == 3
    assert all(isinstance(e["prices"]["bid"], str) for e in events)


async def test_candles_subscription_streams_the_open_candle(live_url, services):
    async def push() -> None:
        await services.market.publish_tick(tick("SOL", "140.00", "2"))

    events = await collect(
        live_url,
        'subscription($i: CandleInterval!) { candles(symbol: "SOL", interval: $i) '
        "{ symbol interval close volume closed } }",
        {"i": "FIVE_MINUTES"},
        2,
        GRAPHQL_TRANSPORT_WS,
        push,
    )
    assert all(e["candles"]["interval"] == "FIVE_MINUTES" for e in events)
    assert all(e["candles"]["closed"] is False for e in events)
    assert float(events[1]["candles"]["volume"]) > float(events[0]["candles"]["volume"])


async def test_subscription_to_unknown_symbol_is_an_error(live_url):
    transport = WebsocketsTransport(url=f"ws://{live_url}/graphql")
    async with Client(transport=transport) as session:
        with pytest.raises(TransportQueryError) as err:
            async for _ in session.subscribe(
                gql('subscription { prices(symbols: ["NOPE"]) { price } }')
            ):
                pass
    assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, GRAPHQL_WS])
async def test_ticks_go_out_as_frames_written_at_once(live_url, services, protocol, at_once):
    """On `cryptovault serve`'s WebSocket protocol the fan-out writes each tick's frame
    straight to the connection (LeanWebSocketsProtocol.write_text), not through the
    ASGI `send` coroutines."""
    prices = iter(range(3000, 4000))

    async def push() -> None:
        await services.market.publish_tick(tick("SOL", f"{next(prices)}.00"))

    events = await collect(
        live_url,
        'subscription { prices(symbols: ["SOL"]) { symbol price } }',
        None,
        2,
        protocol,
        push,
    )
    assert [e["prices"]["symbol"] for e in events] == ["SOL", "SOL"]
    ticks = [json.loads(t) for t in at_once if '"SOL"' in t]
    assert len(ticks) >= 2
    assert {f["type"] for f in ticks} == {"next" if protocol == GRAPHQL_TRANSPORT_WS else "data"}
