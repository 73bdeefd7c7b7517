"""Graceful shutdown as an operator sees it: `cryptovault serve` gets SIGTERM while a
client watches live prices; the client is told "going away" (1001), the server logs
no error and exits on its own. And the services' close is bounded: a store or a step
that stops answering does not hold the stop up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal

import orjson
import pytest
import websockets
from pymongo.errors import InvalidOperation

from cryptovault.db import EmbeddedServer, open_store
from cryptovault.services import start_services
from tests.conftest import free_port, make_settings
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


async def test_store_close_is_bounded_when_the_store_stops_answering(tmp_path):
    """pymongo's close sends endSessions and waits for the answer without a limit of
    its own: against a store that stopped answering (here: SIGSTOPped) a worker's
    shutdown waited forever. Store.close gives up on it and still closes the client."""
    db = spawn("db", "--port", "0", "--data-dir", str(tmp_path / "db"), env={}, cwd=tmp_path)
    try:
        line = await asyncio.to_thread(db.stdout.readline)  # type: ignore[union-attr]
        url = line.strip().split("=", 1)[1]
        store = await open_store(url, "stopped_store", tmp_path / "data", init_models=False)
        await store.db["things"].insert_one({"n": 1})  # a server session to end
        os.kill(db.pid, signal.SIGSTOP)
        async with asyncio.timeout(20):  # before the bound: still waiting at 20 s
            await store.close()  # within 5 s by default
        with pytest.raises(InvalidOperation):  # closed, not just abandoned
            await store.db["things"].find_one({})
    finally:
        os.kill(db.pid, signal.SIGCONT)
        db.terminate()
        db.communicate(timeout=20)


async def test_services_close_goes_on_past_a_step_that_does_not_end(
    store_server: EmbeddedServer, caplog
):
    """A step of the services' close that never ends, not even when cancelled (the
    feed lease's release on a Redis that stopped answering, a task swallowing its
    cancellation): after SHUTDOWN_TIMEOUT_SECONDS it is cancelled, logged and left
    behind; the steps after it run, the store is closed."""
    settings = make_settings(store_server.url, shutdown_timeout_seconds=2.0)
    services = await start_services(settings, feed=None)
    released = asyncio.Event()
    entered = []

    async def never_ends() -> None:
        entered.append(True)
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # only `released` ends it
                await released.wait()

    services.leader.close = never_ends  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="cryptovault.services"):
            # In a task: a close stuck on the step could not be cancelled either.
            closing = asyncio.ensure_future(services.close())
            done, _ = await asyncio.wait({closing}, timeout=20)
            released.set()  # before the bound: the close only ended here
            await closing
        assert done, "services.close() still waiting on the step after 20 s"
        assert entered
        overran = [r for r in caplog.records if r.message.startswith("shutdown step did not")]
        assert [(r.step, r.ended) for r in overran] == [("leader", False)]  # type: ignore[attr-defined]
        closed = [r for r in caplog.records if r.message == "services closed"]
        assert set(closed[0].steps_ms) >= {"leader", "market", "bus", "store"}  # type: ignore[attr-defined]
        with pytest.raises(InvalidOperation):
            await services.store.db["orders"].find_one({})
    finally:
        released.set()
        await asyncio.sleep(0)
