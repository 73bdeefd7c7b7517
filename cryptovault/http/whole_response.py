"""A whole response (status line, headers, body) in one write to uvicorn's connection.

Sent as ASGI messages, a response of one body is two `send` coroutines, each a dict
for uvicorn to read, and two writes to the socket: two system calls where one does.
`write_whole(send, status, headers, body)` does what uvicorn's httptools protocol
(`RequestResponseCycle.send`) does for `http.response.start` then
`http.response.body` (the default headers, the same header checks, the
`Connection: close` it adds when the connection is not kept alive, the response's
completion and what follows it), but writes the bytes at once. Only where those two
messages would be written without waiting or failing; otherwise it returns False,
having written and changed nothing, and the caller sends the messages.

It relies on the cycle's attributes and on what `send` does with them: only the
uvicorn module source it was checked against (uvicorn_headers.knows_uvicorn, the
SHA-256 of the whole module) is written to this way; with another uvicorn,
`write_whole` always declines and tests/test_uvicorn_headers.py fails until someone
checks it again.

    if not write_whole(send, 200, headers, body):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
"""

from __future__ import annotations

import functools
import types
from typing import Any

from starlette.types import Send

from cryptovault.http.uvicorn_headers import knows_uvicorn

__all__ = ["write_whole"]


@functools.cache
def _httptools() -> types.ModuleType | None:
    """uvicorn's httptools protocol module, if it is the one checked against."""
    if not knows_uvicorn():
        return None
    from uvicorn.protocols.http import httptools_impl

    return httptools_impl


def write_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Answer with `status`, `headers` and `body` in one write, as the two ASGI
    messages would: True once done. False, with nothing written, when `send` is not
    uvicorn's httptools cycle's own, or when the messages would wait (the transport
    paused), do nothing (the client gone), fail (a response already started, a bad
    header, a body that is not the Content-Length), log (uvicorn's access log) or
    frame the body (no Content-Length, HEAD, 1xx/204/304)."""
    cycle: Any = getattr(send, "__self__", None)
    httptools_impl = _httptools()
    if (
        cycle is None
        or httptools_impl is None
        or type(cycle) is not httptools_impl.RequestResponseCycle
    ):
        return False
    if (
        cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.access_log
        or cycle.chunked_encoding is not None
        or cycle.scope["method"] == "HEAD"
    ):
        return False
    header_re = httptools_impl.HEADER_RE
    value_re = httptools_impl.HEADER_VALUE_RE
    content = [httptools_impl.STATUS_LINE[status]]
    length: int | None = None
    keep_alive = cycle.keep_alive
    has_connection_close = False
    for name, value in cycle.default_headers + headers:
        if header_re.search(name) or value_re.search(value):
            return False  # send raises uvicorn's own error
        name = name.lower()
        if name == b"content-length":
            if length is None:
                length = int(value.decode())
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            return False
        elif name == b"connection" and b"close" in [
            token.lower().strip() for token in value.split(b",")
        ]:
            keep_alive = False
            has_connection_close = True
        content.append(name)
        content.append(b": ")
        content.append(value)
        content.append(b"\r\n")
    if length != len(body):
        return False
    if not keep_alive and not has_connection_close:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    content.append(body)
    # What send leaves behind after both messages.
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    cycle.keep_alive = keep_alive
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
