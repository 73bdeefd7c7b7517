"""The audit log. `AuditLog.record(...)` is the one function every feature calls for a
sensitive action (`services.audit.record(...)`); entries concerning a user are also
pushed live to that user's `securityEvents` subscribers on every instance.

An action whose own write can carry its entry (an order's placement and cancel:
trading/order_audit.py) builds it with `AuditLog.entry(...)`, stores it inside that
write, and a writer later copies it here with `AuditLog.store(...)`: its id is fixed
when it is built, so a copy repeated after a crash stores nothing twice."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.common import new_id, now_ms
from cryptovault.events.bus import EventBus
from cryptovault.events.hub import Hub
from cryptovault.paging import Listing, Page, page
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer

log = logging.getLogger(__name__)

SECURITY_CHANNEL = "security.events"
# A publish that failed is tried again after these delays (seconds), in the background:
# a revocation then still reaches the other instances' sockets within seconds rather
# than at their next credential recheck. A repeated message costs a redundant read.
PUBLISH_RETRIES = (0.2, 0.5, 1.0, 2.0, 5.0)
# Entries already pushed to securityEvents subscribers (a retried publish may arrive
# twice): the newest ids, enough to cover the retries' half a minute.
SEEN_ENTRIES = 4096
DUPLICATE_KEY = 11000
AUDIT = Listing("audit", default=50, maximum=200, sort_field="at")
# Never stored in details, whatever a caller passes (compared without case, _ and -).
SECRET_KEYS = frozenset(
    {
        "password",
        "newpassword",
        "currentpassword",
        "passwordhash",
        "token",
        "accesstoken",
        "refreshtoken",
        "resettoken",
        "otp",
        "code",
        "secret",
        "totpsecret",
        "key",
        "apikey",
        "recoverycode",
        "recoverycodes",
        "authorization",
        "cookie",
    }
)


def security_topic(user_id: str) -> str:
    return f"security:{user_id}"


def _is_secret(key: str) -> bool:
    return key.lower().replace("_", "").replace("-", "") in SECRET_KEYS


def clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Storable, secret-free details: secret-looking keys dropped, Decimals as exact
    strings, datetimes as ISO 8601, other unknown types as their text."""

    def value(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, datetime):
            return v.isoformat().replace("+00:00", "Z")
        if isinstance(v, Decimal):
            return format(v, "f")
        if isinstance(v, Mapping):
            return clean_details(v)
        if isinstance(v, (list, tuple, set, frozenset)):
            return [value(i) for i in v]
        return str(v)

    return {str(k): value(v) for k, v in details.items() if not _is_secret(str(k))}


class AuditLog:
    def __init__(self, bus: EventBus, hub: Hub, entries: AsyncCollection | None = None) -> None:
        self.bus = bus
        self.hub = hub
        # The audit_log collection (injected: tests interpose on it); by default the
        # model's, looked up when first written (after the store is initialised).
        self._entries = entries
        # Publishes being retried in the background, with their messages (`flush`).
        self._retries: dict[asyncio.Task[None], dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        # Told of each entry concerning a user on this instance at once, before it is
        # published (the bus brings it back later): e.g. the authentication cache, so
        # a logout's own instance refuses the token from the logout's answer on.
        self.local_listeners: list[Callable[[dict[str, Any]], None]] = []
        bus.subscribe(SECURITY_CHANNEL, self._on_event)

    @property
    def entries(self) -> AsyncCollection:
        if self._entries is None:
            self._entries = AuditEntryDocument.get_pymongo_collection()
        return self._entries

    @staticmethod
    def entry(
        action: str,
        *,
        actor: Viewer | str | None = None,
        user_id: str | None = None,
        target: str | None = None,
        origin: Origin | None = None,
        details: Mapping[str, Any] | None = None,
        entry_id: str | None = None,
    ) -> dict[str, Any]:
        """One entry as stored (its `_id` fixed now), without storing it: `record`'s
        arguments. For an action whose own write carries its entry (see the module)."""
        actor_id = actor.user_id if isinstance(actor, Viewer) else actor
        return {
            "_id": entry_id or new_id(),
            # Millisecond precision: what the store keeps, so cursors match reads.
            "at": now_ms(),
            "action": action,
            "actor_id": actor_id,
            "actor_api_key_id": actor.api_key_id if isinstance(actor, Viewer) else None,
            "user_id": user_id if user_id is not None else actor_id,
            "target": target,
            "ip": origin.ip if origin else None,
            "user_agent": origin.user_agent if origin else None,
            "request_id": origin.request_id if origin else None,
            "details": clean_details(details or {}),
        }

    async def record(
        self,
        action: str,
        *,
        actor: Viewer | str | None = None,
        user_id: str | None = None,
        target: str | None = None,
        origin: Origin | None = None,
        details: Mapping[str, Any] | None = None,
        entry_id: str | None = None,
    ) -> AuditEntryDocument:
        """Write one entry and return it.

        action:  dotted name, e.g. "order.placed", "order.canceled", "admin.balance_adjusted".
        actor:   who acted: the request's Viewer, a user id, or None (anonymous/system).
        user_id: the account concerned (defaults to the actor's): it sees the entry in
                 its `securityEvents`.
        target:  "<kind>:<id>" of the object acted on, e.g. "order:65f0c1...".
        origin:  the request's Origin (ip, user agent, request id): `info.context.origin`.
        details: small JSON-able facts; secret-looking keys (password, token, otp, code,
                 key, ...) are dropped, Decimals stored as exact strings.
        entry_id: a fixed id (a new ObjectId hex), for an entry that a retry or the
                 recovery sweep may write again: it is then recorded once.
        Raises on a store failure: an action that must be audited should not pass
        silently unaudited."""
        stored = self.entry(
            action,
            actor=actor,
            user_id=user_id,
            target=target,
            origin=origin,
            details=details,
            entry_id=entry_id,
        )
        try:
            await self.entries.insert_one(stored)
        except DuplicateKeyError:
            if entry_id is None:
                raise
            found = await self.entries.find_one({"_id": entry_id})  # recorded already
            return AuditEntryDocument.model_validate(found or stored)
        entry = AuditEntryDocument.model_validate(stored)
        await self._announce(entry)
        return entry

    async def store(self, entries: list[dict[str, Any]]) -> None:
        """Store entries built by `entry` (each with its fixed id) in one command, then
        push each to its user's `securityEvents`. An entry stored before (a copy
        repeated after the copier died between storing and clearing it) is not stored
        again; it is pushed again, and every instance drops a push whose entry it has
        seen (by id), so a push lost with the copier is made up for."""
        if not entries:
            return
        try:
            await self.entries.insert_many(entries, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if exc.details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
        for stored in entries:
            await self._announce(AuditEntryDocument.model_validate(stored))

    async def _announce(self, entry: AuditEntryDocument) -> None:
        """Push a stored entry concerning a user to its `securityEvents`, here at once
        and on every instance through the bus (retried in the background)."""
        if entry.user_id is None:
            return
        message = entry.model_dump(mode="json")
        for listener in self.local_listeners:
            listener(message)
        try:
            await self.bus.publish(SECURITY_CHANNEL, message)
        except Exception:
            # The entry is stored; the live notification is tried again.
            log.warning("could not publish a security event: retrying", exc_info=True)
            task = asyncio.create_task(self._republish(message))
            self._retries[task] = message
            task.add_done_callback(lambda done: self._retries.pop(done, None))

    async def _republish(self, message: dict[str, Any]) -> None:
        for delay in PUBLISH_RETRIES:
            await asyncio.sleep(delay)
            try:
                await self.bus.publish(SECURITY_CHANNEL, message)
                return
            except Exception:
                continue
        # Open sockets still see the change at their next credential recheck.
        log.error("a security event was not published", extra={"action": message["action"]})

    async def flush(self, timeout: float = 2.0) -> int:
        """Before the bus closes (shutdown, the end of a CLI command): stop waiting
        between retries and try every unsent security event once more, now, all at
        once and within `timeout` in all (a hung bus cannot hold shutdown up).
        Returns how many are still unsent (logged)."""
        pending = dict(self._retries)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # A task that finished on its own was sent, or given up on and logged.
        unsent = [message for task, message in pending.items() if task.cancelled()]
        tries = [asyncio.ensure_future(self.bus.publish(SECURITY_CHANNEL, m)) for m in unsent]
        if not tries:
            return 0
        _sent, late = await asyncio.wait(tries, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        failed = 0
        for task, message in zip(tries, unsent, strict=True):
            if task in late or task.exception() is not None:
                failed += 1
                log.error("a security event was not published", extra={"action": message["action"]})
        return failed

    async def _on_event(self, message: dict[str, Any]) -> None:
        entry = AuditEntryDocument.model_validate(message)
        if entry.user_id is None or entry.id in self._seen:
            return
        self._seen[entry.id] = None
        if len(self._seen) > SEEN_ENTRIES:
            self._seen.popitem(last=False)
        self.hub.publish(security_topic(entry.user_id), entry)

    async def page(
        self,
        first: int | None,
        after: str | None = None,
        *,
        user_id: str | None = None,
        action: str | None = None,
        own_user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[AuditEntryDocument]:
        """Newest first by (at, id). `user_id` matches entries where the user acted or
        was concerned (admin filter); `own_user_id` only those concerning the user."""
        clauses: list[dict[str, Any]] = []
        if own_user_id is not None:
            clauses.append({"user_id": own_user_id})
        if user_id is not None:
            clauses.append({"$or": [{"user_id": user_id}, {"actor_id": user_id}]})
        if action is not None:
            clauses.append({"action": action})
        if since is not None:
            clauses.append({"at": {"$gte": since}})
        if until is not None:
            clauses.append({"at": {"$lt": until}})
        query: dict[str, Any] = {"$and": clauses} if clauses else {}
        return await page(AuditEntryDocument, AUDIT, query, first, after)
