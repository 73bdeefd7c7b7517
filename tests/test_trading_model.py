"""The money path, model-checked. Hypothesis writes the schedules: users place and
cancel orders, ticks are matched, sweeps run, admins adjust balances (retrying with
the same key), the audit copier copies the orders' audit entries, each as an actor
with an engine of its own (a process of its own);
between any two store commands an actor may be stepped, left paused for as long as the
schedule likes, or killed; the clock jumps past leases. After every step the books
must hold (tests/trading_faults.py `violations`); at the end every paused actor wakes
up, the sweep runs until nothing is owned, and the books must be settled and
reconciled, every order in a final or a legitimately resting state, its audit entries
in the log exactly once (and only those its settled state bears out), and every
answer an actor gave true.

`make test` runs a bounded number of examples (well under a minute); `make soak`
(CRYPTOVAULT_SOAK=1) runs many more and longer schedules."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pymongo import AsyncMongoClient

from cryptovault.documents.enums import OrderType, Side, TimeInForce
from cryptovault.errors import BadUserInput, Conflict, Forbidden, InsufficientFunds, NotFound
from cryptovault.events.bus import MemoryBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import ASSETS
from cryptovault.market.service import MarketService
from cryptovault.market.ticks import quote
from cryptovault.security.origin import SYSTEM
from cryptovault.security.viewer import Viewer
from cryptovault.trading.liquidity import MemoryLiquidity
from cryptovault.trading.reconcile import reconcile
from cryptovault.trading.rules import OrderRequest
from tests.conftest import make_settings
from tests.trading_faults import FINAL, Actor, Books, Crash, World, create_indexes, violations

SOAK = os.environ.get("CRYPTOVAULT_SOAK") == "1"
LEASE = 10.0
USERS = ("alice", "bob")
ADMIN = Viewer(user_id="admin", role="ADMIN")
MAX_ACTORS = 6
# What each kind of actor may answer besides its result (anything else is a defect).
EXPECTED = {
    "place": (InsufficientFunds, BadUserInput, Forbidden),
    "cancel": (Conflict, NotFound),
    "freeze": (Conflict,),
    "adjust": (InsufficientFunds, Conflict),
    "match": (),
    "sweep": (),
    "copy": (),
}


@st.composite
def order_requests(draw: st.DrawFn) -> OrderRequest:
    side = draw(st.sampled_from(Side))
    kind = draw(st.sampled_from(OrderType))
    factor = st.sampled_from(["0.97", "0.99", "1.00", "1.01", "1.03"])
    quote_quantity = None
    quantity: Decimal | None = Decimal(
        draw(st.sampled_from(["0.01", "0.05", "0.5", "1", "2.5", "12"]))
    )
    if kind is OrderType.MARKET and side is Side.BUY and draw(st.booleans()):
        quantity = None
        quote_quantity = Decimal(draw(st.sampled_from(["5.00", "150.00", "999.99"])))
    limit = Decimal(draw(factor)) * 100 if kind.has_limit else None
    stop = Decimal(draw(factor)) * 100 if kind.has_stop else None
    tifs = [TimeInForce.GTC, TimeInForce.GTD]
    if kind in (OrderType.MARKET, OrderType.LIMIT):
        tifs += [TimeInForce.IOC, TimeInForce.FOK]
    return OrderRequest(
        symbol="BTC",
        side=side,
        type=kind,
        quantity=quantity,
        quote_quantity=quote_quantity,
        limit_price=limit.quantize(Decimal("0.01")) if limit else None,
        stop_price=stop.quantize(Decimal("0.01")) if stop else None,
        time_in_force=draw(st.sampled_from(tifs)),
        client_order_id=draw(st.sampled_from([None, None, "a", "b"])),
    )


class MoneyPath(RuleBasedStateMachine):
    store_url = ""
    # Over every schedule of a run: the commands actors were stopped at (between which
    # a schedule can pause, step or kill them), and those they were killed at.
    stopped_at: ClassVar[set[str]] = set()
    killed_at: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world = self.run(self._world())
        self.kinds: dict[Actor, str] = {}
        self.crashed: set[Actor] = set()
        self.judged: set[Actor] = set()
        self.seen: dict[str, tuple[str, Decimal]] = {}
        # Cancels answered CANCELED, per order: each has its order.canceled entry.
        self.canceled: Counter[str] = Counter()

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    async def _world(self) -> World:
        self.client: AsyncMongoClient = AsyncMongoClient(self.store_url, tz_aware=True)
        db = self.client[f"model_{uuid.uuid4().hex[:10]}"]
        await create_indexes(db)
        world = World(
            db,
            make_settings(
                self.store_url,
                order_lease_seconds=LEASE,
                starting_balance_usd=Decimal(1000),
            ),
            MarketService(MemoryBus(), Hub()),
            MemoryLiquidity(Decimal(300)),
        )
        self.price = Decimal(100)
        self._tick(world)
        engine = world.engine()
        for user in USERS:
            await engine.ensure_account(user)
            await engine.adjust_balance(ADMIN, user, "BTC", Decimal(3), "seed", SYSTEM, "seed")
        return world

    def _tick(self, world: World) -> Any:
        world.clock.advance(0.001)
        t = quote(ASSETS["BTC"], self.price, Decimal(1), "model", timestamp=world.clock())
        world.market.apply(t)
        return t

    def _start(self, kind: str, work: Any) -> None:
        actor = self.run(self.world.act(kind, work))
        self.kinds[actor] = kind

    def _live(self) -> list[Actor]:
        return self.world.scheduler.live()

    def _pick(self, index: int) -> Actor:
        live = self._live()
        return live[index % len(live)]

    # -- what happens ------------------------------------------------------------------

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule(user=st.sampled_from(USERS), request=order_requests())
    def place(self, user: str, request: OrderRequest) -> None:
        self._start("place", lambda e: e.place(Viewer(user_id=user), request, SYSTEM))

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule(user=st.sampled_from(USERS), index=st.integers(0, 50))
    def cancel(self, user: str, index: int) -> None:
        ids = [
            o["_id"] for o in self.run(self.world.db["orders"].find({"user_id": user}).to_list())
        ]
        if ids:
            target = ids[index % len(ids)]
            self._start("cancel", lambda e: e.cancel(Viewer(user_id=user), target, SYSTEM))

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule(move=st.sampled_from(["-0.03", "-0.01", "0", "0.01", "0.03"]))
    def tick(self, move: str) -> None:
        self.price = (self.price * (1 + Decimal(move))).quantize(Decimal("0.01"))
        t = self._tick(self.world)
        self._start("match", lambda e: e.match_tick(t))

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule()
    def sweep(self) -> None:
        async def sweep(engine: Any) -> None:
            await engine.recover()
            await engine.expire_due()

        self._start("sweep", sweep)

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule()
    def copy_audit(self) -> None:
        """The leader's copier: one round of the orders' pending audit entries."""
        self._start("copy", lambda e: e.order_audit.copy())

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule(
        user=st.sampled_from(USERS),
        asset=st.sampled_from(["USD", "BTC"]),
        amount=st.sampled_from(["25", "-40", "-5000"]),
        key=st.sampled_from(["k1", "k2"]),
    )
    def adjust(self, user: str, asset: str, amount: str, key: str) -> None:
        self._start(
            "adjust",
            lambda e: e.adjust_balance(
                ADMIN, user, asset, Decimal(amount), "model", SYSTEM, f"{asset}{amount}{key}"
            ),
        )

    @precondition(lambda self: len(self._live()) < MAX_ACTORS)
    @rule(user=st.sampled_from(USERS))
    def freeze(self, user: str) -> None:
        """An admin freezes the account (the flag first, then its open orders)."""

        async def freeze(engine: Any) -> int:
            await engine.users.update_one({"_id": user}, {"$set": {"frozen": True}}, upsert=True)
            return await engine.cancel_all(user, ADMIN, SYSTEM)

        self._start("freeze", freeze)

    @rule(user=st.sampled_from(USERS))
    def unfreeze(self, user: str) -> None:
        self.run(self.world.db["users"].update_one({"_id": user}, {"$set": {"frozen": False}}))

    @precondition(lambda self: bool(self._live()))
    @rule(index=st.integers(0, 50), commands=st.sampled_from([1, 1, 2, 5, 100]))
    def step(self, index: int, commands: int) -> None:
        """Let one actor send its next command(s); every other actor stays paused."""
        actor = self._pick(index)
        for _ in range(commands):
            if actor.waiting:
                self.run(self.world.scheduler.step(actor))

    @precondition(lambda self: bool(self._live()))
    @rule(index=st.integers(0, 50))
    def crash(self, index: int) -> None:
        actor = self._pick(index)
        self.crashed.add(actor)
        MoneyPath.killed_at.add(actor.next)
        self.run(self.world.scheduler.crash(actor))

    @rule(seconds=st.sampled_from([1, 4, LEASE + 1]))
    def advance(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    # -- what must hold ----------------------------------------------------------------

    @invariant()
    def books_hold(self) -> None:
        books = self.run(Books.read(self.world.db))
        found = list(violations(books, settled=False))
        assert not found, "\n".join(found)
        for o in books.orders:
            status, filled = o["status"], o["filled_quantity"].to_decimal()
            before = self.seen.get(o["_id"])
            if before is not None:
                assert not (before[0] in FINAL and status != before[0]), (o["_id"], before, status)
                assert filled >= before[1], (o["_id"], before, filled)
            self.seen[o["_id"]] = (status, filled)
        self.run(self._judge_answers())

    async def _judge_answers(self) -> None:
        for actor, kind in self.kinds.items():
            if not actor.done or actor in self.judged:
                continue
            self.judged.add(actor)
            error = actor.task.exception()  # type: ignore[union-attr]
            if isinstance(error, Crash):
                assert actor in self.crashed, f"{actor.name} raised Crash without being killed"
                continue
            assert error is None or isinstance(error, EXPECTED[kind]), f"{kind} answered {error!r}"
            answer = None if error else actor.task.result()  # type: ignore[union-attr]
            if kind in ("place", "cancel") and answer is not None:
                stored = await self.world.db["orders"].find_one({"_id": answer.id})
                # The answer was true when given: a final status stays final.
                if answer.status in FINAL:
                    assert stored["status"] == answer.status, (answer.status, stored["status"])
                if kind == "cancel" and answer.status == "CANCELED":
                    self.canceled[answer.id] += 1

    def teardown(self) -> None:
        try:
            self.run(self._settle())
        finally:
            MoneyPath.stopped_at |= self.world.scheduler.stopped_at
            self.run(self.client.drop_database(self.world.db.name))
            self.run(self.client.close())
            self.loop.close()

    async def _settle(self) -> None:
        """Every paused actor wakes up; the clock passes every lease; sweeps run until
        nothing is owned. Then the books must be settled."""
        scheduler = self.world.scheduler
        for _ in range(20):
            for actor in scheduler.live():
                await scheduler.finish(actor)
            self.world.clock.advance(LEASE + 1)
            sweep = await self.world.act("sweep", lambda e: e.recover())
            self.kinds[sweep] = "sweep"
            await scheduler.finish(sweep)
            # An admin whose freeze was cut off freezes again: that finishes the cancels.
            async for user in self.world.db["users"].find({"frozen": True}):
                refreeze = await self.world.act(
                    "freeze", lambda e, u=user["_id"]: e.cancel_all(u, ADMIN, SYSTEM)
                )
                self.kinds[refreeze] = "freeze"
                await scheduler.finish(refreeze)
            owned = await self.world.db["orders"].count_documents({"owner": {"$ne": None}})
            pending = await self.world.db["adjustments"].count_documents({"state": "pending"})
            if not owned and not pending and not scheduler.live():
                break
        copier = await self.world.act("copy", lambda e: e.order_audit.drain())
        self.kinds[copier] = "copy"
        await scheduler.finish(copier)
        books = await Books.read(self.world.db)
        found = list(violations(books, settled=True))
        assert not found, "\n".join(found)
        await self._judge_answers()
        logged = Counter(e["target"] for e in books.audit if e["action"] == "order.canceled")
        for order_id, answered in self.canceled.items():
            assert logged[f"order:{order_id}"] >= answered, (order_id, answered)
        report = await reconcile(self.world.db, now=self.world.clock())
        assert report.ok, report.discrepancies


async def test_the_money_path_keeps_its_books_under_any_schedule(store_server):
    MoneyPath.store_url = store_server.url
    profile = settings(
        max_examples=int(os.environ.get("CRYPTOVAULT_SOAK_EXAMPLES", 400)) if SOAK else 12,
        stateful_step_count=80 if SOAK else 30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not SOAK,  # CI: the same schedules every run, never flaky
        print_blob=True,
    )
    await asyncio.to_thread(run_state_machine_as_test, MoneyPath, settings=profile)
    # Actors wait at a gate before every kind of write an order makes, the batched ones
    # included (its hold with its fill's entries, both balances in one update): a
    # schedule can pause or kill an actor there. (tests/test_trading_faults.py kills a
    # placement and a cancel at each of their commands in turn, deterministically.)
    placing = {
        "orders.insert_one",
        "users.find_one",
        "ledger.insert_one",
        "ledger.insert_many",
        "balances.update_one",
        "balances.bulk_write",
        "trades.insert_one",
        "orders.find_one_and_update",
    }
    copying = {"orders.find", "audit_log.insert_many", "orders.bulk_write"}
    assert placing | copying <= MoneyPath.stopped_at, (placing | copying) - MoneyPath.stopped_at
