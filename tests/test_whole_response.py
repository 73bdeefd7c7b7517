"""A direct route's answer in one write to uvicorn's connection
(cryptovault/http/whole_response.py): the bytes and the state uvicorn's own `send`
of the two messages would leave, or nothing at all."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from cryptovault.app import create_app
from cryptovault.http.whole_response import write_whole
from tests.conftest import serving

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle(method: str = "POST", keep_alive: bool = True) -> tuple[RequestResponseCycle, list[int]]:
    transport = Transport()
    done: list[int] = []
    logger = logging.getLogger("test.whole")
    return (
        RequestResponseCycle(
            scope={"type": "http", "method": method, "path": "/", "http_version": "1.1"},  # type: ignore[typeddict-item]
            transport=transport,  # type: ignore[arg-type]
            flow=FlowControl(transport),  # type: ignore[arg-type]
            logger=logger,
            access_logger=logger,
            access_log=False,
            default_headers=[(b"server", b"uvicorn"), (b"date", b"Sun, 06 Dec 2026 06:00:00 GMT")],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=lambda: done.append(1),
        ),
        done,
    )


def state(c: RequestResponseCycle, done: list[int]) -> dict[str, Any]:
    return {
        "written": b"".join(c.transport.writes),  # type: ignore[attr-defined]
        "closed": c.transport.closed,  # type: ignore[attr-defined]
        "started": c.response_started,
        "complete": c.response_complete,
        "keep_alive": c.keep_alive,
        "chunked": c.chunked_encoding,
        "expected": c.expected_content_length,
        "event": c.message_event.is_set(),
        "on_response": len(done),
    }


async def sent_by_uvicorn(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
) -> dict[str, Any]:
    c, done = cycle(keep_alive=keep_alive)
    await c.send({"type": "http.response.start", "status": status, "headers": headers})
    await c.send({"type": "http.response.body", "body": body})
    return state(c, done)


NAMES = st.sampled_from([b"content-type", b"x-request-id", b"Connection", b"vary", b"x-a"])
VALUES = st.sampled_from([b"application/json", b"close", b"keep-alive, Close", b"Origin", b"1"])


@hypothesis.given(
    status=st.sampled_from([200, 400, 413, 429, 500]),
    extra=st.lists(st.tuples(NAMES, VALUES), max_size=5),
    body=st.binary(max_size=200),
    keep_alive=st.booleans(),
)
async def test_the_whole_response_is_what_uvicorns_send_writes_and_leaves(
    status, extra, body, keep_alive
):
    headers = [(b"content-length", str(len(body)).encode()), *extra]
    c, done = cycle(keep_alive=keep_alive)
    assert write_whole(c.send, status, list(headers), body)
    assert len(c.transport.writes) == 1  # type: ignore[attr-defined]
    assert state(c, done) == await sent_by_uvicorn(status, list(headers), body, keep_alive)


def _paused(c: RequestResponseCycle) -> None:
    c.flow.write_paused = True


def _started(c: RequestResponseCycle) -> None:
    c.response_started = True


def _gone(c: RequestResponseCycle) -> None:
    c.disconnected = True


def _logged(c: RequestResponseCycle) -> None:
    c.access_log = True


OK = [(b"content-length", b"2"), (b"content-type", b"application/json")]
DECLINED: dict[str, tuple[Any, str, list[tuple[bytes, bytes]], bytes]] = {
    "transport paused": (_paused, "POST", OK, b"{}"),
    "response started": (_started, "POST", OK, b"{}"),
    "client gone": (_gone, "POST", OK, b"{}"),
    "uvicorn's access log": (_logged, "POST", OK, b"{}"),
    "HEAD": (None, "HEAD", OK, b"{}"),
    "no content-length": (None, "POST", OK[1:], b"{}"),
    "body longer": (None, "POST", OK, b"{}!"),
    "body shorter": (None, "POST", OK, b"{"),
    "chunked": (None, "POST", [*OK, (b"transfer-encoding", b"chunked")], b"{}"),
    "bad header name": (None, "POST", [*OK, (b"x y", b"1")], b"{}"),
    "bad header value": (None, "POST", [*OK, (b"x-y", b"1\r\nset-cookie: a=b")], b"{}"),
}


@pytest.mark.parametrize("condition", list(DECLINED))
def test_it_declines_with_nothing_written_or_changed(condition):
    change, method, headers, body = DECLINED[condition]
    c, done = cycle(method)
    if change is not None:
        change(c)
    before = state(c, done)
    assert not write_whole(c.send, 200, headers, body)
    assert state(c, done) == before


def test_it_declines_for_a_send_that_is_not_uvicorns_cycles_own():
    c, done = cycle()

    async def wrapped(message: Any) -> None:  # a layer between the server and the app
        await c.send(message)

    assert not write_whole(wrapped, 200, OK, b"{}")
    assert state(c, done)["written"] == b""


# -- on a real server ---------------------------------------------------------------------

PING = b'{"query":"{ ping }"}'


def request(close: bool = False) -> bytes:
    return (
        b"POST /graphql HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        + (b"connection: close\r\n" if close else b"")
        + b"content-length: %d\r\n\r\n" % len(PING)
        + PING
    )


async def read_responses(reader: asyncio.StreamReader, n: int) -> list[tuple[bytes, bytes]]:
    """n responses: (head, body), by their Content-Length."""
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        out.append((head, await asyncio.wait_for(reader.readexactly(length), WAIT)))
    return out


def _without_varying(head: bytes) -> list[bytes]:
    return [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith(
            (b"date:", b"x-request-id:", b"x-ratelimit-reset:", b"ratelimit:")
        )
    ]


async def test_pipelined_requests_are_answered_in_one_write_each_as_by_messages(
    settings, services, monkeypatch
):
    """Three pipelined `{ ping }`s on one connection, then one with Connection: close:
    every answer arrives whole and in order, the last closes the connection, and the
    bytes are those of the two-message answer but for Date, X-Request-ID and the
    budget's reset time. (The
    first is a new document: Strawberry's view answers it, as messages.)"""
    written: list[bool] = []

    def recorded(*args: Any) -> bool:
        written.append(write_whole(*args))
        return written[-1]

    async def exchange() -> list[tuple[bytes, bytes]]:
        app = create_app(settings, services)
        async with serving(app, http="httptools") as (address, _):
            host, port = address.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request() * 3 + request(close=True))
            answers = await read_responses(reader, 4)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed
            writer.close()
            return answers

    monkeypatch.setattr("cryptovault.app.write_whole", recorded)
    whole = await exchange()
    assert written == [True] * 3
    monkeypatch.setattr("cryptovault.app.write_whole", lambda *args: False)
    by_messages = await exchange()
    assert all(body.startswith(b'{"data":{"ping":"pong"}') for _, body in whole)
    assert [body for _, body in by_messages] == [body for _, body in whole]
    assert [_without_varying(h) for h, _ in whole] == [_without_varying(h) for h, _ in by_messages]
    assert b"connection: close" in whole[-1][0] and b"connection: close" not in whole[0][0]


def test_cryptovault_serve_leaves_the_access_log_to_the_edge(settings):
    """uvicorn's access log is off (the edge logs every request with its id), so
    direct answers can go in one write."""
    from cryptovault.cli import connection_options

    assert connection_options(settings)["access_log"] is False
