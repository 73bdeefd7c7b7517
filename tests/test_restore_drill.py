"""The restore drill: back up a store with real users and trades, restore it into a
fresh database, and the books reconcile and every user can still sign in. And what a
backup taken, or a restore run, while the app writes gives (cryptovault/backup.py)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import json_util
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from cryptovault import backup as backup_module
from cryptovault.app import create_app
from cryptovault.backup import BackupError, backup, restore
from cryptovault.services import Services, start_services
from cryptovault.trading.reconcile import reconcile
from tests.conftest import GraphQLClient, bearer, log_in, make_settings, sign_up, tick


async def trade(services: Services, users: int = 2) -> list[str]:
    """Sign up `users` users over HTTP, each filling two market buys; their emails."""
    services.market.apply(tick("BTC", "100.00"))
    app = create_app(services.settings, services=services)
    emails = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.3.3.3", 1)), base_url="http://t"
    ) as http:
        client = GraphQLClient(http)
        for _ in range(users):
            payload = await sign_up(client)
            emails.append(payload["user"]["email"])
            for qty in ("0.5", "1.5"):
                body = await client.execute(
                    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status } }",
                    {"i": {"symbol": "BTC", "side": "BUY", "type": "MARKET", "quantity": qty}},
                    headers=bearer(payload["accessToken"]),
                )
                assert body["data"]["placeOrder"]["status"] == "FILLED"
    return emails


@pytest.fixture
async def paused_copier(store_server) -> AsyncIterator[Services]:
    """An app whose orders' audit entries stay pending until the test copies them:
    its background copier is stopped before any order is placed."""
    services = await start_services(make_settings(store_server.url), feed=None)
    try:
        await services.trading.order_audit.close()
        yield services
    finally:
        await services.close()


def backed_up(path: Path) -> dict[str, list[dict[str, Any]]]:
    documents: dict[str, list[dict[str, Any]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        f.readline()
        for line in f:
            item = json_util.loads(line)
            documents.setdefault(item["c"], []).append(item["d"])
    return documents


async def test_restored_store_reconciles_and_users_sign_in(store_server, tmp_path):
    source = await start_services(make_settings(store_server.url), feed=None)
    try:
        emails = await trade(source)
        path = tmp_path / "drill.jsonl.gz"
        summary = await backup(source.store.db, path)
        assert summary.counts["trades"] == 4 and summary.counts["users"] == 2
    finally:
        await source.close()

    # As README's drill: restore, then serve from the restored store. (An app already
    # running on it would copy the restored orders' pending audit entries while the
    # restore loads and counts: see the test below.)
    target_settings = make_settings(store_server.url)
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    try:
        await restore(client[target_settings.mongodb_db], path)
    finally:
        await client.close()
    target = await start_services(target_settings, feed=None)
    try:
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


async def test_an_audit_entry_copied_during_a_backup_is_in_the_backup(
    paused_copier, tmp_path, monkeypatch
):
    """The copier moves an order's pending audit entries to audit_log (stores them,
    then clears them from the order). A round run between the backup's reads of the
    two collections must leave each entry in one of them (or both: copying again
    after a restore stores nothing twice), never in neither."""
    source = paused_copier
    await trade(source, users=1)
    placed = {
        entry["_id"]
        async for order in source.store.db["orders"].find({})
        for entry in order.get("audit") or []
    }
    assert len(placed) == 2  # pending: the copier is paused
    rounds: list[int] = []
    index_specs = backup_module._index_specs

    async def specs_then_a_copier_round(db: Any, name: str) -> Any:
        specs = await index_specs(db, name)
        if name in ("audit_log", "orders") and not rounds:  # the first of them is read
            rounds.append(await source.trading.order_audit.copy())
        return specs

    monkeypatch.setattr(backup_module, "_index_specs", specs_then_a_copier_round)
    path = tmp_path / "during.jsonl.gz"
    await backup(source.store.db, path)
    assert rounds == [2]  # the round ran, between the two, and moved both orders' entries
    documents = backed_up(path)
    logged = {entry["_id"] for entry in documents.get("audit_log", [])}
    pending = {e["_id"] for order in documents["orders"] for e in order.get("audit") or []}
    assert placed <= logged | pending


async def test_a_restore_into_a_database_the_app_writes_to_says_so(
    paused_copier, store_server, tmp_path, monkeypatch
):
    """The drill's flake, made to happen: the backup holds orders with pending audit
    entries, and the restore target's copier stores them between the restore's load
    and its count check. The restore fails, naming the cause."""
    source = paused_copier
    await trade(source, users=1)
    path = tmp_path / "pending.jsonl.gz"
    await backup(source.store.db, path)
    assert sum(bool(order.get("audit")) for order in backed_up(path)["orders"]) == 2

    target = await start_services(make_settings(store_server.url), feed=None)
    await target.trading.order_audit.close()  # its round is the one below, no other
    count_documents = AsyncCollection.count_documents
    rounds: list[int] = []

    async def counted_after_a_copier_round(self: AsyncCollection, *args: Any, **kw: Any) -> int:
        # The restore's count check (after its load), not its emptiness check nor
        # another part of the app counting.
        loaded = self.database.name == target.store.db.name and "limit" not in kw
        if loaded and not rounds and await count_documents(self.database["orders"], {}):
            rounds.append(await target.trading.order_audit.copy())
        return await count_documents(self, *args, **kw)

    monkeypatch.setattr(AsyncCollection, "count_documents", counted_after_a_copier_round)
    try:
        with pytest.raises(BackupError, match=r"audit_log.*more documents than the backup"):
            await restore(target.store.db, path, drop=True)
        assert rounds == [2]
    finally:
        monkeypatch.undo()
        await target.close()
