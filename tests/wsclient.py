"""A small graphql-transport-ws / graphql-ws test client over a real socket: it answers
the server's pings, keeps messages per operation id, and reports the close."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
WAIT = 10.0  # seconds: a bound for a message that should come, never an assertion


class Socket:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        # Messages read but not asked for yet, per operation id (None: connection).
        self._unread: dict[Any, list[dict]] = {}

    @classmethod
    async def open(cls, url: str, protocol: str = TRANSPORT, **kw: Any) -> Socket:
        ws = await connect(f"ws://{url}/graphql", subprotocols=[protocol], **kw)  # type: ignore[list-item]
        return cls(ws, protocol)

    async def init(self, payload: dict | None = None) -> dict:
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.receive(None)

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def start(self, op_id: str, query: str, variables: dict | None = None) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        payload = {"query": query, "variables": variables or {}}
        await self.send({"id": op_id, "type": kind, "payload": payload})

    async def receive(self, op_id: Any, timeout: float = WAIT) -> dict:
        """The next message for `op_id` (None: connection messages such as the ack)."""
        async with asyncio.timeout(timeout):
            while not self._unread.get(op_id):
                message = json.loads(await self.ws.recv())
                if message.get("type") == "ping":
                    await self.send({"type": "pong"})
                    continue
                if message.get("type") == "ka":
                    continue
                self._unread.setdefault(message.get("id"), []).append(message)
        return self._unread[op_id].pop(0)

    async def result(self, op_id: str, query: str, variables: dict | None = None) -> dict:
        """Run a query or mutation over the socket: its payload (data and errors)."""
        await self.start(op_id, query, variables)
        message = await self.receive(op_id)
        if message["type"] == "error":
            payload = message["payload"]
            return {"errors": payload if isinstance(payload, list) else [payload]}
        assert message["type"] in ("next", "data"), message
        assert (await self.receive(op_id))["type"] == "complete"
        return message["payload"]

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str]:
        """Read until the server closes the socket: (code, reason)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = json.loads(await self.ws.recv())
                    if message.get("type") == "ping":
                        await self.send({"type": "pong"})
                    elif message.get("type") != "ka":
                        self._unread.setdefault(message.get("id"), []).append(message)
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return (frame.code, frame.reason) if frame is not None else (None, "")

    async def close(self) -> None:
        await self.ws.close()


def error_of(message: dict) -> dict:
    """The first error of a `next`/`data`/`error` message."""
    payload = message["payload"]
    errors = payload if isinstance(payload, list) else payload.get("errors") or [payload]
    return errors[0]
