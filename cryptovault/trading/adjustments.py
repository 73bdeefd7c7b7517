"""Admin balance adjustments, applied exactly once per idempotency key.

An adjustment is first written as its own document (keyed by user and the admin's
idempotency key), then its ledger entry (a deterministic id: written at most once),
then its audit entry (a fixed id), then marked done. A retry with the same key, or
the recovery sweep after a crash between those writes, finishes the same adjustment;
a debit that finds too little available is voided under the entry's id, so it is
refused for good (a retry answers INSUFFICIENT_FUNDS again, never debits later)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from cryptovault.documents.common import new_id, now_ms, to_decimal
from cryptovault.errors import BadUserInput, Conflict, InsufficientFunds
from cryptovault.security.audit import AuditLog
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading.ledger import HOUSE_FUNDING, Change, Ledger, Line, Outcome

MAX_KEY = 100


def _change(doc: dict[str, Any]) -> Change:
    amount = to_decimal(doc["amount"])
    txn = f"adjustment:{doc['_id']}"
    return Change(
        id=f"{txn}:0",
        account=doc["user_id"],
        asset=doc["asset"],
        available=amount,
        held=Decimal(0),
        kind="adjustment",
        lines=(Line(HOUSE_FUNDING, doc["asset"], -amount),),
        txn_id=txn,
        at=doc["created_at"],
    )


@dataclass
class Adjustments:
    collection: AsyncCollection
    ledger: Ledger
    audit: AuditLog
    clock: Callable[[], datetime] = now_ms

    async def adjust(
        self,
        actor: Viewer,
        user_id: str,
        asset: str,
        amount: Decimal,
        reason: str,
        key: str | None,
        origin: Origin,
    ) -> dict[str, Any]:
        """Apply the adjustment named by `key` once; returns its document."""
        if key is None:
            key = new_id()  # not retry-safe: README asks admins for a key
        elif not 1 <= len(key) <= MAX_KEY or not key.isprintable():
            raise BadUserInput(
                f"idempotencyKey must be 1 to {MAX_KEY} printable characters",
                field="idempotencyKey",
            )
        now = self.clock()
        doc = {
            "_id": f"{user_id}:{key}",
            "user_id": user_id,
            "asset": asset,
            "amount": Decimal128(amount),
            "reason": reason,
            "actor_id": actor.user_id,
            "actor_api_key_id": actor.api_key_id,
            "ip": origin.ip,
            "user_agent": origin.user_agent,
            "request_id": origin.request_id,
            "audit_id": new_id(),
            "state": "pending",
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": doc["_id"]})
            if existing is None:  # pragma: no cover - adjustments are never deleted
                raise Conflict("The adjustment is being written: try again") from None
            same = (existing["asset"], to_decimal(existing["amount"])) == (asset, amount)
            if not same:
                raise Conflict(
                    "idempotencyKey was already used for a different adjustment",
                    field="idempotencyKey",
                ) from None
            doc = existing
        return await self.finish(doc)

    async def finish(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Carry the adjustment through (idempotent): ledger entry, audit, done."""
        if doc["state"] == "refused":
            raise self._refused(doc)
        if doc["state"] == "pending":
            change = _change(doc)
            try:
                outcome = await self.ledger.apply(change)
            except InsufficientFunds:
                outcome = await self.ledger.void(change)
            if outcome is Outcome.VOID:
                await self._mark(doc, "refused")
                raise self._refused(doc)
            actor = Viewer(
                user_id=doc["actor_id"], role="ADMIN", api_key_id=doc.get("actor_api_key_id")
            )
            await self.audit.record(
                "admin.balance_adjusted",
                actor=actor,
                user_id=doc["user_id"],
                target=f"ledger:{change.txn_id}",
                origin=Origin(doc.get("ip"), doc.get("user_agent"), doc.get("request_id")),
                details={
                    "asset": doc["asset"],
                    "amount": to_decimal(doc["amount"]),
                    "reason": doc["reason"],
                },
                entry_id=doc["audit_id"],
            )
            doc = await self._mark(doc, "applied")
        return doc

    async def _mark(self, doc: dict[str, Any], state: str) -> dict[str, Any]:
        now = self.clock()
        await self.collection.update_one(
            {"_id": doc["_id"], "state": "pending"},
            {"$set": {"state": state, "updated_at": now}},
        )
        return {**doc, "state": state, "updated_at": now}

    @staticmethod
    def _refused(doc: dict[str, Any]) -> InsufficientFunds:
        return InsufficientFunds(
            f"Not enough {doc['asset']} available for this adjustment",
            asset=doc["asset"],
            required=str(-to_decimal(doc["amount"])),
        )

    def pending(self, older_than: datetime) -> Any:
        """Adjustments cut off before they were done (for the recovery sweep)."""
        return self.collection.find({"state": "pending", "created_at": {"$lt": older_than}})
