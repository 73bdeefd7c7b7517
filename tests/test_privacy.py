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


async def test_deletion_needs_the_password_erases_personal_data_and_keeps_the_books(
    user_gql, gql_at, services
):
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
    # No IP or user agent left in its audit entries; its open order was canceled.
    entries = await AuditEntryDocument.find({"user_id": user_id}).to_list()
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
