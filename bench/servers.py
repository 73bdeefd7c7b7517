"""The processes under test, each run by the bench as a child on 127.0.0.1 with uvloop
(as `cryptovault serve` runs with MongoDB):

    python -m bench.servers app --port P --store URL [--mode grouped|naive]
    python -m bench.servers floor --port P [--bodies FILE]

`app` is the real application (create_app, real services, the store in its own
process, no price feed) plus one bench-only route, `POST /bench/tick?n=K`, that
publishes a BTC tick priced 50000+K through the event bus, exactly as a feed does.

`floor` is what the issue calls the serialize-once floor: a plain Starlette app
whose WebSocket endpoint only registers sockets, and whose `/bench/tick` serializes
the same `next` frame once (orjson) and writes it to every socket; `POST /json/NAME`
returns a stored response body (the app's own answer to the same query).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bench.common import raise_open_files
from cryptovault.http.uvicorn_headers import validate_headers_once

CANDLES_STORED = 150


def tick_price(n: int) -> Decimal:
    return Decimal(50_000 + n).quantize(Decimal("0.01"))


class Server(uvicorn.Server):
    """uvicorn, stopped by SIGTERM without re-raising it afterwards (uvicorn does, which
    would kill the process before the services close and a profile is written)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.handle_exit, signal.SIGTERM, None)
        loop.add_signal_handler(signal.SIGINT, self.handle_exit, signal.SIGINT, None)
        yield


def connection_settings() -> Any:
    """The settings of this process's environment (the bench's limits, e.g.
    WS_PER_MESSAGE_DEFLATE for the deflate rows): the floor runs uvicorn with the
    same per-connection options as the app."""
    from cryptovault.config import load_settings

    # Its own DATA_DIR: a test configuration writes the secrets it generates there,
    # never into the working tree's ./data.
    environ = {**os.environ, "ENVIRONMENT": "test", "DATA_DIR": tempfile.mkdtemp(prefix="bench-")}
    return load_settings(environ, env_file=None)


def uvicorn_server(app: object, port: int, settings: Any) -> uvicorn.Server:
    """uvicorn with the per-connection options `cryptovault serve` uses (the
    WebSocket protocol, its limits and pings, no proxy headers), for app and floor."""
    from cryptovault.cli import connection_options

    # As `cryptovault serve` runs it: each distinct response header checked once
    # (cryptovault/http/uvicorn_headers.py).
    validate_headers_once()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        loop="none",
        # The app's bench entry is a plain function returning the app's awaitable.
        interface="asgi3",
        lifespan="off",
        log_config=None,
        log_level="warning",
        backlog=8192,
        timeout_keep_alive=300,
        **connection_options(settings),
    )
    return Server(config)


async def seed(services: Any) -> None:
    """History for the `candles` page (closed one-minute candles in the store) and a
    first price for every asset."""
    from bson import Decimal128

    from cryptovault.documents.candles import CandleDocument
    from cryptovault.market.assets import ASSETS
    from cryptovault.market.ticks import quote

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    price = Decimal128(Decimal("50000.00"))
    await CandleDocument.get_pymongo_collection().insert_many(
        [
            {
                "_id": f"BTC:1m:{int((start + timedelta(minutes=i)).timestamp())}",
                "symbol": "BTC",
                "interval": "1m",
                "start": start + timedelta(minutes=i),
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": price,
                "ticks": 1,
            }
            for i in range(CANDLES_STORED)
        ]
    )
    for symbol, asset in ASSETS.items():
        first = tick_price(0) if symbol == "BTC" else Decimal(1)
        services.market.apply(quote(asset, first, Decimal(1), "bench"))


async def serve_app(port: int, store_url: str, mode: str) -> None:
    from cryptovault.app import create_app
    from cryptovault.config import load_settings
    from cryptovault.logs import configure_logging
    from cryptovault.market.assets import ASSETS
    from cryptovault.market.ticks import quote
    from cryptovault.services import start_services

    environ = {
        **os.environ,
        "ENVIRONMENT": "test",
        "MONGODB_URL": store_url,
        # BENCH_DB: a database a bench prepared (e.g. bench.orders --history).
        "MONGODB_DB": os.environ.get("BENCH_DB") or f"bench_{uuid.uuid4().hex[:8]}",
        "DATA_DIR": tempfile.mkdtemp(prefix="bench-app-"),
        "MARKET_FEED": "none",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
        "SUBSCRIPTION_MODE": mode,
    }
    settings = load_settings(environ, env_file=None)
    configure_logging(settings.log_level, settings.log_format)
    services = await start_services(settings, feed=None)

    await seed(services)

    async def publish_tick(request: Request) -> Response:
        n = int(request.query_params["n"])
        await services.market.publish_tick(
            quote(ASSETS["BTC"], tick_price(n), Decimal(1), "bench", timestamp=datetime.now(UTC))
        )
        return Response(b"ok")

    app = create_app(settings, services)
    # The tick trigger stands for a feed message on the bus, which passes no HTTP
    # middleware in production: it is served beside the app, not through it, as the
    # floor serves its own (both are bare Starlette routes, so they cost the same).
    trigger = Starlette(routes=[Route("/bench/tick", publish_tick, methods=["POST"])])

    def with_trigger(scope: Any, receive: Any, send: Any) -> Any:
        # Not a coroutine: the app's sockets keep no frame of it (the floor has none).
        target = trigger if scope.get("path") == "/bench/tick" else app
        return target(scope, receive, send)

    try:
        await uvicorn_server(with_trigger, port, settings).serve()
    finally:
        await services.close()


async def serve_floor(port: int, bodies: dict[str, bytes]) -> None:
    sockets: set[WebSocket] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept(subprotocol=ws.scope.get("subprotocols", [None])[0] or None)
        sockets.add(ws)
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets.discard(ws)

    async def broadcast(frame: str) -> None:
        for ws in list(sockets):
            try:
                await ws.send_text(frame)
            except Exception:
                sockets.discard(ws)

    async def publish_tick(request: Request) -> Response:
        n = int(request.query_params["n"])
        price = tick_price(n)
        spread = price * Decimal("0.0001")
        message = {
            "id": "1",
            "type": "next",
            "payload": {
                "data": {
                    "prices": {
                        "symbol": "BTC",
                        "price": str(price),
                        "bid": str((price - spread / 2).quantize(Decimal("0.01"))),
                        "ask": str((price + spread / 2).quantize(Decimal("0.01"))),
                        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    }
                }
            },
        }
        task = asyncio.create_task(broadcast(orjson.dumps(message).decode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return Response(b"ok")

    async def json_body(request: Request) -> Response:
        await request.body()
        return Response(bodies[request.path_params["name"]], media_type="application/json")

    app = Starlette(
        routes=[
            WebSocketRoute("/graphql", endpoint),
            Route("/bench/tick", publish_tick, methods=["POST"]),
            Route("/json/{name}", json_body, methods=["POST"]),
        ]
    )
    await uvicorn_server(app, port, connection_settings()).serve()


def load_bodies(path: str | None) -> dict[str, bytes]:
    if not path:
        return {}
    return {k: v.encode() for k, v in orjson.loads(Path(path).read_bytes()).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["app", "floor"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store")
    parser.add_argument("--mode", default="grouped", choices=["grouped", "naive"])
    parser.add_argument("--bodies")
    args = parser.parse_args()
    raise_open_files()
    run = (
        serve_app(args.port, args.store, args.mode)
        if args.kind == "app"
        else serve_floor(args.port, load_bodies(args.bodies))
    )
    profile = os.environ.get("BENCH_PROFILE")
    if not profile:
        uvloop.run(run)
        return
    # BENCH_PROFILE=<file>: a cProfile of the whole server run (bench/RESULTS.md).
    import cProfile

    with cProfile.Profile() as profiler:
        uvloop.run(run)
    profiler.dump_stats(profile)


if __name__ == "__main__":
    main()
