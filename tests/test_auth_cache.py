"""The authentication cache (security/authcache.py): a repeated authenticated request
reads nothing from the store; a change of credentials applies at once on the instance
that made it and, through the bus, on every other; a read that raced a change never
puts the old state back; whatever happens to messages, the cache is used for at most
AUTH_CACHE_SECONDS."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from datetime import timedelta
from typing import Any

import pytest

from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.security import authenticator as authenticator_module
from cryptovault.security.authcache import AuthCache
from cryptovault.services import Services
from tests.conftest import (
    PASSWORD,
    bearer,
    error_codes,
    log_in,
    sign_up,
)

PING = "{ ping }"
VIEWER = "{ viewer { id } }"
LOGOUT = "mutation { logout }"
CHANGE_PASSWORD = (
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }"
)
FREEZE = "mutation($id: ID!, $r: String!) { freezeUser(id: $id, reason: $r) { id frozen } }"
CREATE_KEY = 'mutation { createApiKey(name: "bot", scopes: [MARKET_READ]) { key apiKey { id } } }'
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
# Where authentication reads.
AUTH_COLLECTIONS = ("users", "sessions", "revoked_tokens", "api_keys")
WAIT = 10.0


def reason(body: dict[str, Any]) -> str | None:
    assert error_codes(body) == ["UNAUTHENTICATED"], body
    return body["errors"][0]["extensions"].get("reason")


def cache_of(services: Services) -> AuthCache:
    return services.api_keys.cache


@contextlib.contextmanager
def bus_held_back(services: Services, monkeypatch: pytest.MonkeyPatch):
    """Messages published meanwhile are kept and delivered on leaving: what this
    instance does at once must not wait for the bus."""
    held: list[tuple[str, dict[str, Any]]] = []
    real = services.bus.publish

    async def hold(channel: str, message: dict[str, Any]) -> None:
        held.append((channel, message))

    monkeypatch.setattr(services.bus, "publish", hold)
    yield held
    monkeypatch.setattr(services.bus, "publish", real)


async def release(services: Services, held: list[tuple[str, dict[str, Any]]]) -> None:
    for channel, message in held:
        await services.bus.publish(channel, message)


# -- no store reads -------------------------------------------------------------------


async def test_a_repeated_request_with_a_token_or_a_key_reads_nothing_from_the_store(
    gql, services, commands
):
    owner = await sign_up(gql)

    async def twice_then_thrice(headers: dict[str, str]) -> None:
        commands.only_this_task()
        commands.reset()
        assert (await gql.data(PING, headers=headers))["ping"] == "pong"
        # The first use reads the credential (and a key's first use is recorded).
        assert commands.on(*AUTH_COLLECTIONS)
        commands.reset()
        for _ in range(3):
            assert (await gql.data(PING, headers=headers))["ping"] == "pong"
        assert commands.commands == []

    await twice_then_thrice(bearer(owner["accessToken"]))
    key = (await gql.data(CREATE_KEY, headers=bearer(owner["accessToken"])))["createApiKey"]
    await twice_then_thrice({"X-API-Key": key["key"]})


async def test_the_sessions_last_use_is_still_written_at_most_once_a_minute(
    gql, services, commands, monkeypatch
):
    owner = await sign_up(gql)
    headers = bearer(owner["accessToken"])
    await gql.data(PING, headers=headers)
    session_id = services.identity.tokens.decode(owner["accessToken"]).session_id
    started = (await SessionDocument.get(session_id)).last_used_at
    later = started + timedelta(minutes=2)
    monkeypatch.setattr(authenticator_module, "now_ms", lambda: later)
    commands.only_this_task()
    commands.reset()
    for _ in range(3):
        await gql.data(PING, headers=headers)
    # One write for the three requests, no read.
    assert commands.on(*AUTH_COLLECTIONS) == ["update"]
    assert (await SessionDocument.get(session_id)).last_used_at == later


# -- changes apply at once ------------------------------------------------------------


async def test_logout_refuses_the_cached_token_at_once(gql, services, monkeypatch):
    owner = await sign_up(gql)
    headers = bearer(owner["accessToken"])
    await gql.data(VIEWER, headers=headers)
    assert cache_of(services).keys_of(owner["user"]["id"])
    with bus_held_back(services, monkeypatch) as held:
        assert (await gql.data(LOGOUT, headers=headers))["logout"] is True
        assert reason(await gql.execute(VIEWER, headers=headers)) == "TOKEN_REVOKED"
    await release(services, held)


async def test_a_password_change_refuses_the_other_cached_sessions_at_once(
    gql, services, monkeypatch
):
    email = f"cache-{uuid.uuid4().hex[:8]}@example.com"
    first = await sign_up(gql, email)
    second = (await log_in(gql, email))["data"]["login"]
    for signed_in in (first, second):
        await gql.data(VIEWER, headers=bearer(signed_in["accessToken"]))
    with bus_held_back(services, monkeypatch) as held:
        changed = await gql.data(
            CHANGE_PASSWORD,
            {"c": PASSWORD, "n": "another long passphrase"},
            headers=bearer(first["accessToken"]),
        )
        assert changed["changePassword"] is True
        body = await gql.execute(VIEWER, headers=bearer(second["accessToken"]))
        assert reason(body) == "SESSION_REVOKED"
        # The session it was changed from goes on.
        assert (await gql.data(VIEWER, headers=bearer(first["accessToken"])))["viewer"]
    await release(services, held)


async def test_an_admin_freeze_applies_to_the_cached_session_at_once(gql, services, monkeypatch):
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await services.identity.create_admin(email, PASSWORD)
    admin = bearer((await log_in(gql, email))["data"]["login"]["accessToken"])
    owner = await sign_up(gql)
    headers = bearer(owner["accessToken"])
    await gql.data(VIEWER, headers=headers)
    with bus_held_back(services, monkeypatch) as held:
        await gql.data(FREEZE, {"id": owner["user"]["id"], "r": "review"}, headers=admin)
        # createApiKey is refused on the viewer's freeze alone (no read of its own).
        assert error_codes(await gql.execute(CREATE_KEY, headers=headers)) == ["FORBIDDEN"]
    await release(services, held)


async def test_a_revoked_key_is_refused_at_once(gql, services, monkeypatch):
    owner = await sign_up(gql)
    key = (await gql.data(CREATE_KEY, headers=bearer(owner["accessToken"])))["createApiKey"]
    await gql.data(VIEWER, headers={"X-API-Key": key["key"]})
    assert len(cache_of(services).keys_of(owner["user"]["id"])) == 2  # the token, the key
    with bus_held_back(services, monkeypatch) as held:
        await gql.data(
            REVOKE_KEY, {"id": key["apiKey"]["id"]}, headers=bearer(owner["accessToken"])
        )
        body = await gql.execute(VIEWER, headers={"X-API-Key": key["key"]})
        assert reason(body) == "API_KEY_REVOKED"
    await release(services, held)


# -- a read racing a change -----------------------------------------------------------

_HELD: contextvars.ContextVar[bool] = contextvars.ContextVar("held", default=False)


class _Gate:
    """Holds the three reads of one request (those made in a `_HELD` context) once
    all three have their answer: between the store read and the cache fill."""

    def __init__(self) -> None:
        self.arrived = 0
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def passing(self, answer: Any) -> Any:
        if _HELD.get():
            self.arrived += 1
            if self.arrived == 3:
                self.reached.set()
            await self.release.wait()
        return answer


class _GatedCollection:
    def __init__(self, collection: Any, gate: _Gate) -> None:
        self.collection, self.gate = collection, gate

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self.gate.passing(await self.collection.find_one(*args, **kwargs))


async def test_a_read_that_raced_a_logout_does_not_fill_the_cache(gql, services, monkeypatch):
    owner = await sign_up(gql)
    headers = bearer(owner["accessToken"])
    gate = _Gate()
    users, sessions = authenticator_module._users, authenticator_module._sessions
    monkeypatch.setattr(authenticator_module, "_users", lambda: _GatedCollection(users(), gate))
    monkeypatch.setattr(
        authenticator_module, "_sessions", lambda: _GatedCollection(sessions(), gate)
    )
    store = services.identity.sessions
    blacklisted = store.is_blacklisted

    async def is_blacklisted(token_id: str) -> bool:
        return await gate.passing(await blacklisted(token_id))

    monkeypatch.setattr(store, "is_blacklisted", is_blacklisted)

    async def held_request() -> dict:
        _HELD.set(True)
        return await gql.execute(VIEWER, headers=headers)

    held = asyncio.create_task(held_request())
    async with asyncio.timeout(WAIT):
        await gate.reached.wait()
    # Read before the logout: the token was still good. The logout's own request
    # reads (and may fill) too, then the logout drops what is kept.
    assert (await gql.data(LOGOUT, headers=headers))["logout"] is True
    gate.release.set()
    answer = await held
    assert answer["data"]["viewer"]["id"] == owner["user"]["id"]  # it started in time
    assert cache_of(services).keys_of(owner["user"]["id"]) == frozenset()
    assert reason(await gql.execute(VIEWER, headers=headers)) == "TOKEN_REVOKED"


def test_a_fill_is_refused_after_an_invalidation_of_its_user_or_a_clear():
    cache = AuthCache(max_age=30)
    ticket = cache.ticket()
    cache.invalidate("someone else")
    assert cache.put("t:1", "alice", "state", ticket)
    ticket = cache.ticket()
    cache.invalidate("alice")
    assert not cache.put("t:2", "alice", "state", ticket)
    ticket = cache.ticket()
    cache.clear()  # a bus reconnect: messages may have been lost
    assert not cache.put("t:2", "bob", "state", ticket)
    assert cache.get("t:2") is None


# -- max age, bound -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_entry_is_used_for_at_most_max_age_even_if_no_message_comes(
    gql, services, monkeypatch
):
    cache = cache_of(services)
    clock = FakeClock()
    monkeypatch.setattr(cache, "clock", clock)
    owner = await sign_up(gql)
    headers = bearer(owner["accessToken"])
    await gql.data(VIEWER, headers=headers)
    # Revoked behind the bus's back: no audit entry, so no message.
    session_id = services.identity.tokens.decode(owner["accessToken"]).session_id
    await SessionDocument.get_pymongo_collection().update_one(
        {"_id": session_id}, {"$set": {"revoked_at": now_ms()}}
    )
    clock.now += cache.max_age - 0.001
    assert (await gql.data(VIEWER, headers=headers))["viewer"]["id"] == owner["user"]["id"]
    clock.now += 0.001
    assert reason(await gql.execute(VIEWER, headers=headers)) == "SESSION_REVOKED"


def test_the_cache_keeps_at_most_max_entries_dropping_the_least_recently_used():
    cache = AuthCache(max_age=30, max_entries=3)
    for n in range(3):
        assert cache.put(f"t:{n}", f"user-{n}", n, cache.ticket())
    assert cache.get("t:0") == 0  # used: now the most recent
    assert cache.put("t:3", "user-3", 3, cache.ticket())
    assert len(cache) == 3
    assert cache.get("t:1") is None
    assert cache.keys_of("user-1") == frozenset()
    assert [cache.get(f"t:{n}") for n in (0, 2, 3)] == [0, 2, 3]
