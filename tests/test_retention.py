"""Retention: documents older than their collection's period go, newer ones and
documents outside the rule's filter stay; the periodic sweep runs only on the
instance that holds the feed lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.observability.metrics import Metrics
from cryptovault.retention import Retention

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
async def db(store_server) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    name = f"test_ret_{uuid.uuid4().hex[:10]}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


async def ids(db: AsyncDatabase, collection: str) -> set[str]:
    return {d["_id"] async for d in db[collection].find({})}


async def test_sweep_deletes_only_what_each_rule_let_expire(db):
    await db["audit_log"].insert_many(
        [
            {"_id": "old", "at": NOW - timedelta(days=400)},
            {"_id": "recent", "at": NOW - timedelta(days=10)},
        ]
    )
    await db["login_attempts"].insert_many(
        [
            {"_id": "old-failed", "at": NOW - timedelta(days=100), "ok": False},
            {"_id": "old-success", "at": NOW - timedelta(days=100), "ok": True},
            {"_id": "new-failed", "at": NOW - timedelta(days=1), "ok": False},
        ]
    )
    metrics = Metrics()
    retention = Retention(db, metrics=metrics)
    retention.register("audit_log", "at", timedelta(days=365))
    retention.register("login_attempts", "at", timedelta(days=90), where={"ok": False})

    assert await retention.sweep(NOW) == {"audit_log": 1, "login_attempts": 1}
    assert await ids(db, "audit_log") == {"recent"}
    assert await ids(db, "login_attempts") == {"old-success", "new-failed"}
    assert await retention.sweep(NOW) == {"audit_log": 0, "login_attempts": 0}
    text = metrics.render().decode()
    assert 'cryptovault_retention_deleted_total{collection="audit_log"} 1.0' in text


def test_periods_must_be_positive(db):
    with pytest.raises(ValueError, match="positive"):
        Retention(db).register("audit_log", "at", timedelta(0))


async def test_the_periodic_sweep_runs_only_while_the_instance_leads(db):
    await db["audit_log"].insert_one({"_id": "old", "at": datetime.now(UTC) - timedelta(days=9)})
    leading = False
    consulted = 0

    def is_leader() -> bool:
        nonlocal consulted
        consulted += 1
        return leading

    retention = Retention(
        db, timedelta(milliseconds=5), is_active=is_leader, first_delay=timedelta(0)
    )
    retention.register("audit_log", "at", timedelta(days=7))
    retention.start()
    try:
        async with asyncio.timeout(10):
            while consulted < 3:
                await asyncio.sleep(0.005)
        assert await ids(db, "audit_log") == {"old"}  # a follower never deletes
        leading = True
        async with asyncio.timeout(10):
            while await ids(db, "audit_log"):
                await asyncio.sleep(0.005)
    finally:
        await retention.close()


async def test_services_run_a_retention_job(services):
    assert services.retention is not None and services.retention.is_active()
