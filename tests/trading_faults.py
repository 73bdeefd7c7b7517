"""Fault injection for the trading engine: every store command an engine sends waits
at a gate, so a test decides which actor (a request, a tick, a sweep, each with an
engine of its own, i.e. its own process) sends its next command, pauses an actor for
as long as it likes, or kills it between two commands. And an oracle: the invariants
the books must keep at every such point, checked from the raw store.

An actor is a coroutine (e.g. `engine.place(...)`) running as a task; a paused actor
is one the test does not step; a crashed one raises `Crash` at its next gate, so
nothing it would have sent (not even from an `except` or `finally`) reaches the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from beanie import init_beanie
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.config import Settings
from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.trading import (
    AdjustmentDocument,
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.events.bus import MemoryBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import ASSETS
from cryptovault.market.service import MarketService
from cryptovault.security.audit import AuditLog
from cryptovault.trading.engine import TradingEngine, TradingStore
from cryptovault.trading.liquidity import LiquidityBook

CURRENT: ContextVar[Actor | None] = ContextVar("actor", default=None)
FINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
ORDER_ACTIONS = ("order.placed", "order.canceled")
LIVE = ("PENDING", "OPEN", "PARTIALLY_FILLED")
COMMANDS = {
    "insert_one",
    "insert_many",
    "bulk_write",
    "update_one",
    "update_many",
    "find_one",
    "find_one_and_update",
    "count_documents",
    "delete_one",
    "delete_many",
}


class Crash(BaseException):
    """The actor's process died before sending its next store command."""


@dataclass(eq=False)
class Actor:
    name: str
    parked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None
    gate: asyncio.Future[None] | None = None
    dead: bool = False
    sent: int = 0  # store commands sent so far
    next: str = ""  # the command it waits to send

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    @property
    def waiting(self) -> bool:
        return not self.done and self.gate is not None


class Scheduler:
    def __init__(self, timeout: float = 60.0) -> None:
        self.actors: list[Actor] = []
        self.timeout = timeout
        self.stopped_at: set[str] = set()  # every command an actor waited at a gate for

    async def gate(self, command: str) -> None:
        actor = CURRENT.get()
        if actor is None:
            return  # the test itself (setup, the oracle): straight through
        if actor.dead:
            raise Crash(actor.name)
        actor.gate = asyncio.get_running_loop().create_future()
        actor.next = command
        self.stopped_at.add(command)
        actor.parked.set()
        await actor.gate
        actor.sent += 1

    async def start(self, name: str, work: Awaitable[Any]) -> Actor:
        """Run `work` as an actor up to its first store command (or its end)."""
        actor = Actor(name)

        async def run() -> Any:
            CURRENT.set(actor)
            try:
                return await work
            finally:
                actor.gate = None
                actor.parked.set()

        actor.task = asyncio.get_running_loop().create_task(run())
        self.actors.append(actor)
        await self._parked(actor)
        return actor

    async def _parked(self, actor: Actor) -> None:
        try:
            await asyncio.wait_for(actor.parked.wait(), self.timeout)
        except TimeoutError:
            raise AssertionError(
                f"{actor.name} neither reached a store command nor finished "
                f"(after {actor.sent} commands; a deadlock?)"
            ) from None

    async def step(self, actor: Actor) -> None:
        """Let the actor send its next command and run on to the one after."""
        assert actor.waiting, f"{actor.name} is not waiting"
        gate, actor.gate = actor.gate, None
        actor.parked.clear()
        assert gate is not None
        gate.set_result(None)
        await self._parked(actor)

    async def finish(self, actor: Actor, limit: int = 2000) -> Any:
        for _ in range(limit):
            if actor.done:
                break
            await self.step(actor)
        assert actor.done, f"{actor.name} still running after {limit} commands"
        return actor.task.exception() or actor.task.result()  # type: ignore[union-attr]

    async def crash(self, actor: Actor) -> None:
        """Kill the actor between two commands (SIGKILL): it never sends another."""
        actor.dead = True
        if actor.waiting:
            gate, actor.gate = actor.gate, None
            actor.parked.clear()
            assert gate is not None
            gate.set_exception(Crash(actor.name))
            await self._parked(actor)
        if actor.done:
            actor.task.exception()  # type: ignore[union-attr]  # seen: it died

    def live(self) -> list[Actor]:
        return [a for a in self.actors if a.waiting and not a.dead]


class GatedCursor:
    def __init__(self, gated: Gated, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._gated, self._args, self._kwargs = gated, args, kwargs
        self._sort: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def sort(self, *args: Any, **kwargs: Any) -> GatedCursor:
        self._sort = (args, kwargs)
        return self

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        await self._gated.scheduler.gate(f"{self._gated.inner.name}.find")
        cursor = self._gated.inner.find(*self._args, **self._kwargs)
        if self._sort is not None:
            cursor = cursor.sort(*self._sort[0], **self._sort[1])
        async for doc in cursor:
            yield doc


class Gated:
    """A collection whose every command first waits at the scheduler's gate."""

    def __init__(self, inner: AsyncCollection, scheduler: Scheduler) -> None:
        self.inner = inner
        self.scheduler = scheduler

    def find(self, *args: Any, **kwargs: Any) -> GatedCursor:
        return GatedCursor(self, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in COMMANDS:
            return attribute

        async def command(*args: Any, **kwargs: Any) -> Any:
            await self.scheduler.gate(f"{self.inner.name}.{name}")
            return await attribute(*args, **kwargs)

        return command


MODELS = {
    "orders": OrderDocument,
    "trades": TradeDocument,
    "ledger": LedgerEntryDocument,
    "balances": BalanceDocument,
    "adjustments": AdjustmentDocument,
    "audit_log": AuditEntryDocument,
}


async def create_indexes(db: AsyncDatabase) -> None:
    """The trading collections and their indexes, as the app declares them. (Beanie
    binds the models to `db`: the engine answers with OrderDocument models.)"""
    await init_beanie(database=db, document_models=list(MODELS.values()))


def gated_store(db: AsyncDatabase, scheduler: Scheduler) -> TradingStore:
    return TradingStore(
        orders=Gated(db["orders"], scheduler),  # type: ignore[arg-type]
        trades=Gated(db["trades"], scheduler),  # type: ignore[arg-type]
        entries=Gated(db["ledger"], scheduler),  # type: ignore[arg-type]
        balances=Gated(db["balances"], scheduler),  # type: ignore[arg-type]
        adjustments=Gated(db["adjustments"], scheduler),  # type: ignore[arg-type]
        users=Gated(db["users"], scheduler),  # type: ignore[arg-type]
    )


class Clock:
    """The engines' time, moved by the test (leases expire when it says so)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(milliseconds=int(seconds * 1000))


async def audit_entries(db: AsyncDatabase, action: str | None = None) -> list[dict[str, Any]]:
    """The audit log's entries (of one action)."""
    return await db["audit_log"].find({"action": action} if action else {}).to_list()


@dataclass
class World:
    """One store, one market, one shared book; engines made on demand, each its own
    process (own caches and locks), all sending their commands through the gates."""

    db: AsyncDatabase
    settings: Settings
    market: MarketService
    liquidity: LiquidityBook
    clock: Clock = field(default_factory=Clock)
    scheduler: Scheduler = field(default_factory=Scheduler)
    # One audit log, its writes gated like the engines' (its securityEvents pushes
    # reach `audit.hub`).
    audit: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        entries = Gated(self.db["audit_log"], self.scheduler)
        self.audit = AuditLog(MemoryBus(), Hub(), entries)  # type: ignore[arg-type]

    def engine(self, settle_wait: float = 0.0) -> TradingEngine:
        engine = TradingEngine(
            self.settings,
            self.market,
            MemoryBus(),
            Hub(),
            self.audit,
            None,
            liquidity=self.liquidity,
            store=gated_store(self.db, self.scheduler),
            clock=self.clock,
        )
        engine.settle_wait = settle_wait
        return engine

    async def act(self, name: str, work: Callable[[TradingEngine], Awaitable[Any]]) -> Actor:
        return await self.scheduler.start(name, work(self.engine()))


# -- the oracle --------------------------------------------------------------------------


def _d(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return value.to_decimal() if hasattr(value, "to_decimal") else Decimal(str(value))


@dataclass
class Books:
    orders: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    balances: dict[str, dict[str, Any]]
    adjustments: list[dict[str, Any]]
    frozen: set[str] = field(default_factory=set)
    audit: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def read(cls, db: AsyncDatabase) -> Books:
        return cls(
            orders=await db["orders"].find({}).to_list(),
            trades=await db["trades"].find({}).to_list(),
            entries=await db["ledger"].find({}).to_list(),
            balances={b["_id"]: b async for b in db["balances"].find({})},
            adjustments=await db["adjustments"].find({}).to_list(),
            frozen={u["_id"] async for u in db["users"].find({"frozen": True})},
            audit=await db["audit_log"].find({"action": {"$in": list(ORDER_ACTIONS)}}).to_list(),
        )

    def numbered(self) -> dict[str, list[dict[str, Any]]]:
        per: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.entries:
            if e.get("seq"):
                per[f"{e['account']}:{e['asset']}"].append(e)
        for items in per.values():
            items.sort(key=lambda e: e["seq"])
        return per


def violations(books: Books, *, settled: bool) -> Iterator[str]:
    """What is wrong with the books now. `settled`: no actor is running and every
    owner's work was finished, so nothing may be in flight."""
    trial: dict[str, Decimal] = defaultdict(Decimal)
    for e in books.entries:
        trial[e["asset"]] += _d(e["amount"])
        moved = e.get("available_delta")
        if moved is not None and _d(moved) + _d(e["held_delta"]) != _d(e["amount"]):
            yield f"entry {e['_id']}: deltas do not add up to its amount"
        for line in e.get("lines") or []:
            trial[line["asset"]] += _d(line["amount"])
    for asset, total in trial.items():
        if total:
            yield f"trial balance of {asset} is {total}"

    folded: dict[str, tuple[Decimal, Decimal]] = {}
    for bid, items in books.numbered().items():
        seqs = [e["seq"] for e in items]
        if seqs != list(range(1, len(items) + 1)):
            yield f"{bid}: entry numbers {seqs} are not 1..n"
        available = held = Decimal(0)
        balance = books.balances.get(bid)
        cached_seq = int((balance or {}).get("seq") or 0)
        for e in items:
            available += _d(e["available_delta"])
            held += _d(e["held_delta"])
            if available < 0 or held < 0:
                yield f"{bid}: entry {e['seq']} ({e['_id']}) leaves {available}/{held}"
            if e["seq"] == cached_seq and balance is not None:
                cached = (_d(balance["available"]), _d(balance["held"]))
                if cached != (available, held):
                    yield f"{bid}: cached {cached} != ledger {available}/{held} at {cached_seq}"
        if cached_seq > len(items):
            yield f"{bid}: cached at {cached_seq} beyond its {len(items)} entries"
        if settled and cached_seq != len(items):
            yield f"{bid}: cached at {cached_seq} of {len(items)} entries after settling"
        folded[bid] = (available, held)

    journal: dict[str, Decimal] = defaultdict(Decimal)
    for e in books.entries:
        if e.get("order_id") and e.get("held_delta") is not None:
            journal[e["order_id"]] += _d(e["held_delta"])
    reserved: dict[str, Decimal] = defaultdict(Decimal)
    trades: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in books.trades:
        trades[t["order_id"]].append(t)
        asset = ASSETS[t["symbol"]]
        if _d(t["quantity"]) < asset.min_size:
            yield f"trade {t['_id']}: dust {t['quantity']} below minSize {asset.min_size}"
    for o in books.orders:
        oid, owned = o["_id"], o.get("owner") is not None
        held = journal[oid]
        reserved[f"{o['user_id']}:{o['hold_asset']}"] += held
        if held < 0:
            yield f"order {oid}: its entries released more than it held ({held})"
        if settled and (owned or o.get("work") or o.get("close_request")):
            yield f"order {oid}: still owned / working after settling ({o.get('owner')})"
        if owned:
            continue
        if o["status"] in FINAL and (held != 0 or _d(o["hold_remaining"]) != 0):
            yield f"order {oid}: {o['status']} but holds {held} (order says {o['hold_remaining']})"
        if o["status"] in LIVE and held != _d(o["hold_remaining"]):
            yield f"order {oid}: holds {held} by the ledger, {o['hold_remaining']} by the order"
        if o["status"] == "PENDING":
            yield f"order {oid}: PENDING with no owner"
        if settled and o["user_id"] in books.frozen and o["status"] in LIVE:
            yield f"order {oid}: live ({o['status']}) for a frozen account"
        if o["time_in_force"] in ("IOC", "FOK") and o["status"] in LIVE:
            yield f"order {oid}: {o['time_in_force']} left resting ({o['status']})"
        mine = trades.get(oid, [])
        if len(mine) != int(o.get("fills") or 0):
            yield f"order {oid}: {len(mine)} trades but fills={o.get('fills')}"
        if sum((_d(t["quantity"]) for t in mine), Decimal(0)) != _d(o["filled_quantity"]):
            yield f"order {oid}: trades do not add up to filledQuantity"
        if o.get("quantity") is not None and o["status"] in LIVE:
            left = _d(o["quantity"]) - _d(o["filled_quantity"])
            if left < ASSETS[o["symbol"]].min_size:
                yield f"order {oid}: rests with a dust remainder {left}"
        if o["time_in_force"] == "FOK" and o["status"] == "CANCELED" and mine:
            yield f"order {oid}: a FOK canceled after filling part"
        if (
            mine
            and any(t["liquidity"] == "MAKER" for t in mine)
            and o["type"] in ("MARKET", "STOP")
        ):
            yield f"order {oid}: a {o['type']} order charged the maker fee"
    for bid, (_, held) in folded.items():
        if held != reserved.get(bid, Decimal(0)):
            yield f"{bid}: held {held} by the ledger, orders reserve {reserved.get(bid, 0)}"
    yield from audit_violations(books, settled=settled)
    for a in books.adjustments:
        made = [e for e in books.entries if e["txn_id"] == f"adjustment:{a['_id']}"]
        if len(made) > 1:
            yield f"adjustment {a['_id']}: {len(made)} entries"
        if settled and a["state"] == "pending":
            yield f"adjustment {a['_id']}: still pending after settling"
        if a["state"] == "applied" and (not made or made[0]["kind"] == "void"):
            yield f"adjustment {a['_id']}: applied without an entry"
        if a["state"] == "refused" and made and made[0]["kind"] != "void":
            yield f"adjustment {a['_id']}: refused but its entry is {made[0]['kind']}"


async def check(db: AsyncDatabase, *, settled: bool = False) -> None:
    found = list(violations(await Books.read(db), settled=settled))
    assert not found, "\n".join(found)


def audit_violations(books: Books, *, settled: bool) -> Iterator[str]:
    """The orders' audit entries (trading/order_audit.py). At any time: an entry in
    the log says what its order's settled state says (placed: not rejected; canceled:
    CANCELED), at most one `order.placed` per order. Settled, after the copier ran:
    none pending, and every order placed has its `order.placed`."""
    orders = {o["_id"]: o for o in books.orders}
    placed: dict[str, int] = defaultdict(int)
    for e in books.audit:
        order = orders.get((e.get("target") or "").removeprefix("order:"))
        if order is None:
            yield f"audit {e['_id']}: {e['action']} of no order ({e.get('target')})"
            continue
        if e["user_id"] != order["user_id"]:
            yield f"audit {e['_id']}: concerns {e['user_id']}, the order is {order['user_id']}'s"
        if e["action"] == "order.placed":
            placed[order["_id"]] += 1
            if order["status"] in ("PENDING", "REJECTED"):
                yield f"order {order['_id']}: order.placed logged, but it is {order['status']}"
        elif order["status"] != "CANCELED":
            yield f"order {order['_id']}: order.canceled logged, but it is {order['status']}"
    for o in books.orders:
        entries = o.get("audit") or []
        if o.get("audit_state") is None and entries:
            yield f"order {o['_id']}: entries without audit_state pending"
        if placed[o["_id"]] + sum(e["action"] == "order.placed" for e in entries) > 1:
            yield f"order {o['_id']}: order.placed more than once"
        if settled and (entries or o.get("audit_state") is not None):
            yield f"order {o['_id']}: audit entries still pending after the copier ran"
        if settled and o["status"] != "REJECTED" and placed[o["_id"]] != 1:
            yield f"order {o['_id']}: {o['status']} with {placed[o['_id']]} order.placed entries"
