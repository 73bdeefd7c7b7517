"""Adversarial review of credential epochs, the held-back login and the 2FA brake
(commits 5c11a67 and a6bdc7a). Each test is a finding: it FAILS on the code under
review and should pass once the finding is fixed.

Races are forced as tests/test_credential_epochs.py does: one request is held at a
point of its own code (a monkeypatched gate), the other change runs to completion,
then the first is let go."""

from __future__ import annotations

import asyncio
import uuid

import argon2
import pytest

from cryptovault.documents.sessions import SessionDocument
from cryptovault.documents.users import UserDocument
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up
from tests.test_credential_epochs import (
    CREATE_KEY,
    Gate,
    _origin,
    _reset_token,
    new_email,
)

DELETE = "mutation($p: String!) { deleteMyAccount(password: $p) }"
RESET = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }"
EVENTS = "{ securityEvents(first: 50) { edges { node { action details } } } }"
PORTFOLIO_READ = "{ viewer { id role } }"


def _ok(body: dict) -> bool:
    return not body.get("errors")


# -- (a) a key created by a session authenticated before the promotion/deletion --------


async def _key_created_around(services, gql, monkeypatch, change) -> tuple[dict, str]:
    """createApiKey passes authentication (the session is valid), is held before the
    key service reads `key_epoch`, `change` ends every credential, then it goes on."""
    email = new_email("keyauth")
    member = await sign_up(gql, email)
    api_keys = services.api_keys
    real_create = api_keys.create
    gate = Gate()

    async def wait_then_create(*args, **kwargs):
        await gate.wait_here()
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(api_keys, "create", wait_then_create)
    creating = asyncio.create_task(gql.execute(CREATE_KEY, headers=bearer(member["accessToken"])))
    await asyncio.wait_for(gate.entered.wait(), 10)
    await change(email, member)
    gate.release.set()
    return await creating, email


async def test_probe_key_requested_by_a_session_authenticated_before_a_promotion_works(
    services, gql, monkeypatch
):
    """The registrant's createApiKey is authenticated a moment before the operator
    promotes the account. `ApiKeys.create` reads `key_epoch` *after* the promotion's
    write, so the key carries the new epoch: a working key (portfolio:read) on an
    ADMIN account, created by the registrant whose everything was to be taken away."""

    async def promote(email, _member):
        await services.identity.create_admin(email, None, promote_existing=True)

    body, _ = await _key_created_around(services, gql, monkeypatch, promote)
    if not _ok(body):
        return  # refused outright: fine
    key = body["data"]["createApiKey"]["key"]
    answer = await gql.execute(PORTFOLIO_READ, headers={"X-API-Key": key})
    assert not _ok(answer), f"registrant's key works on the promoted admin account: {answer}"


async def test_probe_key_requested_by_a_session_authenticated_before_deletion_works(
    services, gql, monkeypatch
):
    """Same gap with deleteMyAccount: a key whose request was authenticated before
    the deletion keeps working on the deleted (anonymised) account."""

    async def delete(_email, member):
        done = await gql.execute(DELETE, {"p": PASSWORD}, headers=bearer(member["accessToken"]))
        assert done["data"]["deleteMyAccount"] is True, done

    body, _ = await _key_created_around(services, gql, monkeypatch, delete)
    if not _ok(body):
        return
    key = body["data"]["createApiKey"]["key"]
    answer = await gql.execute(PORTFOLIO_READ, headers={"X-API-Key": key})
    assert not _ok(answer), f"a key of the deleted account works: {answer}"


# -- (a) login's rehash write is unconditional -----------------------------------------


async def _legacy_hash(email: str) -> None:
    """The account's hash made with other Argon2 parameters (an upgrade of
    ARGON2_* since it was set), so the next login rehashes it."""
    old = argon2.PasswordHasher(time_cost=2, memory_cost=512, parallelism=1, type=argon2.Type.ID)
    await UserDocument.get_pymongo_collection().update_one(
        {"email": email}, {"$set": {"password_hash": old.hash(PASSWORD)}}
    )


async def _login_held_after_verify(services, gql, monkeypatch, email: str):
    hasher = services.identity.hasher
    real_verify = hasher.verify
    gate = Gate()

    async def verify_then_wait(stored: str, password: str) -> bool:
        matched = await real_verify(stored, password)
        if password == PASSWORD and not gate.release.is_set():
            await gate.wait_here()
        return matched

    monkeypatch.setattr(hasher, "verify", verify_then_wait)
    login = asyncio.create_task(log_in(gql, email, PASSWORD))
    await asyncio.wait_for(gate.entered.wait(), 10)
    return login, gate


async def test_probe_a_racing_login_rehash_undoes_a_password_reset(services, gql, monkeypatch):
    """The owner resets a leaked password while the thief logs in with it. The
    thief's session is dead (epoch), but the login then writes
    `password_hash = hash(old password)` unconditionally (the rehash after an Argon2
    parameter change): the reset is undone and the leaked password signs in again."""
    email = new_email("rehash-reset")
    user_id = (await sign_up(gql, email))["user"]["id"]
    await _legacy_hash(email)
    login, gate = await _login_held_after_verify(services, gql, monkeypatch, email)
    token = "reset-" + uuid.uuid4().hex
    await _reset_token(user_id, token)
    await services.identity.reset_password(token, "the owner's new passphrase", _origin())
    gate.release.set()
    await login
    monkeypatch.undo()
    again = await log_in(gql, email, PASSWORD)
    assert error_codes(again) == ["UNAUTHENTICATED"], (
        f"the leaked password works again after the reset: {again}"
    )
    assert _ok(await log_in(gql, email, "the owner's new passphrase"))


async def test_probe_a_racing_login_rehash_restores_the_registrants_password_on_an_admin(
    services, gql, monkeypatch
):
    """`create-admin --promote-existing` replaces the registrant's password with an
    unusable one; a registrant's login racing it (with a hash due for rehash) writes
    the registrant's password back, onto what is now an ADMIN account."""
    email = new_email("rehash-promote")
    await sign_up(gql, email)
    await _legacy_hash(email)
    login, gate = await _login_held_after_verify(services, gql, monkeypatch, email)
    await services.identity.create_admin(email, None, promote_existing=True)
    gate.release.set()
    await login
    monkeypatch.undo()
    again = await log_in(gql, email, PASSWORD)
    assert not _ok(again), f"the registrant signs in to the promoted admin account: {again}"


# -- (a) deletion does not void pending reset tokens -----------------------------------


# -- (d) the 2FA brake is check-then-record ---------------------------------------------


# -- (c) held back: the verdict leaks through what is recorded --------------------------


# -- (b)/(e) the kept session is refused while its own change is under way -------------


pytestmark = pytest.mark.usefixtures("services")


# -- (d) the session a password change came from, checked while that change runs ------


async def test_a_key_asked_for_by_the_session_changing_its_password_is_not_refused(
    services, gql, monkeypatch
):
    """createApiKey from session S reads S and the account; S changes the password in
    between (which keeps S: `kept_session`, then S moves to the new epoch). Whichever
    read comes first, S must still be judged valid: it is the kept session."""
    email = new_email("kept")
    member = await sign_up(gql, email)
    headers = bearer(member["accessToken"])
    collections = {
        "users": UserDocument.get_pymongo_collection,
        "sessions": SessionDocument.get_pymongo_collection,
    }
    armed = True

    class ChangeAfterFirstRead:
        def __init__(self, real) -> None:
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        async def find_one(self, *args, **kwargs):
            nonlocal armed
            found = await self.real.find_one(*args, **kwargs)
            if armed:
                armed = False  # the change's own reads and writes go straight through
                changed = await gql.execute(
                    "mutation($c: String!, $n: String!) "
                    "{ changePassword(currentPassword: $c, newPassword: $n) }",
                    {"c": PASSWORD, "n": "another long password"},
                    headers=headers,
                )
                assert _ok(changed), changed
            return found

    def wrapped(name):
        return classmethod(lambda cls: ChangeAfterFirstRead(collections[name]()))

    original_create = services.api_keys.create

    async def create_with_hook(*args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(UserDocument, "get_pymongo_collection", wrapped("users"))
            patch.setattr(SessionDocument, "get_pymongo_collection", wrapped("sessions"))
            return await original_create(*args, **kwargs)

    monkeypatch.setattr(services.api_keys, "create", create_with_hook)
    body = await gql.execute(CREATE_KEY, headers=headers)
    assert not armed  # the change ran between the two reads
    assert _ok(body), body
    # ... and S still works after its own change.
    assert _ok(await gql.execute(PORTFOLIO_READ, headers=headers))


class _ChangeBetweenReads:
    """Makes one authentication read the account, then lets a password change from
    the same session run to completion, then read the session: the two reads
    straddle the change, in the order that used to refuse the changing session."""

    def __init__(self, monkeypatch, change) -> None:
        from cryptovault.security import authenticator

        self.change = change
        self.changed = asyncio.Event()
        self.armed = {"users": True, "sessions": True}
        real = {"users": authenticator._users, "sessions": authenticator._sessions}
        for name in real:
            monkeypatch.setattr(authenticator, f"_{name}", self._collection(name, real[name]))

    def _collection(self, name, real):
        hook = self

        class Held:
            def __init__(self) -> None:
                self.real = real()

            def __getattr__(self, attribute):
                return getattr(self.real, attribute)

            def find_one(self, *args, **kwargs):
                return hook._read(name, self.real.find_one, *args, **kwargs)

            def find(self, *args, **kwargs):
                return hook._cursor(name, self.real.find(*args, **kwargs))

        return Held

    async def _read(self, name, read, *args, **kwargs):
        if not self.armed[name]:
            return await read(*args, **kwargs)
        self.armed[name] = False
        if name == "sessions":
            await self.changed.wait()
            return await read(*args, **kwargs)
        found = await read(*args, **kwargs)
        await self.change()
        self.changed.set()
        return found

    def _cursor(self, name, cursor):
        hook = self

        class Cursor:
            def __aiter__(self):
                return self._rows().__aiter__()

            async def _rows(self):
                rows = [r async for r in cursor] if not hook.armed[name] else None
                if rows is None:
                    hook.armed[name] = False
                    if name == "sessions":
                        await hook.changed.wait()
                        rows = [r async for r in cursor]
                    else:
                        rows = [r async for r in cursor]
                        await hook.change()
                        hook.changed.set()
                for row in rows:
                    yield row

        return Cursor()


async def test_a_session_is_not_refused_while_its_own_password_change_runs(
    services, gql, monkeypatch
):
    """A request of session S reads the account, S changes the password meanwhile
    (S is kept, then moved to the new epoch), then the request reads S: S is valid
    throughout, so the request passes; and so does a socket's recheck of S."""
    for path in ("recheck", "request"):
        email = new_email(f"own-change-{path}")
        member = await sign_up(gql, email)
        headers = bearer(member["accessToken"])

        async def change(headers: dict = headers) -> None:
            body = await gql.execute(
                "mutation($c: String!, $n: String!) "
                "{ changePassword(currentPassword: $c, newPassword: $n) }",
                {"c": PASSWORD, "n": "another long password"},
                headers=headers,
            )
            assert _ok(body), body

        with monkeypatch.context() as patch:
            hook = _ChangeBetweenReads(patch, change)
            if path == "request":
                body = await gql.execute(PORTFOLIO_READ, headers=headers)
                assert _ok(body), body
            else:
                viewer = (await services.authenticator.revalidate([_viewer_of(member)]))[0]
                assert not isinstance(viewer, Exception), viewer
            assert hook.changed.is_set()


def _viewer_of(member: dict):
    import jwt

    from cryptovault.security.viewer import Viewer

    claims = jwt.decode(member["accessToken"], options={"verify_signature": False})
    return Viewer(
        user_id=claims["sub"],
        role="USER",
        scopes=None,
        frozen=False,
        session_id=claims["sid"],
        expires_at=None,
        token_id=claims["jti"],
    )
