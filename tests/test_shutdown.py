"""Graceful shutdown as an operator sees it: `cryptovault serve` gets SIGTERM while a
client watches live prices; the client is told "going away" (1001), the server logs
no error and exits on its own."""

from __future__ import annotations

import asyncio
import json
import signal

import orjson
import websockets

from tests.conftest import free_port
from tests.test_cli import spawn, wait_http

GOING_AWAY = 1001


async def test_sigterm_closes_live_subscriptions_with_going_away_and_logs_no_error(tmp_path):
    port = free_port()
    proc = spawn(
        "serve",
        env={
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "data"),
            "TICK_INTERVAL_MS": "100",
            "ENVIRONMENT": "development",
            "LOG_FORMAT": "json",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        },
        cwd=tmp_path,
    )
    try:
        assert (await wait_http(f"http://127.0.0.1:{port}/health")).status_code == 200
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-transport-ws"]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": 'subscription { prices(symbols: ["BTC"]) { price } }'},
                    }
                )
            )
            first = json.loads(await ws.recv())
            assert first["type"] == "next" and first["payload"]["data"]["prices"]["price"]
            metrics = await wait_http(f"http://127.0.0.1:{port}/metrics")
            assert "cryptovault_websocket_connections 1.0" in metrics.text
            assert 'cryptovault_subscriptions_active{field="prices"} 1.0' in metrics.text

            proc.send_signal(signal.SIGTERM)
            # Price events may still arrive until the close frame; then the socket
            # ends with the server's close code.
            async with asyncio.timeout(15):
                try:
                    while True:
                        await ws.recv()
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd is not None, "the server sent no close frame"
                    assert closed.rcvd.code == GOING_AWAY
                    assert closed.rcvd.reason == "Server shutting down"
        # It exits by itself (the bound only keeps a hung server from hanging CI).
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]
    lines = [orjson.loads(line) for line in err.splitlines() if line.strip()]
    assert [line["message"] for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    messages = [line["message"] for line in lines]
    # In order: websockets closed, then the services (feed lease released), then exit.
    closed = messages.index("websockets closed")
    assert messages.index("cryptovault stopped") > closed
    socket_line = next(line for line in lines if line["message"] == "websocket closed")
    assert socket_line["close_code"] == GOING_AWAY and socket_line["closed_by"] == "server"
