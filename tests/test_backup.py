"""Backup and restore on the embedded store over the wire: every collection, every
BSON type back exactly (Decimal128, dates, ObjectIds, int64), indexes recreated, and
refusals that protect data already in place."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.backup import FORMAT, BackupError, backup, read_header, restore
from cryptovault.migrations import LOCK_ID, discover, migrate

ROOT = os.path.dirname(os.path.dirname(__file__))
T0 = datetime(2025, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)


@pytest.fixture
async def new_db(store_server) -> AsyncIterator[Callable[[], AsyncDatabase]]:
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    names: list[str] = []

    def make() -> AsyncDatabase:
        names.append(f"test_bak_{uuid.uuid4().hex[:10]}")
        return client[names[-1]]

    yield make
    for name in names:
        await client.drop_database(name)
    await client.close()


async def fill(db: AsyncDatabase) -> None:
    await migrate(db)  # a `migrations` record travels with the data
    await db["candles"].insert_many(
        [
            {
                "_id": f"BTC:1m:{int((T0 + timedelta(minutes=i)).timestamp())}",
                "symbol": "BTC",
                "interval": "1m",
                "start": T0 + timedelta(minutes=i),
                "end": T0 + timedelta(minutes=i + 1),
                "open": Decimal128("91342.37"),
                "high": Decimal128("91400.00000001"),
                "low": Decimal128("-0.5E-10"),
                "close": Decimal128("91350.1"),
                "volume": Decimal128("0.000000000000000001"),
                "ticks": i,
            }
            for i in range(12)
        ]
    )
    await db["ledger"].insert_many(
        [
            {
                "_id": ObjectId(),
                "user": "u-1",
                "amount": Decimal128("-1234.5678"),
                "seq": Int64(2**40 + i),
                "at": T0,
                "tags": ["fill", {"nested": [1, 2.5, None, True]}],
                "note": "ünïcødé ✓",
                "raw": b"\x00\x01bytes",
            }
            for i in range(3)
        ]
    )
    await db["ledger"].create_index([("user", 1), ("seq", -1)], name="user_seq", unique=True)
    await db.create_collection("empty_on_purpose")
    # A migration run's lock is not data: it must not be restored.
    await db["migrations"].insert_one({"_id": LOCK_ID, "holder": "x", "since": T0})


def typed(value: Any) -> Any:
    """Values with their BSON types, so Int64 vs int or Decimal128 vs str differ."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


async def dump(db: AsyncDatabase) -> dict[str, list[Any]]:
    out = {}
    for name in sorted(await db.list_collection_names()):
        docs = [typed(d) async for d in db[name].find({})]
        out[name] = sorted(docs, key=repr)
    return out


async def test_backup_then_restore_into_a_fresh_database_gives_identical_documents(
    new_db, tmp_path
):
    source, target = new_db(), new_db()
    await fill(source)
    path = tmp_path / "cv.jsonl.gz"
    summary = await backup(source, path)
    assert summary.counts["candles"] == 12 and summary.counts["ledger"] == 3
    assert summary.counts["empty_on_purpose"] == 0
    assert summary.counts["migrations"] == len(discover())  # the lock was left out
    assert os.stat(path).st_mode & 0o777 == 0o600
    header = read_header(path)
    assert header["format"] == FORMAT and header["version"] == 1
    assert header["database"] == source.name and header["collections"] == summary.counts
    # Extended JSON lines, canonical: exact types are spelled out.
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 + summary.documents
    assert '{"$numberDecimal": "91342.37"}' in lines[1]
    assert '"$numberLong"' in "".join(lines)

    restored = await restore(target, path)
    assert restored.counts == summary.counts
    expected = await dump(source)
    expected["migrations"] = [d for d in expected["migrations"] if d["_id"] != ("str", LOCK_ID)]
    # Restore also creates the app's own (empty) collections with their indexes.
    got = {name: docs for name, docs in (await dump(target)).items() if docs or name in expected}
    assert got == expected
    indexes = await target["ledger"].index_information()
    assert indexes["user_seq"]["unique"] is True
    assert "interval_end" in await target["candles"].index_information()  # the app's own


async def test_restore_refuses_a_database_with_data_unless_dropping(new_db, tmp_path):
    source, target = new_db(), new_db()
    await fill(source)
    path = tmp_path / "cv.jsonl.gz"
    await backup(source, path)
    await target["candles"].insert_one({"_id": "stray", "symbol": "XRP"})
    with pytest.raises(BackupError, match="candles already hold documents"):
        await restore(target, path)
    assert await target["candles"].count_documents({}) == 1
    await restore(target, path, drop=True)
    assert await target["candles"].find_one({"_id": "stray"}) is None
    assert await target["candles"].count_documents({}) == 12


async def test_a_file_that_is_not_a_backup_is_refused(new_db, tmp_path):
    for content in (b"not gzip at all", gzip.compress(b'{"format": "other"}\n')):
        path = tmp_path / "bad.gz"
        path.write_bytes(content)
        with pytest.raises(BackupError):
            await restore(new_db(), path)
    future = tmp_path / "future.gz"
    future.write_bytes(gzip.compress(b'{"format": "cryptovault-backup", "version": 99}\n'))
    with pytest.raises(BackupError, match="version 99"):
        read_header(future)


async def test_cli_backup_and_restore_round_trip(store_server, new_db, tmp_path):
    source, target = new_db(), new_db()
    await fill(source)
    path = tmp_path / "cli.jsonl.gz"

    async def run(db_name: str, *args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "MONGODB_URL": store_server.url,
            "MONGODB_DB": db_name,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
        }
        # In a thread: the embedded store serves from this process's event loop.
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cryptovault", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = await run(source.name, "backup", "--out", str(path))
    assert done.returncode == 0, done.stderr
    # fill()'s 15 documents and a record per migration.
    assert f"backed up {15 + len(discover())} documents from 4 collections" in done.stdout
    # A copy cut off mid-way: one line naming the file, exit 1, no traceback.
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    broken = await run(new_db().name, "restore", str(cut))
    assert broken.returncode == 1 and str(cut) in broken.stderr
    assert "Traceback" not in broken.stderr
    done = await run(target.name, "restore", str(path))
    assert done.returncode == 0, done.stderr
    assert f"backup of {source.name}" in done.stdout
    again = await run(target.name, "restore", str(path))
    assert again.returncode == 1 and "--drop" in again.stderr
    assert await target["ledger"].count_documents({}) == 3
