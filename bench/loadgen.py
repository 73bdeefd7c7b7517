"""Minimal, cheap clients for the load generator process: a WebSocket client speaking
just enough graphql-transport-ws, and a keep-alive HTTP/1.1 client.

A general-purpose client library costs more CPU per message than the server under
test (~30-60 µs for `websockets`, ~1 ms for httpx), and the load generator shares
this 2-core machine with the server: it would measure itself. These do almost
nothing per message: find the frame boundaries, note the time, count.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import zlib
from collections.abc import Callable

ZERO_MASK = b"\x00\x00\x00\x00"  # a masked client frame with a zero key: payload as is


def frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + ZERO_MASK + payload


class WSClient(asyncio.Protocol):
    """One WebSocket. `on_text(client, payload)` gets every text frame."""

    __slots__ = (
        "buffer",
        "close_code",
        "data",
        "inflater",
        "on_text",
        "opened",
        "request",
        "transport",
        "upgraded",
    )

    def __init__(
        self,
        host: str,
        path: str,
        subprotocol: str | None,
        on_text: Callable[[WSClient, bytes], None],
        deflate: bool = False,
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        # What browsers offer: the server then compresses every frame for this socket.
        self.inflater = zlib.decompressobj(-15) if deflate else None
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.on_text = on_text
        self.buffer = b""
        self.upgraded = False
        self.close_code: int | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.data: object = None  # free slot for the driver

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the upgrade"))
        if self.close_code is None:
            self.close_code = 1006

    def send(self, payload: bytes, opcode: int = 1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(payload, opcode))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(data[:end].decode(errors="replace")))
                self.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
            data = data[end + 4 :]
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, length = data[pos], data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            payload = data[pos + head : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                if b0 & 0x40 and self.inflater is not None:
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.on_text(self, payload)
            elif opcode == 9:
                self.send(payload, 10)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.close()
                return
        if pos < n:
            self.buffer = data[pos:]


async def open_sockets(
    port: int,
    count: int,
    path: str,
    subprotocol: str | None,
    on_text: Callable[[WSClient, bytes], None],
    batch: int = 250,
    deflate: bool = False,
) -> list[WSClient]:
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{port}"
    sockets: list[WSClient] = []

    async def one() -> WSClient:
        _, client = await loop.create_connection(
            lambda: WSClient(host, path, subprotocol, on_text, deflate), "127.0.0.1", port
        )
        await asyncio.wait_for(client.opened, 30)
        return client

    for start in range(0, count, batch):
        sockets.extend(await asyncio.gather(*(one() for _ in range(min(batch, count - start)))))
    return sockets


class HTTPClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; `request()` sends one request and waits
    for the whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1
        self.status = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            self.status = int(head[9:12])
            marker = head.find(b"content-length:")
            length = 0
            if marker >= 0:
                stop = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : stop if stop >= 0 else len(head)])
            self.buffer = self.buffer[end + 4 :]
            self.need = length
        if len(self.buffer) >= self.need:
            body, self.buffer = self.buffer[: self.need], self.buffer[self.need :]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self.status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def post(path: str, body: bytes, port: int, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def http_connection(port: int) -> HTTPClient:
    _, client = await asyncio.get_running_loop().create_connection(HTTPClient, "127.0.0.1", port)
    return client


async def closed_loop(
    port: int, raw: bytes, connections: int, duration: float
) -> tuple[list[float], int]:
    """Each connection sends `raw`, waits for the response, and again, for
    `duration` seconds. Returns the latencies (s) and the count of non-200s."""
    clients = [await http_connection(port) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def run(client: HTTPClient) -> None:
        nonlocal errors
        while (start := time.perf_counter()) < deadline:
            status, _ = await client.request(raw)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors += 1

    await asyncio.gather(*(run(c) for c in clients))
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return latencies, errors
