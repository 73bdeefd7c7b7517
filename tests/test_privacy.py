"""The viewer's data: a complete export without secrets, and deletion that erases
personal data while the books keep balancing."""

from __future__ import annotations

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.users import UserDocument
from cryptovault.trading.reconcile import reconcile
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up, tick

EXPORT = "mutation { exportMyData }"
DELETE = "mutation($p: String!) { deleteMyAccount(password: $p) }"
PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"


async def test_export_holds_the_viewers_data_and_no_secret(user_gql, services):
    services.market.apply(tick("BTC", "100.00"))
    await user_gql.data(
        PLACE, {"i": {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": "1"}}
    )
    data = (await user_gql.data(EXPORT))["exportMyData"]
    assert data["user"]["email"] == user_gql.payload["user"]["email"]
    assert len(data["orders"]) == 1 and len(data["trades"]) == 1
    assert {e["kind"] for e in data["ledger"]} >= {"funding", "trade"}
    assert data["trades"][0]["price"] == {
        "$numberDecimal": data["trades"][0]["price"]["$numberDecimal"]
    }
    text = str(data)
    for secret in ("password_hash", "secret_hash", "token_hash", "totp_secret"):
        assert secret not in text
    assert data["sessions"] and "refresh" not in str(data["sessions"][0].keys())
    # The order's audit entry, copied to the log yet or not, is exported once, as the log's.
    assert [e["action"] for e in data["audit_log"]].count("order.placed") == 1
    assert "audit" not in data["orders"][0] and "audit_state" not in data["orders"][0]


async def test_deletion_needs_the_password_erases_personal_data_and_keeps_the_books(
    user_gql, gql_at, services
):
    # The audit copier rests: the orders' entries are still pending when the account
    # is deleted, and are erased there too.
    copier = services.trading.order_audit
    active, copier.is_active = copier.is_active, lambda: False
    try:
        await deletion_erases_personal_data_and_keeps_the_books(user_gql, gql_at, services)
    finally:
        copier.is_active = active


async def deletion_erases_personal_data_and_keeps_the_books(user_gql, gql_at, services):
    services.market.apply(tick("BTC", "100.00"))
    user_id = user_gql.payload["user"]["id"]
    email = user_gql.payload["user"]["email"]
    await user_gql.data(
        PLACE, {"i": {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": "1"}}
    )
    resting = await user_gql.data(
        PLACE,
        {
            "i": {
                "symbol": "BTC",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "1",
                "limitPrice": "10.00",
            }
        },
    )
    assert error_codes(await user_gql.execute(DELETE, {"p": "wrong password!!"})) == [
        "UNAUTHENTICATED"
    ]
    assert (await user_gql.data(DELETE, {"p": PASSWORD}))["deleteMyAccount"] is True
    user = await UserDocument.get(user_id)
    assert user is not None and user.email != email and "deleted" in user.email
    assert user.totp_secret is None and user.frozen
    # The token used is revoked; signing in with the old email fails.
    assert error_codes(await user_gql.execute("{ viewer { id } }")) == ["UNAUTHENTICATED"]
    assert error_codes(await log_in(gql_at(), email)) == ["UNAUTHENTICATED"]
    # No IP or user agent left in its audit entries (those its orders carried too,
    # copied after); its open order was canceled.
    await services.trading.order_audit.drain()
    entries = await AuditEntryDocument.find({"user_id": user_id}).to_list()
    assert {"order.placed", "order.canceled"} <= {e.action for e in entries}
    assert entries and all(e.ip is None and e.user_agent is None for e in entries)
    order = await services.trading.orders.find_one({"_id": resting["placeOrder"]["id"]})
    assert order["status"] == "CANCELED"
    report = await reconcile(services.store.db)
    assert report.ok, report.discrepancies


async def test_exports_are_limited_per_user(user_gql, gql_at):
    """An export reads everything the user has: a few an hour (EXPORT_RATE_LIMIT,
    3/hour by default), whatever its static cost says."""
    for _ in range(3):
        assert "user" in (await user_gql.data(EXPORT))["exportMyData"]
    refused = await user_gql.post(EXPORT)
    assert refused.status_code == 429
    body = refused.json()
    assert error_codes(body) == ["RATE_LIMITED"]
    assert body["errors"][0]["extensions"]["scope"] == "account"
    assert 1 <= body["errors"][0]["extensions"]["retryAfter"] <= 3600
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # Another user (from the same address) has exports of their own.
    other = gql_at("10.9.8.7")
    other.headers.update(bearer((await sign_up(other))["accessToken"]))
    assert error_codes(await other.execute(EXPORT)) == []


RESET = "mutation($t: String!, $n: String!) { resetPassword(token: $t, newPassword: $n) }"


async def _reset_token(user_id: str, token: str) -> None:
    from datetime import timedelta

    from cryptovault.documents.common import now_ms
    from cryptovault.documents.users import PasswordResetDocument
    from cryptovault.security.tokens import digest

    now = now_ms()
    await PasswordResetDocument(
        id=digest(token), user_id=user_id, created_at=now, expires_at=now + timedelta(minutes=5)
    ).insert()


async def test_a_reset_token_never_gives_a_deleted_account_a_password(user_gql, gql_at):
    """A reset mailed before the deletion (or one whose request raced it) must not
    make the deleted account usable again: no password, no sign-in."""
    user_id = user_gql.payload["user"]["id"]
    await _reset_token(user_id, "mailed-before-deletion")
    assert (await user_gql.data(DELETE, {"p": PASSWORD}))["deleteMyAccount"] is True
    await _reset_token(user_id, "made-while-deleting")
    for token in ("mailed-before-deletion", "made-while-deleting"):
        body = await gql_at().execute(RESET, {"t": token, "n": "a brand new password"})
        assert error_codes(body) == ["BAD_USER_INPUT"], body
    user = await UserDocument.get(user_id)
    assert user is not None and user.password_hash == "!"
    assert user.deleted_at is not None
