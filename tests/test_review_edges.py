"""Adversarial review (rev2): what held up in c34beb3, 0870850 and a9e9452."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC

import pytest
from starlette.requests import Request

from cryptovault import middleware
from cryptovault.market import service as market_service
from cryptovault.resolvers.context import Context
from cryptovault.security.authenticator import TokenAuthenticator

HEADER_SETS = [
    [],
    [(b"cookie", b"refresh_token=abc; access_token=x")],
    [(b"Authorization", b"Bearer x")],  # not ASGI (names are lowercase): unread by both
    [(b"X-API-Key", b"cv_x")],
    [(b"apikey", b"cv_x")],  # the websocket payload's name only
    [(b"proxy-authorization", b"Basic x")],
]


@pytest.mark.parametrize("headers", HEADER_SETS)
async def test_anonymous_only_when_authenticate_reads_no_credential(headers):
    authenticator = TokenAuthenticator.__new__(TokenAuthenticator)
    request = Request({"type": "http", "headers": headers, "method": "POST", "path": "/"})
    assert authenticator.anonymous(request)
    assert await authenticator.authenticate(request) is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"")],
        [(b"x-api-key", b"")],
        [(b"authorization", b"Bearer x"), (b"authorization", b"")],
        [(b"x-api-key", b""), (b"authorization", b"Bearer x")],
    ],
)
def test_any_credential_header_goes_to_authenticate(headers):
    authenticator = TokenAuthenticator.__new__(TokenAuthenticator)
    request = Request({"type": "http", "headers": headers, "method": "POST", "path": "/"})
    assert not authenticator.anonymous(request)


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "::ffff:10.0.0.1", "2001:db8:1:2::5", "2001:db8:1:2:ffff::1", "testclient", None],
)
def test_the_anonymous_budget_key_is_client_keys(host):
    scope = {"type": "http", "headers": [], "client": (host, 1) if host else None}
    context = Context(services=None, request=Request(scope))  # type: ignore[arg-type]
    assert context.budget_key == f"ip:{context.client_key}"


def test_request_ids_are_uuid4_across_batches_and_threads():
    ids: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [middleware.new_request_id() for _ in range(2000)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == len(ids) == 8000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_reuse_the_parents_ids():
    middleware.new_request_id()  # a batch under way
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, middleware.new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child not in set(middleware._ids) | {middleware.new_request_id()}


def test_the_market_clock_is_aware_utc_and_not_frozen():
    first = market_service._utc_now()
    assert first.tzinfo is UTC
    assert market_service._utc_now() >= first
