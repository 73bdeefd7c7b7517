"""Accounts and sign-in: registration rules, login, password hashing, password change
and reset (throttling: test_lockout)."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cryptovault.config import Settings, load_settings
from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.users import LoginAttemptDocument, PasswordResetDocument, UserDocument
from cryptovault.security.passwords import RFC9106_LOW_MEMORY, Argon2Profile, PasswordHasher
from tests.conftest import PASSWORD, REGISTER, bearer, error_codes, log_in, sign_up

VIEWER = "{ viewer { id email role twoFactorEnabled frozen createdAt } }"


def new_email(tag: str) -> str:
    import uuid

    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


# -- registration ------------------------------------------------------------------------


async def test_register_normalizes_the_email_and_signs_in(gql_at):
    gql = gql_at()
    payload = await sign_up(gql, email="  Alice.Register@Example.COM ")
    assert payload["user"]["email"] == "alice.register@example.com"
    assert payload["user"]["role"] == "USER"
    assert payload["refreshToken"] and payload["accessToken"].count(".") == 2
    me = await gql.data(VIEWER, headers=bearer(payload["accessToken"]))
    assert me["viewer"]["id"] == payload["user"]["id"]


async def test_the_same_email_in_another_case_is_a_conflict(gql_at):
    gql = gql_at()
    await sign_up(gql, email="dup@example.com")
    body = await gql.execute(
        REGISTER, {"input": {"email": " DUP@example.com", "password": PASSWORD}}
    )
    assert error_codes(body) == ["CONFLICT"]
    assert await UserDocument.find({"email": "dup@example.com"}).count() == 1


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("short@example.com", "x" * 9, "password"),
        ("long@example.com", "x" * 129, "password"),
        ("caroline@example.com", "my-Caroline-pass", "password"),
        ("not-an-email", PASSWORD, "email"),
        ("two@@example.com", PASSWORD, "email"),
    ],
)
async def test_registration_rules_are_bad_user_input(gql_at, email, password, field):
    body = await gql_at().execute(REGISTER, {"input": {"email": email, "password": password}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == field
    assert await UserDocument.find({"email": email.strip().lower()}).count() == 0


async def test_passwords_of_exactly_10_and_128_characters_are_accepted(gql_at):
    gql = gql_at()
    await sign_up(gql, password="a" * 10)
    await sign_up(gql, password="b" * 128)


async def test_an_oversized_password_is_refused_without_hashing(gql_at, verify_calls):
    gql = gql_at()
    email = new_email("huge")
    await sign_up(gql, email)
    verify_calls.clear()
    for address in (email, new_email("nobody")):
        body = await log_in(gql, address, "x" * 20_000)
        assert error_codes(body) == ["UNAUTHENTICATED"]
        assert body["errors"][0]["message"] == "Invalid email or password"
    assert verify_calls == []


async def test_passwords_are_stored_as_argon2id_hashes(gql_at):
    payload = await sign_up(gql_at())
    user = await UserDocument.get(payload["user"]["id"])
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


# -- login -------------------------------------------------------------------------------


async def test_login_returns_tokens_that_identify_the_user(gql_at):
    gql = gql_at()
    email = new_email("login")
    registered = await sign_up(gql, email)
    body = await log_in(gql, email.upper())
    assert not body.get("errors"), body
    payload = body["data"]["login"]
    assert payload["user"]["id"] == registered["user"]["id"]
    me = await gql.data(VIEWER, headers=bearer(payload["accessToken"]))
    assert me["viewer"]["email"] == email


async def test_unknown_email_and_wrong_password_fail_alike_and_both_run_argon2(
    gql_at, verify_calls
):
    gql = gql_at()
    email = new_email("alike")
    await sign_up(gql, email)
    verify_calls.clear()
    wrong_password = await log_in(gql, email, "not the password at all")
    unknown_email = await log_in(gql, new_email("nobody"), "not the password at all")
    assert wrong_password["errors"][0]["extensions"] == unknown_email["errors"][0]["extensions"]
    assert wrong_password["errors"][0]["message"] == unknown_email["errors"][0]["message"]
    assert error_codes(wrong_password) == ["UNAUTHENTICATED"]
    # One Argon2 verification each: the unknown email is checked against a dummy hash
    # made with the same parameters, so it costs the same time.
    assert len(verify_calls) == 2
    assert verify_calls[0] != verify_calls[1]
    assert verify_calls[1].split("$")[3] == verify_calls[0].split("$")[3]  # same m,t,p


async def test_login_rehashes_when_the_parameters_change(gql_at, services):
    gql = gql_at()
    email = new_email("rehash")
    await sign_up(gql, email)
    before = (await UserDocument.find_one({"email": email})).password_hash
    original = services.identity.hasher
    services.identity.hasher = PasswordHasher(Argon2Profile(2, 512, 1))
    try:
        assert not (await log_in(gql, email)).get("errors")
        after = (await UserDocument.find_one({"email": email})).password_hash
        assert after != before and "m=512,t=2,p=1" in after
        assert not (await log_in(gql, email)).get("errors")
        assert (await UserDocument.find_one({"email": email})).password_hash == after
    finally:
        services.identity.hasher = original


async def test_hashing_runs_in_worker_threads_at_most_n_at_once(monkeypatch):
    hasher = PasswordHasher(Argon2Profile(1, 256, 1), concurrency=2)
    lock = threading.Lock()
    running, peak, threads = 0, 0, set()
    real = hasher._hash
    release = threading.Event()
    loop = asyncio.get_running_loop()
    two_running = asyncio.Event()

    def tracked(password: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.current_thread())
            if running == 2:
                loop.call_soon_threadsafe(two_running.set)
        release.wait(timeout=5)  # hold the slot until the test has seen the queue
        try:
            return real(password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(hasher, "_hash", tracked)
    tasks = [asyncio.create_task(hasher.hash(f"password {i}")) for i in range(6)]
    await two_running.wait()  # the loop stays free while threads hash
    await asyncio.sleep(0.05)
    assert running == 2  # the other four wait for a slot
    release.set()
    hashes = await asyncio.gather(*tasks)
    assert peak == 2 and len(set(hashes)) == 6
    assert threading.main_thread() not in threads


def test_the_production_argon2_profile_is_rfc_9106_low_memory():
    assert Argon2Profile(time_cost=3, memory_kib=65536, parallelism=4) == RFC9106_LOW_MEMORY
    assert Argon2Profile.from_settings(Settings()) == RFC9106_LOW_MEMORY
    assert Argon2Profile.from_settings(load_settings({"ENVIRONMENT": "test"}, None)) == (
        RFC9106_LOW_MEMORY
    )


async def test_a_default_hasher_produces_rfc_9106_hashes():
    hasher = PasswordHasher(Argon2Profile.from_settings(Settings()))
    stored = await hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await hasher.verify(stored, "correct horse battery staple")
    assert not await hasher.verify(stored, "wrong")


# -- password change and reset -----------------------------------------------------------

CHANGE = (
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }"
)
REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
RESET = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }"


async def test_change_password_signs_out_every_other_session(gql_at):
    gql = gql_at()
    email = new_email("change")
    first = await sign_up(gql, email)
    second = (await log_in(gql, email))["data"]["login"]
    body = await gql.execute(
        CHANGE,
        {"c": "wrong current!", "n": "a brand new secret"},
        headers=bearer(first["accessToken"]),
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert await LoginAttemptDocument.find({"email": email}).count() == 1  # counts as a failure

    ok = await gql.data(
        CHANGE, {"c": PASSWORD, "n": "a brand new secret"}, headers=bearer(first["accessToken"])
    )
    assert ok["changePassword"] is True
    assert (await gql.data(VIEWER, headers=bearer(first["accessToken"])))["viewer"][
        "email"
    ] == email
    other = await gql.execute(VIEWER, headers=bearer(second["accessToken"]))
    assert error_codes(other) == ["UNAUTHENTICATED"]
    refreshed = await gql.execute(
        "mutation($r: String) { refreshToken(refreshToken: $r) { accessToken } }",
        {"r": second["refreshToken"]},
    )
    assert error_codes(refreshed) == ["UNAUTHENTICATED"]
    assert error_codes(await log_in(gql, email, PASSWORD)) == ["UNAUTHENTICATED"]
    assert not (await log_in(gql, email, "a brand new secret")).get("errors")


def _mailed_token(records: list[logging.LogRecord], email: str) -> str:
    """The token, from the file the log mailer wrote (the log line says where)."""
    sent = [r for r in records if getattr(r, "mail_to", None) == email]
    assert len(sent) == 1, sent
    lines = Path(sent[0].mail_file).read_text().splitlines()
    return lines[lines.index("Your reset token:") + 1]


async def test_password_reset_by_mailed_single_use_token(gql_at, services, caplog):
    gql = gql_at()
    email = new_email("reset")
    session = await sign_up(gql, email)
    with caplog.at_level(logging.INFO, logger="cryptovault.mail"):
        assert (await gql.data(REQUEST_RESET, {"e": email.upper()}))["requestPasswordReset"]
        # A second request within a minute sends no second mail.
        assert (await gql.data(REQUEST_RESET, {"e": email}))["requestPasswordReset"]
        await services.identity.drain()
    token = _mailed_token(caplog.records, email)
    stored = await PasswordResetDocument.find({"user_id": session["user"]["id"]}).to_list()
    assert len(stored) == 1 and stored[0].id != token  # only a digest is stored

    weak = await gql.execute(RESET, {"t": token, "p": "short"})
    assert error_codes(weak) == ["BAD_USER_INPUT"]  # and the token is not spent by it
    assert (await gql.data(RESET, {"t": token, "p": "reset to this one"}))["resetPassword"]
    again = await gql.execute(RESET, {"t": token, "p": "and once more now"})
    assert error_codes(again) == ["BAD_USER_INPUT"]

    assert error_codes(await gql.execute(VIEWER, headers=bearer(session["accessToken"]))) == [
        "UNAUTHENTICATED"
    ]
    assert not (await log_in(gql, email, "reset to this one")).get("errors")
    actions = {e.action async for e in AuditEntryDocument.find({"user_id": session["user"]["id"]})}
    assert {"auth.password.reset_requested", "auth.password.reset"} <= actions


async def test_reset_tokens_expire(gql_at, services, caplog):
    gql = gql_at()
    email = new_email("expire")
    await sign_up(gql, email)
    with caplog.at_level(logging.INFO, logger="cryptovault.mail"):
        await gql.data(REQUEST_RESET, {"e": email})
        await services.identity.drain()
    token = _mailed_token(caplog.records, email)
    user = await UserDocument.find_one({"email": email})
    await PasswordResetDocument.find({"user_id": user.id}).update(
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    body = await gql.execute(RESET, {"t": token, "p": "reset to this one"})
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_reset_for_an_unknown_email_answers_the_same_and_mails_nothing(
    gql_at, services, caplog
):
    email = new_email("unknown")
    with caplog.at_level(logging.INFO, logger="cryptovault.mail"):
        assert (await gql_at().data(REQUEST_RESET, {"e": email}))["requestPasswordReset"] is True
        await services.identity.drain()
    assert not [r for r in caplog.records if getattr(r, "mail_to", None) == email]
