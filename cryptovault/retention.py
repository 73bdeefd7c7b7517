"""Data retention: documents older than their collection's period are deleted by a
periodic sweep. A feature registers its collection once at start-up:

    services.retention.register("audit_log", "at", timedelta(days=settings.audit_retention_days))

The sweep runs on the instance holding the feed lease (one instance does the work),
every RETENTION_SWEEP_MINUTES. It does not rely on TTL indexes: the embedded store
applies those lazily, and a period set in the environment can change without an
index rebuild. Closed candles keep their own per-interval retention
(market/candles.py RETENTION)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.database import AsyncDatabase

if TYPE_CHECKING:
    from cryptovault.observability.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    collection: str
    time_field: str  # a BSON date
    period: timedelta
    # Only documents matching this filter expire (e.g. {"kind": "login"}).
    where: Mapping[str, Any] = field(default_factory=dict)

    def filter(self, now: datetime) -> dict[str, Any]:
        return {**self.where, self.time_field: {"$lt": now - self.period}}


class Retention:
    def __init__(
        self,
        db: AsyncDatabase,
        every: timedelta = timedelta(hours=1),
        *,
        is_active: Callable[[], bool] = lambda: True,
        metrics: Metrics | None = None,
        first_delay: timedelta = timedelta(minutes=1),
    ) -> None:
        self.db = db
        self.every = every
        self.first_delay = first_delay
        self.is_active = is_active
        self.metrics = metrics
        self.rules: list[RetentionRule] = []
        self._task: asyncio.Task[None] | None = None

    def register(
        self,
        collection: str,
        time_field: str,
        period: timedelta,
        where: Mapping[str, Any] | None = None,
    ) -> RetentionRule:
        if period <= timedelta(0):
            raise ValueError(f"retention period of {collection} must be positive")
        rule = RetentionRule(collection, time_field, period, dict(where or {}))
        self.rules.append(rule)
        return rule

    async def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what every rule has let expire; returns the count per collection.
        One failing rule does not stop the others."""
        now = now or datetime.now(UTC)
        deleted: dict[str, int] = {}
        for rule in self.rules:
            try:
                result = await self.db[rule.collection].delete_many(rule.filter(now))
            except Exception:
                log.exception("retention sweep failed", extra={"collection": rule.collection})
                continue
            deleted[rule.collection] = deleted.get(rule.collection, 0) + result.deleted_count
            if self.metrics is not None:
                self.metrics.retention_swept(rule.collection, result.deleted_count)
        if any(deleted.values()):
            log.info("retention sweep", extra={"deleted": deleted})
        return deleted

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay.total_seconds())
        while True:
            if self.rules and self.is_active():
                await self.sweep()
            await asyncio.sleep(self.every.total_seconds())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
