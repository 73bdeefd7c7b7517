"""The ledger and balances: every change applied exactly once, forever, without
multi-document transactions.

The ledger is the source of truth and a balance document is a cache of it that any
process can bring up to date:
- An entry is one change to one user balance (`available` and `held`), together with
  the house lines that balance it, so each entry sums to zero per asset on its own: a
  crash between two entries of a movement never unbalances the books.
- Its id is deterministic (the movement and leg it belongs to), so an entry exists at
  most once: whether a change was applied is answered by looking its id up, however
  late the question is asked. No window of recent ids.
- The entries of one balance are numbered 1, 2, 3, ... (`seq`, unique through
  `slot`). Writing an entry takes the next number and is checked against the balance
  as of the number before (available and held never negative): a writer that saw a
  stale balance cannot take a number someone else took.
- The balance records the number it includes (`seq`) and moves from n to n + 1 by
  one conditional update adding entry n + 1's amounts; whoever finds an entry the
  balance does not include yet (its writer died in between) applies it.
- The entries of one movement (a hold and its fill's legs) may be written as one
  ordered insert, numbered from this instance's snapshots, and their balances moved in
  one update (`apply_all`): an entry refused (a number taken, an id voided) stops the
  insert there, and it and the rest are applied one by one as above.
- A change decided NOT to happen (e.g. the hold of an order whose placement was cut
  off and taken over) is written as a void entry under the same id: a paused writer
  that wakes up finds the id taken and learns that it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bson import Decimal128
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cryptovault.documents.common import now_ms, to_decimal
from cryptovault.errors import InsufficientFunds

HOUSE_MARKET = "house:market"  # the counterparty of every trade
HOUSE_FEES = "house:fees"
HOUSE_FUNDING = "house:funding"  # paper money: starting balances, admin adjustments
USD = "USD"
ZERO = Decimal(0)
# Entries that move money between available and held, or record a decision, without
# changing what the account owns: not part of the money ledger users read.
RESERVATION_KINDS = ("hold", "release", "void")


class LedgerError(RuntimeError):
    """A change that must always be possible was refused: a bug, not user input."""


class Outcome(StrEnum):
    APPLIED = "applied"  # by this call
    ALREADY = "already"  # by an earlier call (a retry, a recovery)
    VOID = "void"  # decided not to happen


@dataclass(frozen=True, slots=True)
class Line:
    """A house account's side of an entry (house accounts keep no cached balance)."""

    account: str
    asset: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one user balance: `available` and `held` are signed deltas."""

    id: str  # deterministic: "<movement>:<leg>"
    account: str
    asset: str
    available: Decimal
    held: Decimal
    kind: str  # funding | adjustment | trade | hold | release
    lines: tuple[Line, ...] = ()
    txn_id: str = ""
    order_id: str | None = None
    trade_id: str | None = None
    at: datetime | None = None

    @property
    def amount(self) -> Decimal:
        """What the account's total gains (negative: loses)."""
        return self.available + self.held

    def check_balanced(self) -> None:
        totals: dict[str, Decimal] = {self.asset: self.amount}
        for line in self.lines:
            totals[line.asset] = totals.get(line.asset, ZERO) + line.amount
        if any(totals.values()):
            raise LedgerError(f"unbalanced entry {self.id}: {totals}")


def balance_id(account: str, asset: str) -> str:
    return f"{account}:{asset}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A balance as of entry number `seq`."""

    seq: int
    available: Decimal = ZERO
    held: Decimal = ZERO

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> Snapshot:
        if doc is None:
            return cls(0)
        return cls(int(doc.get("seq") or 0), to_decimal(doc["available"]), to_decimal(doc["held"]))

    def after(self, entry: dict[str, Any]) -> Snapshot:
        return Snapshot(
            self.seq + 1,
            self.available + to_decimal(entry["available_delta"]),
            self.held + to_decimal(entry["held_delta"]),
        )


def _d128(value: Decimal) -> Decimal128:
    return Decimal128(value)


def _move_update(
    bid: str, account: str, asset: str, before: Snapshot, after: Snapshot
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conditional update moving a balance from `before` to `after`: only if it
    still stands at `before.seq` (an upsert for a balance not yet stored)."""
    return (
        {"_id": bid, "seq": _seq_filter(before.seq)},
        {
            "$set": {"seq": after.seq, "account": account, "asset": asset},
            "$inc": {
                "available": _d128(after.available - before.available),
                "held": _d128(after.held - before.held),
            },
        },
    )


def _seq_filter(seq: int) -> Any:
    # Balances written before entries were numbered have no `seq`: they are at 0.
    return seq if seq else {"$in": [0, None]}


@dataclass
class Ledger:
    """`entries` and `balances` are the store's collections (injected, so tests can
    interpose on every store command)."""

    entries: AsyncCollection
    balances: AsyncCollection
    # The latest snapshot this instance saw of each balance: a guess for the next
    # number that saves a read; a wrong guess costs one refused insert, never money.
    cache_size: int = 20_000
    _seen: OrderedDict[str, Snapshot] = field(default_factory=OrderedDict)
    # One writer per balance at a time in this process: concurrent writers of one
    # balance would all race for the same number and all but one retry, so a burst
    # of n orders from one account would cost O(n^2) store commands.
    _writing: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def _writer(self, bid: str) -> AsyncIterator[None]:
        lock, users = self._writing.get(bid) or (asyncio.Lock(), 0)
        self._writing[bid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._writing[bid]
            if users == 1:
                del self._writing[bid]
            else:
                self._writing[bid] = (lock, users - 1)

    # -- writing ---------------------------------------------------------------------

    async def apply(self, change: Change) -> Outcome:
        """Apply `change` once: APPLIED now, ALREADY before, or VOID. Raises
        INSUFFICIENT_FUNDS when it would make `available` negative (and was not
        applied before), LedgerError when it would make `held` negative."""
        change.check_balanced()
        bid = balance_id(change.account, change.asset)
        async with self._writer(bid):
            return await self._apply(bid, change)

    async def _apply(self, bid: str, change: Change) -> Outcome:
        state = self._seen.get(bid) or await self._read(bid)
        caught_up = False  # whether `state` includes every entry written so far
        while True:
            available = state.available + change.available
            held = state.held + change.held
            if available < 0 or held < 0:
                if not caught_up:
                    # A stale guess, or a balance its last writer did not move past
                    # its entry: decide on the ledger itself.
                    state, caught_up = await self._catch_up(bid), True
                    continue
                done = await self.outcome(change.id)
                if done is not None:
                    return done
                if held < 0:
                    raise LedgerError(f"{change.id} would make {bid} held {held}")
                raise InsufficientFunds(
                    f"Not enough {change.asset} available",
                    asset=change.asset,
                    required=str(-change.available),
                    available=str(state.available),
                )
            seq = state.seq + 1
            try:
                await self.entries.insert_one(self._entry(change, seq, available + held))
            except DuplicateKeyError as exc:
                if _duplicate_id(exc):
                    done = await self.outcome(change.id)
                    if done is Outcome.ALREADY:
                        await self._catch_up(bid)  # its writer may have died before the balance
                    return done or Outcome.ALREADY
                state, caught_up = await self._catch_up(bid), True  # number taken
                continue
            after = Snapshot(seq, available, held)
            await self._advance(bid, change.account, change.asset, state, after)
            return Outcome.APPLIED

    async def apply_all(self, changes: Sequence[Change]) -> Outcome:
        """Apply `changes` in order, once each, as `apply` would one after the other,
        in two store commands when this instance's snapshots of their balances are
        current: one insert of every entry (numbered after the snapshots) and one
        update moving each balance past its entries. Answers the first change's
        outcome; when it is VOID the others are not applied (a hold voided by a
        takeover: nothing planned after it may happen). Raises as `apply` does (before
        anything is written when the first change is refused)."""
        if not changes:
            raise ValueError("nothing to apply")
        for change in changes:
            change.check_balanced()
        bids = sorted({balance_id(c.account, c.asset) for c in changes})
        async with contextlib.AsyncExitStack() as stack:
            for bid in bids:  # always in the same order: two batches never deadlock
                await stack.enter_async_context(self._writer(bid))
            return await self._apply_all(changes)

    async def _apply_all(self, changes: Sequence[Change]) -> Outcome:
        if len(changes) == 1:
            return await self._apply_each(changes)
        planned: dict[str, Snapshot] = {}
        before: dict[str, Snapshot] = {}
        names: dict[str, tuple[str, str]] = {}
        entries: list[dict[str, Any]] = []
        for change in changes:
            bid = balance_id(change.account, change.asset)
            state = planned.get(bid) or self._seen.get(bid) or await self._read(bid)
            before.setdefault(bid, state)
            names[bid] = (change.account, change.asset)
            available, held = state.available + change.available, state.held + change.held
            if available < 0 or held < 0:
                # A stale snapshot, or a refusal: decided one by one on the ledger.
                return await self._apply_each(changes)
            entries.append(self._entry(change, state.seq + 1, available + held))
            planned[bid] = Snapshot(state.seq + 1, available, held)
        try:
            await self.entries.insert_many(entries, ordered=True)
        except BulkWriteError as exc:
            # The entries before the first refused one are written (ordered): their
            # balances are brought up to date; the rest is decided one by one (a
            # number taken meanwhile, an id voided or written already).
            written = int(exc.details.get("nInserted") or 0)
            for bid in {balance_id(c.account, c.asset) for c in changes}:
                self._seen.pop(bid, None)
            for bid in sorted({balance_id(c.account, c.asset) for c in changes[:written]}):
                await self._catch_up(bid)
            rest = await self._apply_each(changes[written:], first_may_void=not written)
            return Outcome.APPLIED if written else rest
        await self._advance_all(
            [(bid, names[bid], before[bid], after) for bid, after in planned.items()]
        )
        return Outcome.APPLIED

    async def _apply_each(self, changes: Sequence[Change], first_may_void: bool = True) -> Outcome:
        outcomes: list[Outcome] = []
        for change in changes:
            outcome = await self._apply(balance_id(change.account, change.asset), change)
            if outcome is Outcome.VOID:
                if first_may_void and not outcomes:
                    return outcome
                raise LedgerError(f"{change.id} was voided")  # pragma: no cover - a bug
            outcomes.append(outcome)
        return outcomes[0]

    async def _advance_all(
        self, moves: list[tuple[str, tuple[str, str], Snapshot, Snapshot]]
    ) -> None:
        """Move each balance from its snapshot to after its new entries: one command."""
        if len(moves) == 1:
            bid, (account, asset), before, after = moves[0]
            if not await self._advance(bid, account, asset, before, after):
                await self._catch_up(bid)  # moved by someone: maybe not past all of them
            return
        ops = [
            UpdateOne(*_move_update(bid, account, asset, before, after), upsert=before.seq == 0)
            for bid, (account, asset), before, after in moves
        ]
        try:
            result = await self.balances.bulk_write(ops, ordered=False)
            moved = result.matched_count + len(result.upserted_ids or {}) == len(ops)
        except BulkWriteError:
            moved = False  # one was created at a later number by someone else meanwhile
        for bid, _, _, after in moves:
            if moved:
                self._remember(bid, after)
            else:
                # Moved by someone else meanwhile, maybe past only some of these
                # entries (a catch-up between two of them): brought up to date here.
                self._seen.pop(bid, None)
                await self._catch_up(bid)

    async def void(self, change: Change) -> Outcome:
        """Decide that `change` never happens: VOID, or ALREADY if it happened first."""
        entry = {
            "_id": change.id,
            "slot": f"void:{change.id}",
            "txn_id": change.txn_id,
            "account": change.account,
            "asset": change.asset,
            "amount": _d128(ZERO),
            "available_delta": _d128(ZERO),
            "held_delta": _d128(ZERO),
            "lines": [],
            "kind": "void",
            "order_id": change.order_id,
            "created_at": now_ms(),
        }
        try:
            await self.entries.insert_one(entry)
        except DuplicateKeyError:
            done = await self.outcome(change.id)
            if done is Outcome.ALREADY:
                await self._catch_up(balance_id(change.account, change.asset))
            return done or Outcome.ALREADY
        return Outcome.VOID

    async def outcome(self, entry_id: str) -> Outcome | None:
        """Whether an entry was written (and how), or None."""
        found = await self.entries.find_one({"_id": entry_id}, {"kind": 1})
        if found is None:
            return None
        return Outcome.VOID if found["kind"] == "void" else Outcome.ALREADY

    async def catch_up(self, account: str, asset: str) -> Snapshot:
        """Bring the cached balance up to date with its entries (after a crash between
        an entry and its balance update); returns it."""
        return await self._catch_up(balance_id(account, asset))

    # -- internals -------------------------------------------------------------------

    def _entry(self, change: Change, seq: int, total_after: Decimal) -> dict[str, Any]:
        bid = balance_id(change.account, change.asset)
        return {
            "_id": change.id,
            "slot": f"{bid}#{seq}",
            "seq": seq,
            "txn_id": change.txn_id,
            "account": change.account,
            "asset": change.asset,
            "amount": _d128(change.amount),
            "available_delta": _d128(change.available),
            "held_delta": _d128(change.held),
            "lines": [
                {"account": line.account, "asset": line.asset, "amount": _d128(line.amount)}
                for line in change.lines
            ],
            "balance_after": _d128(total_after),
            "kind": change.kind,
            "order_id": change.order_id,
            "trade_id": change.trade_id,
            "created_at": change.at or now_ms(),
        }

    async def _read(self, bid: str) -> Snapshot:
        state = Snapshot.of(await self.balances.find_one({"_id": bid}))
        self._remember(bid, state)
        return state

    async def _advance(
        self, bid: str, account: str, asset: str, before: Snapshot, after: Snapshot
    ) -> bool:
        """Move the balance from `before` to `after` (one entry); False if it had
        moved already (someone applied that entry first)."""
        try:
            result = await self.balances.update_one(
                *_move_update(bid, account, asset, before, after), upsert=before.seq == 0
            )
            moved = result.matched_count == 1 or result.upserted_id is not None
        except DuplicateKeyError:
            moved = False  # created at a later number by someone else meanwhile
        if moved:
            self._remember(bid, after)
        else:
            self._seen.pop(bid, None)
        return moved

    async def _catch_up(self, bid: str) -> Snapshot:
        state = await self._read(bid)
        account, _, asset = bid.rpartition(":")
        while True:
            entry = await self.entries.find_one({"slot": f"{bid}#{state.seq + 1}"})
            if entry is None:
                return state
            nxt = state.after(entry)
            if await self._advance(bid, account, asset, state, nxt):
                state = nxt
            else:
                state = await self._read(bid)

    def _remember(self, bid: str, state: Snapshot) -> None:
        self._seen[bid] = state
        self._seen.move_to_end(bid)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)

    def forget(self) -> None:
        """Drop the guesses (tests that rewrite the store underneath)."""
        self._seen.clear()


def _duplicate_id(exc: DuplicateKeyError) -> bool:
    details = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, dict):
        return "_id" in pattern
    return "_id_" in str(details.get("errmsg", exc))


__all__ = [
    "HOUSE_FEES",
    "HOUSE_FUNDING",
    "HOUSE_MARKET",
    "RESERVATION_KINDS",
    "USD",
    "Change",
    "Ledger",
    "LedgerError",
    "Line",
    "Outcome",
    "Snapshot",
    "balance_id",
]
