"""Credential epochs (documents.users): whatever ends every credential of an account
(a password change or reset, a promotion, a deletion) does it in the same write that
changes the password or role, so a sign-in racing it - a login that verified the old
password, an API key created by an old session - yields a credential that never
works. And sign-in throttling gives no verdict on a password while held back; wrong
second-factor codes have a brake of their own.

Each race is forced by holding one request at the point where it has read the
account, running the other change to completion, then letting it go."""

from __future__ import annotations

import asyncio
import uuid

import pyotp
import pytest

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.users import LoginAttemptDocument
from cryptovault.security.lockout import SECOND_FACTOR
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

ME = "{ viewer { id role } }"
USERS = "{ users(first: 1) { totalCount } }"
REFRESH = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }"
CREATE_KEY = """mutation { createApiKey(name: "bot", scopes: [PORTFOLIO_READ]) {
  key apiKey { id } } }"""
CHANGE = (
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }"
)
ENABLE = "mutation { enableTwoFactor { secret } }"
CONFIRM = "mutation($c: String!) { confirmTwoFactor(code: $c) { twoFactorEnabled } }"
WRONG = "wrong password!"
DISABLE = "mutation($c: String!) { disableTwoFactor(code: $c) { id } }"


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


class Gate:
    """Holds the wrapped call after it ran (or before), until released."""

    def __init__(self, expected: int = 1) -> None:
        self.expected = expected
        self.arrived = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def wait_here(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.entered.set()
        await self.release.wait()


def hold_after_verifying(services, monkeypatch) -> Gate:
    """Every password check, once done, waits for the gate's release."""
    hasher = services.identity.hasher
    real_verify = hasher.verify
    gate = Gate()

    async def verify_then_wait(stored: str, password: str) -> bool:
        matched = await real_verify(stored, password)
        await gate.wait_here()
        return matched

    monkeypatch.setattr(hasher, "verify", verify_then_wait)
    return gate


def refused(body: dict) -> str:
    assert body.get("data") is None or not any(body["data"].values()), body
    return body["errors"][0]["extensions"].get("reason") or body["errors"][0]["extensions"]["code"]


async def test_a_login_that_verified_the_old_password_during_a_promotion_never_works(
    services, gql, monkeypatch
):
    """The registrant of ops@ signs in while the operator promotes the account: the
    login checked the registrant's password before the promotion and finishes after
    it. Its tokens must not work, let alone as an admin's."""
    email = new_email("ops")
    await sign_up(gql, email)
    gate = hold_after_verifying(services, monkeypatch)
    login = asyncio.create_task(log_in(gql, email, PASSWORD))
    await gate.entered.wait()
    _, outcome = await services.identity.create_admin(email, None, promote_existing=True)
    assert outcome == "promoted"
    gate.release.set()
    body = await login
    assert not body.get("errors"), body  # the login answered; what it got is dead
    signed_in = body["data"]["login"]
    headers = bearer(signed_in["accessToken"])
    assert refused(await gql.execute(ME, headers=headers)) == "SESSION_REVOKED"
    assert refused(await gql.execute(USERS, headers=headers)) == "SESSION_REVOKED"
    assert refused(await gql.execute(REFRESH, {"t": signed_in["refreshToken"]})) == (
        "SESSION_REVOKED"
    )


async def test_an_api_key_created_during_a_promotion_never_works(services, gql, monkeypatch):
    email = new_email("keyrace")
    member = await sign_up(gql, email)
    real_insert = ApiKeyDocument.insert
    gate = Gate()

    async def wait_then_insert(self, *args, **kwargs):
        await gate.wait_here()
        return await real_insert(self, *args, **kwargs)

    monkeypatch.setattr(ApiKeyDocument, "insert", wait_then_insert)
    creating = asyncio.create_task(gql.execute(CREATE_KEY, headers=bearer(member["accessToken"])))
    await gate.entered.wait()
    await services.identity.create_admin(email, None, promote_existing=True)
    gate.release.set()
    body = await creating
    assert not body.get("errors"), body
    key = body["data"]["createApiKey"]["key"]
    answer = await gql.execute(ME, headers={"X-API-Key": key})
    assert refused(answer) == "API_KEY_REVOKED"


async def test_of_two_concurrent_password_changes_one_wins_and_ends_the_other(
    services, gql, monkeypatch
):
    """Two sessions (the owner's and a thief's) change the password at once, each
    having verified the current one. Exactly one change applies; the other session
    is told CONFLICT and is ended by the winner."""
    email = new_email("tug")
    first = (await sign_up(gql, email))["accessToken"]
    second = (await log_in(gql, email))["data"]["login"]["accessToken"]
    hasher = services.identity.hasher
    real_hash = hasher.hash
    gate = Gate(expected=2)

    async def hash_when_both_verified(password: str) -> str:
        await gate.wait_here()
        return await real_hash(password)

    monkeypatch.setattr(hasher, "hash", hash_when_both_verified)
    changes = [
        asyncio.create_task(gql.execute(CHANGE, {"c": PASSWORD, "n": new}, headers=bearer(token)))
        for token, new in ((first, "first new passphrase"), (second, "second new passphrase"))
    ]
    await gate.entered.wait()
    gate.release.set()
    bodies = await asyncio.gather(*changes)
    outcomes = ["CONFLICT" if b.get("errors") else "changed" for b in bodies]
    assert sorted(outcomes) == ["CONFLICT", "changed"], bodies
    assert error_codes(bodies[outcomes.index("CONFLICT")]) == ["CONFLICT"]
    winner = outcomes.index("changed")
    tokens = (first, second)
    passwords = ("first new passphrase", "second new passphrase")
    assert not (await gql.execute(ME, headers=bearer(tokens[winner]))).get("errors")
    assert refused(await gql.execute(ME, headers=bearer(tokens[1 - winner]))) == ("SESSION_REVOKED")
    monkeypatch.setattr(hasher, "hash", real_hash)
    assert not (await log_in(gql, email, passwords[winner])).get("errors")
    assert error_codes(await log_in(gql, email, passwords[1 - winner])) == ["UNAUTHENTICATED"]


async def test_the_session_a_password_change_came_from_survives_a_crash_before_it_moves(
    services, gql, monkeypatch
):
    """The account's write ends every other session; moving the caller's session to
    the new epoch is a second write. Crash between the two: the caller's session
    still works (it is the one the change was made from), and so does the next change
    made from it."""
    email = new_email("kept")
    signed_up = await sign_up(gql, email)
    other = (await log_in(gql, email))["data"]["login"]["accessToken"]
    headers = bearer(signed_up["accessToken"])

    async def crashed(session_id: str, epoch: int) -> None:
        return None

    monkeypatch.setattr(services.identity.sessions, "advance", crashed)
    changed = await gql.execute(CHANGE, {"c": PASSWORD, "n": "one new passphrase"}, headers=headers)
    assert changed["data"]["changePassword"] is True, changed
    assert not (await gql.execute(ME, headers=headers)).get("errors")
    assert refused(await gql.execute(ME, headers=bearer(other))) == "SESSION_REVOKED"
    refreshed = await gql.execute(REFRESH, {"t": signed_up["refreshToken"]})
    assert not refreshed.get("errors"), refreshed
    monkeypatch.undo()
    again = await gql.execute(
        CHANGE, {"c": "one new passphrase", "n": "two new passphrase"}, headers=headers
    )
    assert again["data"]["changePassword"] is True, again
    assert not (await gql.execute(ME, headers=headers)).get("errors")


async def test_a_reset_ends_a_login_that_verified_the_old_password(services, gql, monkeypatch):
    email = new_email("reset")
    user_id = (await sign_up(gql, email))["user"]["id"]
    gate = hold_after_verifying(services, monkeypatch)
    login = asyncio.create_task(log_in(gql, email, PASSWORD))
    await gate.entered.wait()
    token = "reset-" + uuid.uuid4().hex
    await _reset_token(user_id, token)
    await services.identity.reset_password(token, "a brand new passphrase", _origin())
    gate.release.set()
    body = await login
    headers = bearer(body["data"]["login"]["accessToken"])
    assert refused(await gql.execute(ME, headers=headers)) == "SESSION_REVOKED"


async def test_held_back_a_right_password_is_counted_like_a_wrong_one(gql_at):
    """Held back, a right password without the (absent) second factor is refused like
    a wrong one; if only wrong guesses were counted, the next attempt's delay would
    say which guess was right."""
    attacker = gql_at()
    email = new_email("oracle")
    await sign_up(gql_at(), email)
    for _ in range(5):
        assert error_codes(await log_in(attacker, email, WRONG)) == ["UNAUTHENTICATED"]

    async def counted() -> int:
        return await LoginAttemptDocument.find({"email": email}).count()

    before = await counted()
    wrong = await log_in(attacker, email, WRONG, otp="123456")
    after_wrong = await counted()
    right = await log_in(attacker, email, PASSWORD, otp="123456")
    after_right = await counted()
    assert error_codes(wrong) == error_codes(right) == ["ACCOUNT_LOCKED"]
    assert after_wrong - before == after_right - after_wrong == 1
    # ... and the next attempt's delay grew the same way after each.
    assert right["errors"][0]["message"] == wrong["errors"][0]["message"]


async def _two_factor_account(owner) -> tuple[str, list[str], pyotp.TOTP]:
    """(email, recovery codes, TOTP) of a new account with two-factor on."""
    email = new_email("codes")
    signed_up = await sign_up(owner, email)
    headers = bearer(signed_up["accessToken"])
    setup = "mutation { enableTwoFactor { secret recoveryCodes } }"
    started = (await owner.data(setup, headers=headers))["enableTwoFactor"]
    totp = pyotp.TOTP(started["secret"])
    await owner.data(CONFIRM, {"c": totp.now()}, headers=headers)
    return email, started["recoveryCodes"], totp


def _wrong(totp: pyotp.TOTP) -> str:
    return "000000" if totp.now() != "000000" else "111111"


async def test_wrong_second_factor_codes_have_their_own_brake(gql_at):
    """Someone who has the password guesses codes. Held back, a right password with a
    right code used to pass, so guessing had no limit but the request rate. After 5
    wrong codes even the right code is refused from an unknown device, until the
    delay; the owner's trusted device has a bucket of its own and still signs in."""
    owner, attacker = gql_at(), gql_at()
    email, recovery, totp = await _two_factor_account(owner)
    # The owner's device signs in with a code: from then on it is trusted with codes
    # (a device token from before two-factor was on is not: it could be anyone's).
    signed_in = await log_in(owner, email, PASSWORD, otp=recovery[0])
    device_token = signed_in["data"]["login"]["deviceToken"]
    for _ in range(5):
        body = await log_in(attacker, email, PASSWORD, otp=_wrong(totp))
        assert error_codes(body) == ["TWO_FACTOR_REQUIRED"], body
    body = await log_in(attacker, email, PASSWORD, otp=totp.now())
    assert error_codes(body) == ["ACCOUNT_LOCKED"], body
    # Not held back by the password failures any more (a trusted device), only by
    # the codes: refused with a reason.
    stranger = gql_at()
    await LoginAttemptDocument.find({"email": email, "device": None}).delete()
    body = await log_in(stranger, email, PASSWORD, otp=totp.now())
    assert error_codes(body) == ["RATE_LIMITED"], body
    assert body["errors"][0]["extensions"]["scope"] == "two_factor"
    assert 0 < body["errors"][0]["extensions"]["retryAfter"] <= 30
    # The owner's device: the attacker's wrong codes do not hold back its code.
    body = await log_in(owner, email, PASSWORD, otp=recovery[1], device_token=device_token)
    assert "errors" not in body, body
    assert body["data"]["login"]["accessToken"]


async def test_a_burst_of_parallel_wrong_codes_gets_no_more_checks_than_a_sequence(
    gql_at, services, monkeypatch
):
    """Wrong codes sent in parallel: each is counted before its check, so no more than
    the brake's 5 free codes are ever checked, however the burst interleaves (every
    check is held until all the others have been checked or refused)."""
    owner = gql_at()
    email, _, totp = await _two_factor_account(owner)
    identity = services.identity
    real_matches = identity._second_factor_matches
    checked = 0
    release = asyncio.Event()

    async def held_matches(*args, **kwargs):
        nonlocal checked
        checked += 1
        await release.wait()
        return await real_matches(*args, **kwargs)

    monkeypatch.setattr(identity, "_second_factor_matches", held_matches)
    burst = 12
    attempts = [
        asyncio.create_task(log_in(gql_at(), email, PASSWORD, otp=_wrong(totp)))
        for _ in range(burst)
    ]
    async with asyncio.timeout(60):
        while checked + sum(t.done() for t in attempts) < burst:
            await asyncio.sleep(0.01)
    release.set()
    bodies = await asyncio.gather(*attempts)
    answers = [error_codes(b)[0] for b in bodies]
    # (The burst also holds back the account's password bucket: a held-back attempt
    # may still pass with a right code, so its code is checked all the same.)
    assert checked <= 5, answers
    assert set(answers) <= {"TWO_FACTOR_REQUIRED", "RATE_LIMITED", "ACCOUNT_LOCKED"}, answers


def _count_code_checks(services, monkeypatch) -> list[int]:
    """Counts every second-factor code that reaches a real check."""
    identity = services.identity
    real = identity._second_factor_matches
    checked = [0]

    async def counted(*args, **kwargs):
        checked[0] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(identity, "_second_factor_matches", counted)
    return checked


async def _signed_in_before_two_factor(gql_at, tag: str, times: int = 3):
    """The password's holder signs in `times` while two-factor is still off, then the
    owner turns it on (the usual answer to a leaked password): (email, the logins'
    payloads, the owner's TOTP)."""
    owner, attacker = gql_at(), gql_at()
    email = new_email(tag)
    signed_up = await sign_up(owner, email)
    logins = []
    for _ in range(times):
        body = await log_in(attacker, email, PASSWORD)
        assert "errors" not in body, body
        logins.append(body["data"]["login"])
    headers = bearer(signed_up["accessToken"])
    secret = (await owner.data(ENABLE, headers=headers))["enableTwoFactor"]["secret"]
    totp = pyotp.TOTP(secret)
    await owner.data(CONFIRM, {"c": totp.now()}, headers=headers)
    return email, logins, totp


async def test_devices_trusted_before_two_factor_get_no_codes_of_their_own(
    gql_at, services, monkeypatch
):
    """Someone who has only the password signs in a few times while two-factor is
    still off: each login mints a trusted device, and turning two-factor on does not
    end that trust for passwords. Were those devices trusted with codes, N tokens
    would buy N x the brake's guesses. Nobody who never passed two-factor gets more
    code checks than the account's unknown-device bucket allows (5)."""
    email, logins, totp = await _signed_in_before_two_factor(gql_at, "mint")
    tokens = [login["deviceToken"] for login in logins]
    assert len(set(tokens)) == len(logins)
    attacker = gql_at()

    checked = _count_code_checks(services, monkeypatch)
    answers = []
    for token in tokens:
        for _ in range(SECOND_FACTOR.free):
            body = await log_in(attacker, email, PASSWORD, otp=_wrong(totp), device_token=token)
            answers.append(error_codes(body)[0])
    # Without a device token the attacker would have been cut off after 5 checks.
    assert checked[0] <= SECOND_FACTOR.free, (checked[0], answers)


async def test_sessions_opened_before_two_factor_get_no_codes_of_their_own(
    gql_at, services, monkeypatch
):
    """The same through `disableTwoFactor`: sessions opened while two-factor was off
    survive turning it on; their wrong codes count together, as unknown devices'."""
    _, logins, totp = await _signed_in_before_two_factor(gql_at, "sessions")
    sessions = [bearer(login["accessToken"]) for login in logins]
    attacker = gql_at()

    checked = _count_code_checks(services, monkeypatch)
    answers = []
    for session in sessions:
        for _ in range(SECOND_FACTOR.free):
            body = await attacker.execute(DISABLE, {"c": _wrong(totp)}, headers=session)
            answers.append(error_codes(body)[0])
    assert checked[0] <= SECOND_FACTOR.free, (checked[0], answers)


async def _reset_token(user_id: str, token: str) -> None:
    from datetime import timedelta

    from cryptovault.documents.common import now_ms
    from cryptovault.documents.users import PasswordResetDocument
    from cryptovault.security.tokens import digest

    now = now_ms()
    await PasswordResetDocument(
        id=digest(token), user_id=user_id, created_at=now, expires_at=now + timedelta(minutes=5)
    ).insert()


def _origin():
    from cryptovault.security.origin import SYSTEM

    return SYSTEM


pytestmark = pytest.mark.usefixtures("services")
