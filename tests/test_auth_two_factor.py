"""Two-factor authentication: setup, login with TOTP or a recovery code, replay and
skip attempts, encryption at rest, turning it off."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.users import LoginAttemptDocument, UserDocument
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

ENABLE = "mutation { enableTwoFactor { secret otpauthUri recoveryCodes } }"
CONFIRM = "mutation($c: String!) { confirmTwoFactor(code: $c) { twoFactorEnabled } }"
DISABLE = "mutation($c: String!) { disableTwoFactor(code: $c) { twoFactorEnabled } }"


def code_at(secret: str, seconds_from_now: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=seconds_from_now))


def wrong_code(secret: str) -> str:
    valid = {code_at(secret, s) for s in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


@pytest.fixture
async def enrolled(gql):
    """A user with two-factor authentication on: (email, payload, setup)."""
    email = f"otp-{uuid.uuid4().hex[:8]}@example.com"
    payload = await sign_up(gql, email)
    headers = bearer(payload["accessToken"])
    setup = (await gql.data(ENABLE, headers=headers))["enableTwoFactor"]
    confirmed = await gql.data(CONFIRM, {"c": code_at(setup["secret"])}, headers=headers)
    assert confirmed["confirmTwoFactor"]["twoFactorEnabled"] is True
    return email, payload, setup


async def test_setup_shows_secret_uri_and_ten_recovery_codes_and_needs_a_code(gql):
    email = f"setup-{uuid.uuid4().hex[:8]}@example.com"
    headers = bearer((await sign_up(gql, email))["accessToken"])
    setup = (await gql.data(ENABLE, headers=headers))["enableTwoFactor"]
    assert setup["otpauthUri"].startswith("otpauth://totp/CryptoVault:")
    assert f"secret={setup['secret']}" in setup["otpauthUri"]
    assert len(set(setup["recoveryCodes"])) == 10
    # Not on until confirmed: login needs no code yet.
    assert not (await log_in(gql, email)).get("errors")
    body = await gql.execute(CONFIRM, {"c": wrong_code(setup["secret"])}, headers=headers)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert not (await log_in(gql, email)).get("errors")
    await gql.data(CONFIRM, {"c": code_at(setup["secret"])}, headers=headers)
    assert error_codes(await gql.execute(ENABLE, headers=headers)) == ["CONFLICT"]


async def test_login_without_the_second_factor_is_refused(gql, enrolled):
    email, _, setup = enrolled
    body = await log_in(gql, email)
    assert error_codes(body) == ["TWO_FACTOR_REQUIRED"]
    assert body["data"] is None
    # Not a failure: the password was right; a guessed code is one.
    assert await LoginAttemptDocument.find({"email": email}).count() == 0
    body = await log_in(gql, email, otp=wrong_code(setup["secret"]))
    assert error_codes(body) == ["TWO_FACTOR_REQUIRED"]
    # Counted twice: as a failed sign-in of the account, and as a wrong code.
    assert await LoginAttemptDocument.find({"email": email, "device": None}).count() == 1
    assert await LoginAttemptDocument.find({"email": email}).count() == 2
    # A valid code with a wrong password does not help.
    body = await log_in(gql, email, "wrong password!", otp=code_at(setup["secret"], 30))
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_a_current_code_signs_in_once(gql, enrolled):
    email, _, setup = enrolled
    # The confirmation spent the current step; the next one (within the window) works.
    later = code_at(setup["secret"], 30)
    assert not (await log_in(gql, email, otp=later)).get("errors")
    replay = await log_in(gql, email, otp=later)
    assert error_codes(replay) == ["TWO_FACTOR_REQUIRED"]


async def test_a_recovery_code_signs_in_exactly_once(gql, enrolled):
    email, payload, setup = enrolled
    code = setup["recoveryCodes"][3]
    assert not (await log_in(gql, email, otp=code.lower())).get("errors")
    assert error_codes(await log_in(gql, email, otp=code)) == ["TWO_FACTOR_REQUIRED"]
    used = await AuditEntryDocument.find_one(
        {"action": "auth.2fa.recovery_code_used", "user_id": payload["user"]["id"]}
    )
    assert used is not None and used.details == {"remaining": 9}


async def test_the_totp_secret_and_recovery_codes_are_not_stored_in_clear(gql, enrolled, settings):
    email, _, setup = enrolled
    user = await UserDocument.find_one({"email": email})
    assert user.totp_secret and setup["secret"] not in user.totp_secret
    assert Fernet(settings.totp_encryption_key.encode()).decrypt(user.totp_secret.encode()) == (
        setup["secret"].encode()
    )
    stored = " ".join(user.recovery_codes)
    assert len(user.recovery_codes) == 10
    assert not any(c.replace("-", "") in stored or c in stored for c in setup["recoveryCodes"])


async def test_disable_needs_a_valid_code(gql, enrolled):
    email, payload, setup = enrolled
    headers = bearer(payload["accessToken"])
    body = await gql.execute(DISABLE, {"c": wrong_code(setup["secret"])}, headers=headers)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    off = await gql.data(DISABLE, {"c": setup["recoveryCodes"][0]}, headers=headers)
    assert off["disableTwoFactor"]["twoFactorEnabled"] is False
    assert not (await log_in(gql, email, PASSWORD)).get("errors")
    user = await UserDocument.find_one({"email": email})
    assert user.totp_secret is None and user.recovery_codes == []
    actions = {e.action async for e in AuditEntryDocument.find({"user_id": user.id})}
    assert {"auth.2fa.setup_started", "auth.2fa.enabled", "auth.2fa.disabled"} <= actions
