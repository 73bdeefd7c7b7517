"""A user's books: per-asset positions at weighted average cost, realized P&L and the
external flows (deposits, admin adjustments), folded from the user's own ledger
entries and checkpointed in the store, so that reading them costs the same few store
commands whatever the length of the history.

The fold reads the ledger, the source of truth, and never writes to it. A trade is
folded from its two legs in the user's account (the asset and the USD, fees and
rounding included), so the cost basis is exactly the cash that moved.

Keeping the checkpoint right without transactions:
- it records how many of the user's entries it has folded; the ledger only grows, so
  when the count of the user's entries equals it, nothing is missing (the common case:
  one point read and one count);
- otherwise the entries newer than (the newest folded - GRACE) are read, those
  already folded skipped by id, the rest folded; if that does not account for every
  entry (one written late, e.g. a fill completed by the recovery sweep after a crash)
  or an asset's entries arrived out of order, everything is refolded from the start;
- the checkpoint is saved with a version check, so concurrent readers never fold an
  entry twice: a loser's result is as correct, just not saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from beanie import SortDirection
from bson import Decimal128
from pymongo.errors import DuplicateKeyError

from cryptovault.documents.common import now_ms, to_decimal
from cryptovault.documents.portfolio import PortfolioBookDocument
from cryptovault.documents.trading import LedgerEntryDocument
from cryptovault.portfolio.performance import ZERO, Position
from cryptovault.trading.ledger import RESERVATION_KINDS, USD

log = logging.getLogger(__name__)

# How late an entry may be written after its timestamp and still be picked up by the
# incremental fold (later ones are found by the count and trigger a full refold).
GRACE = timedelta(seconds=60)
TRADE = "trade"
PriceOf = Callable[[str], Decimal | None]


@dataclass
class Books:
    user_id: str
    positions: dict[str, Position] = field(default_factory=dict)
    # Deposits and admin adjustments (withdrawals negative), in USD: USD at face value,
    # an asset at its last price when first folded (kept per entry in flow_values, so
    # a refold values it the same).
    net_flows: Decimal = ZERO
    flow_values: dict[str, Decimal] = field(default_factory=dict)
    entries: int = 0  # ledger entries folded
    through: datetime | None = None  # the newest entry time folded
    recent: dict[str, datetime] = field(default_factory=dict)  # ids folded within GRACE
    last: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # per asset
    version: int = 0

    @property
    def realized_pnl(self) -> Decimal:
        return sum((p.realized_pnl for p in self.positions.values()), ZERO)

    def position(self, asset: str) -> Position:
        found = self.positions.get(asset)
        if found is None:
            found = self.positions[asset] = Position()
        return found

    def copy(self) -> Books:
        return Books(
            user_id=self.user_id,
            positions={
                a: Position(p.quantity, p.cost, p.realized_pnl) for a, p in self.positions.items()
            },
            net_flows=self.net_flows,
            flow_values=dict(self.flow_values),
            entries=self.entries,
            through=self.through,
            recent=dict(self.recent),
            last=dict(self.last),
            version=self.version,
        )

    def fresh(self) -> Books:
        """Empty books that keep the values already given to asset flows."""
        return Books(self.user_id, flow_values=dict(self.flow_values), version=self.version)

    # -- folding ---------------------------------------------------------------------

    def fold(self, entries: Iterable[dict[str, Any]], price_of: PriceOf) -> int:
        """Fold raw ledger entries (in (created_at, _id) order); returns how many were
        left out because the other leg of their trade is not written yet."""
        legs: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            if entry["kind"] in RESERVATION_KINDS:
                self._folded(entry)  # moves money within a balance: nothing gained or lost
            elif entry["kind"] == TRADE:
                group = legs.setdefault(entry["txn_id"], [])
                group.append(entry)
                if len(group) == 2:
                    self._trade(group)
                    del legs[entry["txn_id"]]
            else:
                self._flow(entry, price_of)
        return sum(len(group) for group in legs.values())

    def _trade(self, legs: list[dict[str, Any]]) -> None:
        cash = next(e for e in legs if e["asset"] == USD)
        units = next(e for e in legs if e["asset"] != USD)
        quantity, usd = to_decimal(units["amount"]), to_decimal(cash["amount"])
        position = self.position(units["asset"])
        if quantity > 0:
            position.buy(quantity, -usd)
        else:
            position.sell(-quantity, usd)
        for entry in legs:
            self._folded(entry)

    def _flow(self, entry: dict[str, Any], price_of: PriceOf) -> None:
        """Funding, an admin adjustment (or any movement that is not a trade): money
        from outside, not return."""
        amount, asset = to_decimal(entry["amount"]), entry["asset"]
        if asset == USD:
            self.net_flows += amount
        else:
            value = self.flow_values.get(entry["_id"])
            if value is None:
                price = price_of(asset)
                value = amount * price if price is not None else ZERO
                self.flow_values[entry["_id"]] = value
            self.net_flows += value
            if amount > 0:
                self.position(asset).credit(amount)
            else:
                self.position(asset).debit(-amount)
        self._folded(entry)

    def _folded(self, entry: dict[str, Any]) -> None:
        at: datetime = entry["created_at"]
        self.entries += 1
        if self.through is None or at > self.through:
            self.through = at
        self.recent[entry["_id"]] = at
        if entry["asset"] != USD:
            key = (at, entry["_id"])
            if entry["asset"] not in self.last or key > self.last[entry["asset"]]:
                self.last[entry["asset"]] = key

    def prune(self) -> None:
        if self.through is not None:
            edge = self.through - GRACE
            self.recent = {i: at for i, at in self.recent.items() if at >= edge}

    def out_of_order(self, entries: Iterable[dict[str, Any]]) -> bool:
        """Whether an asset entry is older than one already folded for that asset: the
        weighted average depends on the order, so the fold must start over."""
        for entry in entries:
            last = self.last.get(entry["asset"])
            if last is not None and (entry["created_at"], entry["_id"]) < last:
                return True
        return False

    # -- the stored checkpoint -------------------------------------------------------

    def to_raw(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "positions": {
                asset: {
                    "quantity": Decimal128(p.quantity),
                    "cost": Decimal128(p.cost),
                    "realized": Decimal128(p.realized_pnl),
                }
                for asset, p in self.positions.items()
            },
            "net_flows": Decimal128(self.net_flows),
            "flow_values": [{"id": i, "value": Decimal128(v)} for i, v in self.flow_values.items()],
            "entries": self.entries,
            "through": self.through,
            "recent": [{"id": i, "at": at} for i, at in self.recent.items()],
            "last": {asset: {"at": at, "id": i} for asset, (at, i) in self.last.items()},
            "version": self.version,
            "updated_at": now_ms(),
        }

    @classmethod
    def from_raw(cls, user_id: str, raw: dict[str, Any] | None) -> Books:
        if raw is None:
            return cls(user_id)
        return cls(
            user_id=user_id,
            positions={
                asset: Position(
                    to_decimal(p["quantity"]), to_decimal(p["cost"]), to_decimal(p["realized"])
                )
                for asset, p in raw.get("positions", {}).items()
            },
            net_flows=to_decimal(raw.get("net_flows", 0)),
            flow_values={f["id"]: to_decimal(f["value"]) for f in raw.get("flow_values", [])},
            entries=int(raw.get("entries", 0)),
            through=raw.get("through"),
            recent={r["id"]: r["at"] for r in raw.get("recent", [])},
            last={asset: (v["at"], v["id"]) for asset, v in raw.get("last", {}).items()},
            version=int(raw.get("version", 0)),
        )


LEDGER_FIELDS = {"txn_id": 1, "asset": 1, "amount": 1, "kind": 1, "created_at": 1}
ORDER = [("created_at", SortDirection.ASCENDING), ("_id", SortDirection.ASCENDING)]


class BooksStore:
    """Loads a user's books, bringing the stored checkpoint up to date."""

    def __init__(self) -> None:
        self.refolds = 0  # full refolds done (they read the whole history)

    @staticmethod
    def _ledger():
        return LedgerEntryDocument.get_pymongo_collection()

    @staticmethod
    def _books():
        return PortfolioBookDocument.get_pymongo_collection()

    async def load(self, user_id: str, price_of: PriceOf) -> Books:
        raw = await self._books().find_one({"_id": user_id})
        saved = Books.from_raw(user_id, raw)
        total = await self._ledger().count_documents({"account": user_id})
        if total == saved.entries:
            return saved
        books = await self._catch_up(saved, total, price_of)
        if books is None:
            self.refolds += 1
            books = saved.fresh()
            cursor = self._ledger().find({"account": user_id}, LEDGER_FIELDS).sort(ORDER)
            books.fold([e async for e in cursor], price_of)
        books.prune()
        await self._save(books, raw is not None, saved.version)
        return books

    async def _catch_up(self, saved: Books, total: int, price_of: PriceOf) -> Books | None:
        """Fold the entries written since the checkpoint; None if that cannot account
        for every entry (then the caller refolds everything)."""
        if saved.through is None or saved.entries > total:
            return None
        cursor = (
            self._ledger()
            .find(
                {"account": saved.user_id, "created_at": {"$gte": saved.through - GRACE}},
                LEDGER_FIELDS,
            )
            .sort(ORDER)
        )
        new = [e async for e in cursor if e["_id"] not in saved.recent]
        if saved.out_of_order(new):
            return None
        books = saved.copy()
        waiting = books.fold(new, price_of)
        return books if books.entries + waiting == total else None

    async def _save(self, books: Books, exists: bool, version: int) -> None:
        books.version = version + 1
        try:
            if exists:
                await self._books().update_one(
                    {"_id": books.user_id, "version": version}, {"$set": books.to_raw()}
                )
            else:
                await self._books().insert_one({"_id": books.user_id, **books.to_raw()})
        except DuplicateKeyError:
            pass  # a concurrent reader saved the same books first
        except Exception:
            # The books returned are right; only the checkpoint is not advanced.
            log.warning("could not save a portfolio checkpoint", exc_info=True)
