"""Sign-in throttling (README "Lockout"): progressive delays per account, per address
and per trusted device, which an attacker cannot use to keep the owner out: a device
that signed in before, or a correct second factor, passes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pyotp

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.users import LoginAttemptDocument
from cryptovault.security.lockout import ACCOUNT, IP, next_attempt_at
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

WRONG = "wrong password!"
ENABLE = "mutation { enableTwoFactor { secret } }"
CONFIRM = "mutation($c: String!) { confirmTwoFactor(code: $c) { twoFactorEnabled } }"
CHANGE = (
    'mutation($c: String!) { changePassword(currentPassword: $c, newPassword: "x new passphrase") }'
)


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


async def fail(gql, email: str, times: int) -> None:
    for _ in range(times):
        assert error_codes(await log_in(gql, email, WRONG)) == ["UNAUTHENTICATED"]


async def age_attempts(query: dict, by: timedelta) -> None:
    """Move recorded attempts into the past (decisions read their timestamps)."""
    collection = LoginAttemptDocument.get_pymongo_collection()
    async for attempt in collection.find(query):
        await collection.update_one({"_id": attempt["_id"]}, {"$set": {"at": attempt["at"] - by}})


def test_delays_double_from_30_seconds_to_15_minutes():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    # Four failures: no wait. The fifth: 30 s after it; then 60, 120, ... at most 900.
    assert next_attempt_at(ACCOUNT, [ago(s) for s in (40, 30, 20, 10)], now) == now
    waits = [
        (next_attempt_at(ACCOUNT, [ago(1)] * n, now) - ago(1)).total_seconds() for n in range(5, 13)
    ]
    assert waits == [30, 60, 120, 240, 480, 900, 900, 900]
    # Failures older than the lookback are forgotten (24 h for an account, 1 h per IP).
    assert next_attempt_at(ACCOUNT, [ago(86_401)] * 9 + [ago(5)], now) == now
    assert next_attempt_at(IP, [ago(3601)] * 40, now) == now
    assert next_attempt_at(IP, [ago(5)] * 19, now) == now
    assert next_attempt_at(IP, [ago(5)] * 20, now) == ago(5) + timedelta(seconds=30)


async def test_after_five_failures_even_the_right_password_waits(gql_at):
    gql = gql_at()
    email = new_email("locked")
    payload = await sign_up(gql, email)
    await fail(gql, email, 5)
    body = await log_in(gql, email, PASSWORD)
    assert error_codes(body) == ["ACCOUNT_LOCKED"]
    assert 0 < body["errors"][0]["extensions"]["retryAfter"] <= 30
    # From another address too (without a device token): the delay is the account's.
    assert error_codes(await log_in(gql_at(), email, PASSWORD)) == ["ACCOUNT_LOCKED"]
    locks = await AuditEntryDocument.find(
        {"action": "auth.account.locked", "user_id": payload["user"]["id"]}
    ).count()
    assert locks == 1


async def test_unknown_emails_are_held_back_like_real_ones(gql_at):
    gql = gql_at()
    email = new_email("ghost")
    await fail(gql, email, 5)
    assert error_codes(await log_in(gql, email, WRONG)) == ["ACCOUNT_LOCKED"]


async def test_each_failure_after_the_wait_doubles_it_and_a_success_clears_them(gql_at):
    gql = gql_at()
    email = new_email("doubling")
    await sign_up(gql, email)
    await fail(gql, email, 5)
    await age_attempts({"email": email}, timedelta(seconds=31))  # the 30 s wait is over
    await fail(gql, email, 1)
    body = await log_in(gql, email, PASSWORD)
    assert error_codes(body) == ["ACCOUNT_LOCKED"]
    assert 30 < body["errors"][0]["extensions"]["retryAfter"] <= 60
    await age_attempts({"email": email}, timedelta(seconds=61))
    assert not (await log_in(gql, email, PASSWORD)).get("errors")
    assert await LoginAttemptDocument.find({"email": email}).count() == 0


async def test_a_parallel_burst_gets_at_most_five_password_checks(gql_at, verify_calls):
    gql = gql_at()
    email = new_email("burst")
    await sign_up(gql, email)
    verify_calls.clear()
    bodies = await asyncio.gather(*(log_in(gql, email, f"guess number {i}") for i in range(12)))
    codes = [error_codes(b)[0] for b in bodies]
    # Attempts in flight count as failures: how many of the twelve get a check depends
    # on interleaving (possibly none), never more than five.
    assert len(verify_calls) <= 5
    assert codes.count("UNAUTHENTICATED") == len(verify_calls)
    assert codes.count("ACCOUNT_LOCKED") == 12 - len(verify_calls)
    # Refused attempts checked nothing and leave nothing behind; checked ones count.
    assert await LoginAttemptDocument.find({"email": email}).count() == len(verify_calls)


async def test_twenty_failures_from_one_address_slow_that_address_down(gql_at):
    attacker = gql_at("192.0.2.77")
    victim_email = new_email("victim")
    await sign_up(gql_at(), victim_email)
    for i in range(20):
        body = await log_in(attacker, new_email(f"spray{i}"), WRONG)
        assert error_codes(body) == ["UNAUTHENTICATED"]
    body = await log_in(attacker, victim_email, PASSWORD)
    assert error_codes(body) == ["RATE_LIMITED"]
    assert 0 < body["errors"][0]["extensions"]["retryAfter"] <= 30
    # Other addresses are unaffected.
    assert not (await log_in(gql_at(), victim_email, PASSWORD)).get("errors")


async def test_an_attacker_cannot_keep_a_signed_in_device_out(gql_at):
    """5 wrong passwords used to lock anyone's account for 15 minutes, renewable for
    ever. The owner's device, which signed in before, is not held back."""
    owner, attacker = gql_at(), gql_at()
    email = new_email("owner")
    device = (await sign_up(owner, email))["deviceToken"]
    assert device.startswith("cvd_")
    await fail(attacker, email, 5)
    for _ in range(5):  # and on, and on
        assert error_codes(await log_in(attacker, email, WRONG)) == ["ACCOUNT_LOCKED"]
    assert error_codes(await log_in(owner, email, PASSWORD)) == ["ACCOUNT_LOCKED"]
    body = await log_in(owner, email, PASSWORD, device_token=device)
    assert not body.get("errors"), body
    # Each sign-in hands the device a fresh token for the same device.
    assert body["data"]["login"]["deviceToken"].startswith("cvd_")
    again = await log_in(owner, email, PASSWORD, device_token=body["data"]["login"]["deviceToken"])
    assert not again.get("errors")
    # The attacker's failures were not cleared by the owner's sign-ins.
    assert error_codes(await log_in(attacker, email, PASSWORD)) == ["ACCOUNT_LOCKED"]


async def test_a_shared_address_does_not_keep_its_signed_in_devices_out(gql_at):
    nat = "198.51.100.20"
    email = new_email("office")
    device = (await sign_up(gql_at(nat), email))["deviceToken"]
    for i in range(20):  # someone else behind the same address
        await log_in(gql_at(nat), new_email(f"typo{i}"), WRONG)
    assert error_codes(await log_in(gql_at(nat), email, PASSWORD)) == ["RATE_LIMITED"]
    body = await log_in(gql_at(nat), email, PASSWORD, device_token=device)
    assert not body.get("errors"), body


async def test_a_device_token_has_its_own_delay_and_only_counts_for_its_account(gql_at):
    gql = gql_at()
    email, other = new_email("mine"), new_email("theirs")
    device = (await sign_up(gql, email))["deviceToken"]
    await sign_up(gql, other)
    # Guesses from a trusted device are throttled too, on the device alone.
    for _ in range(5):
        body = await log_in(gql, email, WRONG, device_token=device)
        assert error_codes(body) == ["UNAUTHENTICATED"]
    assert error_codes(await log_in(gql, email, PASSWORD, device_token=device)) == [
        "ACCOUNT_LOCKED"
    ]
    assert not (await log_in(gql_at(), email, PASSWORD)).get("errors")
    # Another account's delay is not lifted by this account's token.
    await fail(gql, other, 5)
    assert error_codes(await log_in(gql, other, PASSWORD, device_token=device)) == [
        "ACCOUNT_LOCKED"
    ]


async def test_a_password_change_drops_the_trust_of_earlier_devices(gql_at):
    gql = gql_at()
    email = new_email("changed")
    signed_up = await sign_up(gql, email)
    await gql.data(CHANGE, {"c": PASSWORD}, headers=bearer(signed_up["accessToken"]))
    await fail(gql_at(), email, 5)
    body = await log_in(gql, email, "x new passphrase", device_token=signed_up["deviceToken"])
    assert error_codes(body) == ["ACCOUNT_LOCKED"]


async def test_a_second_factor_passes_a_delay_and_nothing_else_does(gql_at):
    owner, attacker = gql_at(), gql_at()
    email = new_email("twofactor")
    headers = bearer((await sign_up(owner, email))["accessToken"])
    secret = (await owner.data(ENABLE, headers=headers))["enableTwoFactor"]["secret"]
    totp = pyotp.TOTP(secret)
    await owner.data(CONFIRM, {"c": totp.now()}, headers=headers)
    await fail(attacker, email, 5)
    # Held back, a wrong code and a wrong password answer alike: no oracle.
    wrong_code = "000000" if totp.now() != "000000" else "111111"
    for password, otp in ((PASSWORD, wrong_code), (WRONG, totp.now()), (PASSWORD, None)):
        body = await log_in(attacker, email, password, otp=otp)
        assert error_codes(body) == ["ACCOUNT_LOCKED"], (password, otp)
    # The owner, from a new device, with the password and a fresh code.
    at = datetime.now(UTC) + timedelta(seconds=30)
    body = await log_in(owner, email, PASSWORD, otp=totp.at(at))
    assert not body.get("errors"), body


async def test_confirmations_from_a_session_are_throttled_per_session(gql_at):
    gql = gql_at()
    email = new_email("confirm")
    session = bearer((await sign_up(gql, email))["accessToken"])
    for _ in range(5):
        body = await gql.execute(CHANGE, {"c": WRONG}, headers=session)
        assert error_codes(body) == ["BAD_USER_INPUT"]
    assert error_codes(await gql.execute(CHANGE, {"c": PASSWORD}, headers=session)) == [
        "ACCOUNT_LOCKED"
    ]
    # The account itself can still sign in.
    assert not (await log_in(gql_at(), email, PASSWORD)).get("errors")
