"""Versioned migrations of the stored documents.

Each migration is a module `NNNN_name.py` in this package with a docstring (what it
changes and why) and two coroutines working through pymongo:

    async def up(db: AsyncDatabase) -> None: ...
    async def down(db: AsyncDatabase) -> None: ...

Both must be idempotent (a migration cut off half-way is simply run again) and must
not need transactions (a standalone MongoDB and the embedded store have none).
Migrations import nothing from the app's models: they describe the data as it was
when they were written. Versions are contiguous from 1, so two branches that both
add 0002 fail loudly instead of silently skipping one.

Applied migrations are recorded in the `migrations` collection (one document per
version); a lock document there keeps two `cryptovault migrate` runs (or two
instances migrating on start) from interleaving.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

log = logging.getLogger(__name__)

COLLECTION = "migrations"
LOCK_ID = "lock"
# A lock older than this is taken to be left by a crashed run.
STALE_LOCK = timedelta(minutes=15)
_MODULE = re.compile(r"^(\d{4})_([a-z0-9_]+)$")


class MigrationError(Exception):
    """The migrations cannot run as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    description: str
    up: Callable[[AsyncDatabase], Awaitable[None]]
    down: Callable[[AsyncDatabase], Awaitable[None]]

    @property
    def id(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class Step:
    direction: Literal["up", "down"]
    migration: Migration
    duration_ms: float


def discover(package: str = __name__) -> list[Migration]:
    """Every migration module of `package`, in version order."""
    pkg = importlib.import_module(package)
    found: list[Migration] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        match = _MODULE.match(info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        up, down = getattr(module, "up", None), getattr(module, "down", None)
        if not (inspect.iscoroutinefunction(up) and inspect.iscoroutinefunction(down)):
            raise MigrationError(f"{info.name} must define `async def up(db)` and `down(db)`")
        doc = inspect.getdoc(module) or ""
        found.append(Migration(int(match.group(1)), match.group(2), doc.split("\n\n")[0], up, down))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..{len(found)} in order: {versions}")
    return found


async def applied(db: AsyncDatabase) -> dict[int, dict[str, Any]]:
    """Recorded migrations by version."""
    cursor = db[COLLECTION].find({"version": {"$exists": True}})
    return {doc["version"]: doc async for doc in cursor}


async def current_version(db: AsyncDatabase) -> int:
    return max(await applied(db), default=0)


async def pending(db: AsyncDatabase, migrations: list[Migration] | None = None) -> list[Migration]:
    done = await applied(db)
    migrations = migrations if migrations is not None else discover()
    return [m for m in migrations if m.version not in done]


def plan(
    migrations: list[Migration], done: set[int], target: int
) -> list[tuple[Literal["up", "down"], Migration]]:
    """Down every applied migration above `target` (newest first), then up every
    unapplied one up to `target` (oldest first)."""
    latest = len(migrations)
    if not 0 <= target <= latest:
        raise MigrationError(f"no migration {target}: versions are 0..{latest}")
    unknown = sorted(v for v in done if v > latest)
    if unknown:
        raise MigrationError(
            f"the store has migrations this code does not know ({unknown}): "
            "run a newer version, or roll back with that version first"
        )
    downs = [m for m in reversed(migrations) if m.version > target and m.version in done]
    ups = [m for m in migrations if m.version <= target and m.version not in done]
    return [("down", m) for m in downs] + [("up", m) for m in ups]


async def migrate(
    db: AsyncDatabase,
    target: int | None = None,
    *,
    steps_down: int | None = None,
    migrations: list[Migration] | None = None,
) -> list[Step]:
    """Bring the store to `target` (default: the latest version), or roll back the
    last `steps_down` applied migrations. Returns what ran."""
    migrations = migrations if migrations is not None else discover()
    holder = await _lock(db)
    try:
        done = set(await applied(db))
        if steps_down is not None:
            if steps_down < 0:
                raise MigrationError("--down needs a positive number of migrations")
            target = max(max(done, default=0) - steps_down, 0)
        todo = plan(migrations, done, len(migrations) if target is None else target)
        ran: list[Step] = []
        for direction, migration in todo:
            start = time.perf_counter()
            log.info(
                "migration starting", extra={"migration": migration.id, "direction": direction}
            )
            if direction == "up":
                await migration.up(db)
                await db[COLLECTION].replace_one(
                    {"_id": migration.id},
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "applied_at": datetime.now(UTC),
                        "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                    },
                    upsert=True,
                )
            else:
                await migration.down(db)
                await db[COLLECTION].delete_one({"_id": migration.id})
            step = Step(direction, migration, round((time.perf_counter() - start) * 1000, 1))
            log.info(
                "migration done",
                extra={
                    "migration": migration.id,
                    "direction": direction,
                    "duration_ms": step.duration_ms,
                },
            )
            ran.append(step)
        return ran
    finally:
        await db[COLLECTION].delete_one({"_id": LOCK_ID, "holder": holder})


async def _lock(db: AsyncDatabase) -> str:
    holder = uuid.uuid4().hex
    now = datetime.now(UTC)
    lock = {"_id": LOCK_ID, "holder": holder, "since": now}
    try:
        await db[COLLECTION].insert_one(lock)
        return holder
    except DuplicateKeyError:
        pass
    # Take over a lock left by a crashed run, atomically: only if it is still the
    # same stale lock.
    taken = await db[COLLECTION].find_one_and_update(
        {"_id": LOCK_ID, "since": {"$lt": now - STALE_LOCK}},
        {"$set": {"holder": holder, "since": now}},
    )
    if taken is None:
        current = await db[COLLECTION].find_one({"_id": LOCK_ID})
        since = current["since"].isoformat() if current else "just now"
        raise MigrationError(f"another migration run holds the lock (since {since})")
    log.warning("took over a stale migration lock", extra={"previous": taken.get("holder")})
    return holder
