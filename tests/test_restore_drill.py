"""The restore drill: back up a store with real users and trades, restore it into a
fresh database, and the books reconcile and every user can still sign in."""

from __future__ import annotations

import httpx

from cryptovault.app import create_app
from cryptovault.backup import backup, restore
from cryptovault.services import start_services
from cryptovault.trading.reconcile import reconcile
from tests.conftest import GraphQLClient, bearer, log_in, make_settings, sign_up, tick


async def test_restored_store_reconciles_and_users_sign_in(store_server, tmp_path):
    source_settings = make_settings(store_server.url)
    source = await start_services(source_settings, feed=None)
    emails = []
    try:
        source.market.apply(tick("BTC", "100.00"))
        app = create_app(source_settings, services=source)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.3.3.3", 1)), base_url="http://t"
        ) as http:
            client = GraphQLClient(http)
            for _ in range(2):
                payload = await sign_up(client)
                emails.append(payload["user"]["email"])
                for qty in ("0.5", "1.5"):
                    body = await client.execute(
                        "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status } }",
                        {"i": {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": qty}},
                        headers=bearer(payload["accessToken"]),
                    )
                    assert body["data"]["placeOrder"]["status"] == "FILLED"
        path = tmp_path / "drill.jsonl.gz"
        summary = await backup(source.store.db, path)
        assert summary.counts["trades"] == 4 and summary.counts["users"] == 2
    finally:
        await source.close()

    target_settings = make_settings(store_server.url)
    target = await start_services(target_settings, feed=None)
    try:
        await restore(target.store.db, path, drop=True)
        report = await reconcile(target.store.db)
        assert report.ok, report.discrepancies
        assert report.trial_balance["USD"] == 0
        app = create_app(target_settings, services=target)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.3.3.4", 1)), base_url="http://t"
        ) as http:
            for email in emails:
                body = await log_in(GraphQLClient(http), email)
                assert body["data"]["login"]["accessToken"], body
    finally:
        await target.close()
