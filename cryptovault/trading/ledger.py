"""The ledger and balances, without multi-document transactions.

A movement is a set of legs (one per account and asset) that sum to zero per asset.
Each leg is applied to its balance document by ONE atomic conditional update that also
records the leg's id and the total after it in the document (`applied`), so applying a
leg twice (a retry, a recovery after a crash) changes nothing; the immutable ledger
entry is then inserted under the same deterministic id. Holds move money between
`available` and `held` of one balance the same way, without a ledger entry (the total
does not change)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from beanie import SortDirection
from bson import Decimal128
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cryptovault.documents.common import now_ms
from cryptovault.documents.trading import BalanceDocument, LedgerEntryDocument
from cryptovault.errors import InsufficientFunds

HOUSE_MARKET = "house:market"  # the counterparty of every trade
HOUSE_FEES = "house:fees"
HOUSE_FUNDING = "house:funding"  # paper money: starting balances, admin adjustments
USD = "USD"
APPLIED_KEPT = 64  # recent movement ids kept per balance for idempotency


@dataclass(frozen=True, slots=True)
class Leg:
    account: str
    asset: str
    amount: Decimal  # signed: + credits, - debits
    kind: str
    from_held: bool = False  # a debit of held funds (a fill consuming its hold)

    @property
    def is_house(self) -> bool:
        return self.account.startswith("house:")


def _d128(value: Decimal) -> Decimal128:
    return Decimal128(value)


def balance_id(account: str, asset: str) -> str:
    return f"{account}:{asset}"


class Ledger:
    def __init__(self) -> None:
        self.collection = BalanceDocument.get_pymongo_collection()
        self.entries = LedgerEntryDocument.get_pymongo_collection()

    async def _apply(
        self,
        op_id: str,
        account: str,
        asset: str,
        d_available: Decimal,
        d_held: Decimal,
        guard: dict[str, Any],
    ) -> tuple[Decimal | None, dict[str, Any] | None]:
        """Atomically add to available/held unless `op_id` was applied already and
        when `guard` holds. Returns (total after, None) when applied now, else
        (None, the current document) — whose `applied` tells whether it was before."""
        bid = balance_id(account, asset)
        da, dh = _d128(d_available), _d128(d_held)
        update = [
            {
                "$set": {
                    "available": {"$add": ["$available", da]},
                    "held": {"$add": ["$held", dh]},
                    "applied": {
                        "$concatArrays": [
                            {"$slice": ["$applied", -(APPLIED_KEPT - 1)]},
                            [{"id": op_id, "after": {"$add": ["$available", "$held", da, dh]}}],
                        ]
                    },
                }
            }
        ]
        query = {"_id": bid, "applied.id": {"$ne": op_id}, **guard}
        current: dict[str, Any] | None = None
        for _ in range(3):
            done = await self.collection.find_one_and_update(
                query, update, return_document=ReturnDocument.AFTER
            )
            if done is not None:
                return done["applied"][-1]["after"].to_decimal(), None
            current = await self.collection.find_one({"_id": bid})
            if current is None:
                # First movement of this account and asset: open the balance, retry.
                with contextlib.suppress(DuplicateKeyError):
                    await self.collection.insert_one(
                        {
                            "_id": bid,
                            "account": account,
                            "asset": asset,
                            "available": _d128(Decimal(0)),
                            "held": _d128(Decimal(0)),
                            "applied": [],
                        }
                    )
            elif self._applied_after(current, op_id) is not None or guard:
                # Applied before, or the guard refused it (the caller tells which).
                return None, current
            # Else the balance was created by a concurrent first movement after our
            # update looked for it: try again.
        return None, current

    @staticmethod
    def _applied_after(current: dict[str, Any] | None, op_id: str) -> Decimal | None:
        for item in (current or {}).get("applied", []):
            if item["id"] == op_id:
                return item["after"].to_decimal()
        return None

    async def hold(self, op_id: str, account: str, asset: str, amount: Decimal) -> None:
        """Move `amount` from available to held, or raise INSUFFICIENT_FUNDS."""
        after, current = await self._apply(
            op_id, account, asset, -amount, amount, {"available": {"$gte": _d128(amount)}}
        )
        if after is None and self._applied_after(current, op_id) is None:
            raise InsufficientFunds(
                f"Not enough {asset} available", asset=asset, required=str(amount)
            )

    async def release(self, op_id: str, account: str, asset: str, amount: Decimal) -> None:
        """Move `amount` back from held to available (idempotent)."""
        if amount > 0:
            await self._apply(op_id, account, asset, amount, -amount, {})

    async def post(
        self,
        txn_id: str,
        legs: list[Leg],
        *,
        order_id: str | None = None,
        trade_id: str | None = None,
        at: datetime | None = None,
    ) -> list[LedgerEntryDocument]:
        """Apply a movement's legs and write its ledger entries. Idempotent: call it
        again with the same txn id (e.g. from the recovery sweep) to finish it."""
        per_asset: dict[str, Decimal] = {}
        for leg in legs:
            per_asset[leg.asset] = per_asset.get(leg.asset, Decimal(0)) + leg.amount
        if any(per_asset.values()):
            raise ValueError(f"unbalanced movement {txn_id}: {per_asset}")
        at = at or now_ms()
        entries: list[LedgerEntryDocument] = []
        for n, leg in enumerate(legs):
            entry_id = f"{txn_id}:{n}"
            if leg.is_house:
                # House accounts (the market, fees, paper funding) are unbounded
                # counterparties: no cached balance, no contention on a hot document.
                entries.append(self._entry(entry_id, txn_id, leg, None, order_id, trade_id, at))
                continue
            guard: dict[str, Any] = {}
            d_available, d_held = leg.amount, Decimal(0)
            if leg.from_held:
                d_available, d_held = Decimal(0), leg.amount
                guard = {"held": {"$gte": _d128(-leg.amount)}}
            elif leg.amount < 0:
                guard = {"available": {"$gte": _d128(-leg.amount)}}
            after, current = await self._apply(
                entry_id, leg.account, leg.asset, d_available, d_held, guard
            )
            if after is None:
                after = self._applied_after(current, entry_id)
            if after is None:
                if n == 0:
                    raise InsufficientFunds(f"Not enough {leg.asset} available", asset=leg.asset)
                # Later legs cannot fail: their funds were held, or they are credits.
                raise RuntimeError(f"ledger leg {entry_id} could not be applied")
            entries.append(self._entry(entry_id, txn_id, leg, after, order_id, trade_id, at))
        docs = [e.model_dump(by_alias=True) for e in entries]
        for d in docs:
            for key in ("amount", "balance_after"):
                if d[key] is not None:
                    d[key] = _d128(d[key])
        try:
            await self.entries.insert_many(docs, ordered=False)
        except (BulkWriteError, DuplicateKeyError) as exc:
            # Entries written by an earlier try are the same: only duplicates are fine.
            errors = getattr(exc, "details", {}).get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
        return entries

    @staticmethod
    def _entry(
        entry_id: str,
        txn_id: str,
        leg: Leg,
        after: Decimal | None,
        order_id: str | None,
        trade_id: str | None,
        at: datetime,
    ) -> LedgerEntryDocument:
        return LedgerEntryDocument(
            id=entry_id,
            txn_id=txn_id,
            account=leg.account,
            asset=leg.asset,
            amount=leg.amount,
            balance_after=after,
            kind=leg.kind,
            order_id=order_id,
            trade_id=trade_id,
            created_at=at,
        )

    async def written(self, entry_id: str) -> bool:
        return await self.entries.find_one({"_id": entry_id}, {"_id": 1}) is not None

    async def balances(self, account: str) -> list[BalanceDocument]:
        return (
            await BalanceDocument.find({"account": account})
            .sort([("asset", SortDirection.ASCENDING)])
            .to_list()
        )
