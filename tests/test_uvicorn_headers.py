"""uvicorn's response header checks, run once per distinct header
(cryptovault/http/uvicorn_headers.py): the same answers as uvicorn's own, a header
that fails is refused every time, and the shortcut is pinned to uvicorn's source."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from cryptovault.http import uvicorn_headers
from cryptovault.http.uvicorn_headers import ValidatedOnce, knows_uvicorn, validate_headers_once
from tests.conftest import serving


def test_the_shortcut_is_pinned_to_uvicorns_send():
    # Fails after a uvicorn upgrade: check that httptools_impl still only asks
    # HEADER_RE / HEADER_VALUE_RE whether a header matched (RequestResponseCycle.send),
    # then update UVICORN_HTTPTOOLS_SHA256.
    assert knows_uvicorn(), "uvicorn's RequestResponseCycle.send changed: check it again"


def test_remembered_values_pass_and_failing_ones_fail_every_time(monkeypatch):
    monkeypatch.setattr(uvicorn_headers, "REMEMBERED", 3)
    checks = ValidatedOnce(httptools_impl.HEADER_VALUE_RE)
    stock = ValidatedOnce(httptools_impl.HEADER_VALUE_RE).pattern
    values = [b"nosniff", b"no-store", b"a\nb", b"x\x00", b"ok", b"nosniff", b"4", b"a\nb"]
    for _ in range(3):
        for value in values:
            assert bool(checks.search(value)) == bool(stock.search(value)), value
    assert b"a\nb" not in checks.valid and b"x\x00" not in checks.valid
    assert len(checks.valid) <= 3
    mutable = bytearray(b"fine")
    assert checks.search(mutable) is None and mutable not in [bytearray(v) for v in checks.valid]


def test_a_value_seen_once_is_kept_only_as_its_hash():
    # A cookie with a refresh token goes out once: its bytes must not stay in memory.
    wrapped = httptools_impl.HEADER_VALUE_RE
    checks = ValidatedOnce(wrapped.pattern if isinstance(wrapped, ValidatedOnce) else wrapped)
    token = b"refresh_token=eyJhbGciOiJIUzI1NiJ9.secret; HttpOnly; Secure; SameSite=Strict"
    assert checks.search(token) is None and token not in checks.valid
    assert checks.search(token) is None and token in checks.valid  # the second time


async def test_uvicorn_still_refuses_a_bad_header_after_good_ones(caplog):
    assert validate_headers_once() and validate_headers_once()  # idempotent
    assert isinstance(httptools_impl.HEADER_VALUE_RE, ValidatedOnce)
    assert isinstance(
        httptools_impl.HEADER_VALUE_RE.pattern, type(httptools_impl.HEADER_RE.pattern)
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        value = b"bad\r\nInjected: 1" if scope["path"] == "/bad" else b"good"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-v", value)]})
        await send({"type": "http.response.body", "body": b"body"})

    async with serving(app, http="httptools") as (address, _):
        host, port = address.split(":")

        async def fetch(path: str) -> bytes:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            return answer

        for path in ("/good", "/bad", "/good", "/bad"):
            answer = await fetch(path)
            if path == "/good":
                assert answer.startswith(b"HTTP/1.1 200") and b"x-v: good" in answer
            else:  # uvicorn refuses to write it: the connection closes, nothing sent
                assert answer == b""
    refused = [
        r
        for r in caplog.records
        if r.exc_info and "Invalid HTTP header value" in str(r.exc_info[1])
    ]
    assert len(refused) == 2


@pytest.mark.parametrize("pattern", ["HEADER_RE", "HEADER_VALUE_RE"])
def test_the_checks_answer_as_uvicorns_patterns_for_every_byte(pattern):
    wrapped = getattr(httptools_impl, pattern)
    stock = wrapped.pattern if isinstance(wrapped, ValidatedOnce) else wrapped
    checks = ValidatedOnce(stock)
    for byte in range(256):
        value = b"a" + bytes([byte]) + b"z"
        for _ in range(2):
            assert bool(checks.search(value)) == bool(stock.search(value)), (pattern, byte)
