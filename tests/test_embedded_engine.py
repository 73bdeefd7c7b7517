"""The embedded store runs mongoeco's SQLite engine without its whole-collection scans
on writes (db.flat_engine). It must refuse exactly what the stock engine refuses and
accept what it accepts: every case below runs on both, over the wire, and must give
the same outcome and leave the same documents."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collation import Collation
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cryptovault.db import EmbeddedServer

OID = ObjectId()
Op = Callable[[AsyncCollection], Awaitable[Any]]


def ins(doc: dict[str, Any]) -> Op:
    return lambda c: c.insert_one(doc)


CASES: dict[str, tuple[list[dict[str, Any]], list[IndexModel], Op]] = {
    # Duplicate `_id` of each type; numeric ids are equal by value across types.
    "int id twice": ([{"_id": 1}], [], ins({"_id": 1})),
    "int then float id": ([{"_id": 1}], [], ins({"_id": 1.0})),
    "int then Int64 id": ([{"_id": 1}], [], ins({"_id": Int64(1)})),
    "int then Decimal128 id": ([{"_id": 1}], [], ins({"_id": Decimal128("1")})),
    "float then Decimal128 id": ([{"_id": 2.5}], [], ins({"_id": Decimal128("2.5")})),
    "ObjectId twice": ([{"_id": OID}], [], ins({"_id": OID})),
    "string twice": ([{"_id": "a"}], [], ins({"_id": "a"})),
    "sub-document twice": ([{"_id": {"u": "x", "k": "y"}}], [], ins({"_id": {"u": "x", "k": "y"}})),
    "sub-document, numeric equal": ([{"_id": {"n": 1}}], [], ins({"_id": {"n": 1.0}})),
    "string vs ObjectId hex": ([{"_id": str(OID)}], [], ins({"_id": OID})),
    "string vs int": ([{"_id": "1"}], [], ins({"_id": 1})),
    "a batch with a duplicate": (
        [{"_id": "b"}],
        [],
        lambda c: c.insert_many([{"_id": "c"}, {"_id": "b"}, {"_id": "d"}]),
    ),
    # Unique keys, single and compound, on every kind of write.
    "unique key on insert": (
        [{"_id": "x", "k": "v"}],
        [IndexModel([("k", 1)], unique=True)],
        ins({"_id": "y", "k": "v"}),
    ),
    "unique key, another value": (
        [{"_id": "x", "k": "v"}],
        [IndexModel([("k", 1)], unique=True)],
        ins({"_id": "y", "k": "w"}),
    ),
    "compound unique key on insert": (
        [{"_id": "x", "u": 1, "c": "a"}],
        [IndexModel([("u", 1), ("c", 1)], unique=True)],
        ins({"_id": "y", "u": 1, "c": "a"}),
    ),
    "compound unique key, equal numbers of two types": (
        [{"_id": "x", "u": "a", "n": 1}],
        [IndexModel([("u", 1), ("n", 1)], unique=True)],
        ins({"_id": "y", "u": "a", "n": 1.0}),
    ),
    "compound unique key, another second value": (
        [{"_id": "x", "u": "a", "n": 1}],
        [IndexModel([("u", 1), ("n", 1)], unique=True)],
        ins({"_id": "y", "u": "a", "n": 2}),
    ),
    "compound unique key, both missing": (
        [{"_id": "x", "u": "a"}],
        [IndexModel([("u", 1), ("n", 1)], unique=True)],
        ins({"_id": "y", "u": "a"}),
    ),
    "compound unique key, numeric leading field": (
        [{"_id": "x", "u": 1, "c": "a"}],
        [IndexModel([("u", 1), ("c", 1)], unique=True)],
        ins({"_id": "y", "u": Int64(1), "c": "a"}),
    ),
    "compound unique key on update": (
        [{"_id": "x", "u": "a", "c": "b"}, {"_id": "y", "u": "a", "c": "c"}],
        [IndexModel([("u", 1), ("c", 1)], unique=True)],
        lambda c: c.update_one({"_id": "y"}, {"$set": {"c": "b"}}),
    ),
    "compound unique key, self-update": (
        [{"_id": "x", "u": "a", "c": "b"}],
        [IndexModel([("u", 1), ("c", 1)], unique=True)],
        lambda c: c.update_one({"_id": "x"}, {"$set": {"n": 1}}),
    ),
    "compound unique key, a batch colliding with itself": (
        [],
        [IndexModel([("u", 1), ("c", 1)], unique=True)],
        lambda c: c.insert_many([{"_id": 1, "u": "a", "c": "b"}, {"_id": 2, "u": "a", "c": "b"}]),
    ),
    "partial compound unique key": (
        [{"_id": "x", "u": "a", "c": "b", "p": False}],
        [
            IndexModel(
                [("u", 1), ("c", 1)], unique=True, partialFilterExpression={"p": {"$eq": True}}
            )
        ],
        ins({"_id": "y", "u": "a", "c": "b", "p": True}),
    ),
    "unique key on update": (
        [{"_id": "x", "k": "v"}, {"_id": "y", "k": "w"}],
        [IndexModel([("k", 1)], unique=True)],
        lambda c: c.update_one({"_id": "y"}, {"$set": {"k": "v"}}),
    ),
    "unique key on upsert": (
        [{"_id": "x", "k": "v"}],
        [IndexModel([("k", 1)], unique=True)],
        lambda c: c.update_one({"_id": "z"}, {"$set": {"k": "v"}}, upsert=True),
    ),
    "unique key on replace": (
        [{"_id": "x", "k": "v"}, {"_id": "y", "k": "w"}],
        [IndexModel([("k", 1)], unique=True)],
        lambda c: c.replace_one({"_id": "y"}, {"k": "v"}),
    ),
    "sparse unique key, missing twice": (
        [{"_id": "x"}],
        [IndexModel([("s", 1)], unique=True, sparse=True)],
        ins({"_id": "y"}),
    ),
    # Writes that must pass.
    "self-update keeps its key": (
        [{"_id": "x", "k": "v", "n": 1}],
        [IndexModel([("k", 1)], unique=True)],
        lambda c: c.update_one({"_id": "x"}, {"$set": {"k": "v", "n": 2}}),
    ),
    "$inc a Decimal128": (
        [{"_id": "x", "a": Decimal128("1.5")}],
        [],
        lambda c: c.find_one_and_update({"_id": "x"}, {"$inc": {"a": Decimal128("2.25")}}),
    ),
    "upsert on an equal numeric id": (
        [{"_id": 1, "n": 0}],
        [],
        lambda c: c.update_one({"_id": 1.0}, {"$set": {"n": 1}}, upsert=True),
    ),
    "conditional update on a moved sequence": (
        [{"_id": "b", "seq": 3}],
        [],
        lambda c: c.update_one({"_id": "b", "seq": 2}, {"$set": {"seq": 3}}, upsert=True),
    ),
}


@pytest.fixture(scope="module")
async def clients(tmp_path_factory) -> AsyncIterator[dict[str, AsyncMongoClient]]:
    servers = {
        "stock": EmbeddedServer(tmp_path_factory.mktemp("stock"), stock=True),
        "flat": EmbeddedServer(tmp_path_factory.mktemp("flat")),
    }
    made = {}
    for name, server in servers.items():
        made[name] = AsyncMongoClient(await server.start())
    yield made
    for name, server in servers.items():
        await made[name].close()
        await server.close()


async def outcome(client: AsyncMongoClient, case: str) -> tuple[str, list[dict[str, Any]]]:
    docs, indexes, op = CASES[case]
    collection = client["equivalence"][f"c{uuid.uuid4().hex[:8]}"]
    if indexes:
        await collection.create_indexes(indexes)
    if docs:
        await collection.insert_many(docs)
    try:
        await op(collection)
        result = "ok"
    except (DuplicateKeyError, BulkWriteError):
        result = "duplicate"
    left = await collection.find({}).to_list()
    return result, sorted(left, key=repr)


@pytest.mark.parametrize("case", list(CASES))
async def test_the_flat_engine_answers_every_write_as_the_stock_engine(clients, case):
    stock = await outcome(clients["stock"], case)
    flat = await outcome(clients["flat"], case)
    assert flat == stock


async def test_the_cases_cover_refusals_and_acceptances(clients):
    results = {case: (await outcome(clients["stock"], case))[0] for case in CASES}
    assert sum(r == "duplicate" for r in results.values()) >= 12
    assert sum(r == "ok" for r in results.values()) >= 6
    # Numeric ids are one value whatever their type: refused however they are spelled.
    for case in ("int then float id", "int then Int64 id", "int then Decimal128 id"):
        assert results[case] == "duplicate", case
    assert results["string vs int"] == "ok"


# Writes and queries in turn: the flat engine keeps its answers to "does any document
# hold a Decimal / an array / bytes at this field" across writes, so each query after
# a write that changes one of those answers must still match what the stock engine
# (which asks the whole collection again after every write) finds.
STEPS: list[tuple[str, Any]] = [
    ("insert", {"_id": "a", "f": 1, "g": "x", "p": {"q": 1}}),
    ("find", {"f": {"$gt": 0}}),
    ("find", {"f": {"$gt": Decimal128("0.5")}}),
    ("update", ({"_id": "a"}, {"$set": {"f": Decimal128("2.5")}})),
    ("find", {"f": {"$gt": 2}}),
    ("find", {"f": {"$lt": 3}}),
    ("find", {"f": Decimal128("2.5")}),
    ("find", {"f": 2.5}),
    ("insert", {"_id": "b", "f": [1, Decimal128("7")], "p": {"q": Decimal128("3")}}),
    ("find", {"f": {"$gt": 5}}),
    ("find", {"f": 7}),
    ("find", {"p.q": {"$gt": 2}}),
    ("update", ({"_id": "b"}, {"$inc": {"h": Decimal128("1")}})),
    ("find", {"h": {"$gte": 1}}),
    ("find", {"_id": "b", "h": Decimal128("1")}),
    ("insert", {"_id": "c", "bin": b"\x00\x01", "f": 5}),
    ("find", {"bin": b"\x00\x01"}),
    ("find", {"f": {"$gte": 5}}),
    ("delete", {"_id": "a"}),
    ("find", {"f": {"$gt": 0}}),
    ("insert_many", [{"_id": "d", "g": ["y", "z"]}, {"_id": "e", "g": "y"}]),
    ("find", {"g": "y"}),
    ("find", {"g": {"$in": ["z"]}}),
    ("replace", ({"_id": "e"}, {"g": Decimal128("9")})),
    ("find", {"g": {"$gt": 8}}),
    # Conditional writes pinned by `_id` (the fenced writes): matched or not.
    ("update", ({"_id": "b", "h": Decimal128("1")}, {"$set": {"fence": 1}})),
    ("update", ({"_id": "b", "fence": 0}, {"$set": {"won": True}})),
    ("update", ({"_id": "b", "fence": 1, "work": None}, {"$set": {"work": {"n": 0}}})),
    ("update", ({"_id": "b", "work": None}, {"$set": {"lost": True}})),
    ("update", ({"_id": "c", "f": {"$gte": 5}, "nope": {"$exists": False}}, {"$inc": {"f": 1}})),
    ("update", ({"_id": "zz", "f": 1}, {"$set": {"x": 1}})),
    ("find", {"won": True}),
    ("find", {"lost": True}),
    ("find", {"work.n": 0}),
    ("find", {"f": 6}),
]


async def run_steps(client: AsyncMongoClient) -> list[Any]:
    collection = client["equivalence"][f"s{uuid.uuid4().hex[:8]}"]
    await collection.create_indexes([IndexModel([("u", 1)], unique=True, sparse=True)])
    seen: list[Any] = []
    for kind, arg in STEPS:
        if kind == "insert":
            await collection.insert_one(arg)
        elif kind == "insert_many":
            await collection.insert_many(arg)
        elif kind == "update":
            await collection.update_one(*arg)
        elif kind == "replace":
            await collection.replace_one(*arg)
        elif kind == "delete":
            await collection.delete_one(arg)
        else:
            seen.append(sorted([d["_id"] async for d in collection.find(arg)]))
    return seen


async def test_queries_after_writes_find_what_the_stock_engine_finds(clients):
    stock = await run_steps(clients["stock"])
    assert stock[0] == ["a"] and stock[3] == ["a"]  # the cases mean something
    assert await run_steps(clients["flat"]) == stock


async def test_a_unique_index_over_arrays_refuses_as_the_stock_engine(clients):
    async def outcomes(client: AsyncMongoClient) -> list[str]:
        collection = client["equivalence"][f"m{uuid.uuid4().hex[:8]}"]
        await collection.create_indexes([IndexModel([("tags", 1)], unique=True)])
        results = []
        for doc in (
            {"_id": 1, "tags": "a"},
            {"_id": 2, "tags": ["b", "c"]},  # the index becomes multikey here
            {"_id": 3, "tags": ["c"]},
            {"_id": 4, "tags": "b"},
            {"_id": 5, "tags": ["d", "d"]},
        ):
            try:
                await collection.insert_one(doc)
                results.append("ok")
            except DuplicateKeyError:
                results.append("duplicate")
        return results

    stock = await outcomes(clients["stock"])
    assert "duplicate" in stock
    assert await outcomes(clients["flat"]) == stock


# Equalities on a string of a field that leads an index are also stated in the index's
# expressions (so SQLite reads only the matching documents): every query, count and
# write below must still find what the stock engine finds — other types under the
# same field, negations, $or, and after an array arrives under the field.
INDEXED_STEPS: list[tuple[str, Any]] = [
    (
        "insert_many",
        [
            {"_id": "a1", "k": "a", "t": 1},
            {"_id": "a2", "k": "a", "t": 2},
            {"_id": "b1", "k": "b", "t": 1},
            {"_id": "n1", "k": 1, "t": 1},
            {"_id": "o1", "k": OID, "t": 1},
            {"_id": "d1", "k": {"x": "a"}, "t": 1},
            {"_id": "q1", "k": 'it\'s "a"', "t": 1},
            {"_id": "u1", "k": "ä", "t": 1},
            {"_id": "z1", "k": None, "t": 1},
            {"_id": "m1", "t": 1},
            {"_id": "e1", "k": Decimal128("1"), "t": 1},
        ],
    ),
    ("find", {"k": "a"}),
    ("find", {"k": "a", "t": {"$gte": 2}}),
    ("find", {"k": 'it\'s "a"'}),
    ("find", {"k": "ä"}),
    ("find", {"k": "missing"}),
    ("find", {"k": 1}),
    ("find", {"k": {"$ne": "a"}}),
    ("find", {"k": {"$not": {"$eq": "a"}}}),
    ("find", {"$or": [{"k": "a"}, {"k": "b"}]}),
    ("find", {"$nor": [{"k": "a"}]}),
    ("find", {"k": {"$in": ["a", "b"]}}),
    ("find", {"$and": [{"k": "a"}, {"t": 1}]}),
    ("sorted", {"k": "a"}),
    ("count", {"k": "a"}),
    ("count", {"k": "b", "t": 1}),
    ("update_many", ({"k": "a"}, {"$inc": {"t": 10}})),
    ("find", {"k": "a", "t": {"$gte": 12}}),
    # Decimal128 ranges: evaluated in Python, on the rows the equalities allow.
    ("find", {"k": "a", "t": {"$gte": Decimal128("11.5")}}),
    ("find", {"k": {"$in": ["a", "b", "ä"]}, "t": {"$lt": Decimal128("12")}}),
    ("sorted", {"k": {"$in": ["a", "q"]}, "t": {"$gt": Decimal128("0")}}),
    ("find", {"k": {"$in": ["a", 1]}, "t": {"$gt": Decimal128("0")}}),
    ("collated", {"k": "A", "t": {"$gt": Decimal128("0")}}),
    ("insert", {"_id": "r1", "k": ["a", "c"], "t": 5}),  # now an array under k
    ("find", {"k": "a"}),
    ("find", {"k": "a", "t": {"$gte": Decimal128("1")}}),
    ("find", {"k": "c"}),
    ("sorted", {"k": "a"}),
    ("count", {"k": "a"}),
    ("delete_many", {"k": "a"}),
    ("find", {"k": {"$exists": True}}),
]


async def run_indexed_steps(client: AsyncMongoClient) -> list[Any]:
    collection = client["equivalence"][f"i{uuid.uuid4().hex[:8]}"]
    await collection.create_indexes([IndexModel([("k", 1), ("t", -1)]), IndexModel([("t", 1)])])
    seen: list[Any] = []
    for kind, arg in INDEXED_STEPS:
        if kind == "insert":
            await collection.insert_one(arg)
        elif kind == "insert_many":
            await collection.insert_many(arg)
        elif kind == "update_many":
            seen.append((await collection.update_many(*arg)).modified_count)
        elif kind == "delete_many":
            seen.append((await collection.delete_many(arg)).deleted_count)
        elif kind == "count":
            seen.append(await collection.count_documents(arg))
        elif kind == "sorted":
            seen.append([d["_id"] async for d in collection.find(arg).sort([("t", 1), ("_id", 1)])])
        elif kind == "collated":  # case-insensitive: "A" equals "a"
            found = collection.find(arg, collation=Collation("en", strength=2))
            seen.append(sorted([d["_id"] async for d in found]))
        else:
            seen.append(sorted([d["_id"] async for d in collection.find(arg)]))
    return seen


async def test_indexed_equalities_find_what_the_stock_engine_finds(clients):
    stock = await run_indexed_steps(clients["stock"])
    assert stock[0] == ["a1", "a2"] and stock[22] == ["a1", "a2", "r1"]  # they mean something
    assert stock[17] == ["a2"] and stock[18] == ["a1", "b1", "u1"] and stock[21] == ["a1", "a2"]
    assert await run_indexed_steps(clients["flat"]) == stock


class SQLiteSteps:
    """Counts the SQLite virtual machine instructions the embedded store executes: a
    measure of the rows it reads that does not depend on the machine's speed."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.count = 0
        make = server.engine._create_sqlite_connection

        def counted() -> Any:
            connection = make()
            connection.set_progress_handler(self._step, 1)
            return connection

        server.engine._create_sqlite_connection = counted

    def _step(self) -> int:
        self.count += 1
        return 0  # go on


async def test_the_ledger_and_order_reads_of_a_trade_read_only_the_accounts_rows(
    tmp_path_factory,
):
    """The reads a trade makes by account (count_documents for the books, the entries
    since the checkpoint) and the expiry sweep's read cost the same SQLite work whether
    the collections hold 40 or 400 documents of other accounts (with the app's own
    indexes). The stock engine, which reads every document, proves the measure."""
    from cryptovault.documents.trading import LedgerEntryDocument, OrderDocument

    now = datetime.now(UTC)
    reads: dict[str, Callable[[AsyncCollection, AsyncCollection], Awaitable[Any]]] = {
        "count": lambda ledger, orders: ledger.count_documents({"account": "me"}),
        "since": lambda ledger, orders: (
            ledger.find(
                {"account": "me", "created_at": {"$gte": now - timedelta(seconds=60)}},
                {"txn_id": 1, "asset": 1, "amount": 1, "kind": 1, "created_at": 1},
            )
            .sort([("created_at", 1), ("_id", 1)])
            .to_list()
        ),
        "expiry": lambda ledger, orders: orders.find(
            {"time_in_force": "GTD", "status": {"$in": ["OPEN"]}, "expires_at": {"$lte": now}}
        ).to_list(),
    }

    def entry(n: int, account: str) -> dict[str, Any]:
        return {
            "_id": f"{account}:{n}",
            "txn_id": f"t{n}",
            "account": account,
            "asset": "USD",
            "amount": Decimal128("1.5"),
            "lines": [],
            "slot": f"{account}:USD#{n}",
            "seq": n,
            "kind": "trade",
            "created_at": now,
        }

    def order(n: int) -> dict[str, Any]:
        return {
            "_id": f"o{n}",
            "user_id": f"u{n % 7}",
            "idempotency_key": f"order:o{n}",
            "symbol": "BTC",
            "status": "FILLED",
            "time_in_force": "GTC",
            "expires_at": None,
            "lease_until": None,
            "created_at": now,
        }

    async def steps(stock: bool) -> dict[str, list[int]]:
        server = EmbeddedServer(tmp_path_factory.mktemp("steps"), stock=stock)
        counter = SQLiteSteps(server)
        client: AsyncMongoClient = AsyncMongoClient(await server.start(), tz_aware=True)
        ledger, orders = client["steps"]["ledger"], client["steps"]["orders"]
        await ledger.create_indexes(LedgerEntryDocument.Settings.indexes)
        await orders.create_indexes(OrderDocument.Settings.indexes)
        await ledger.insert_many([entry(n, "me") for n in range(1, 4)])
        measured: dict[str, list[int]] = {name: [] for name in reads}
        written = 0
        for size in (40, 400):
            await ledger.insert_many([entry(n, f"u{n % 7}") for n in range(written, size)])
            await orders.insert_many([order(n) for n in range(written, size)])
            written = size
            for name, read in reads.items():
                await read(ledger, orders)  # what the engine learns once per collection
                counter.count = 0
                await read(ledger, orders)
                measured[name].append(counter.count)
        await client.close()
        await server.close()
        return measured

    stock = await steps(stock=True)
    for name, (small, big) in stock.items():
        assert big > 5 * small, (name, stock[name])  # a read of every document
    flat = await steps(stock=False)
    for name, (small, big) in flat.items():
        assert big == small, (name, flat[name])


async def test_a_compound_unique_key_is_checked_without_reading_the_collection(
    tmp_path_factory,
):
    """An insert into a collection with a compound unique index costs the same SQLite
    work at 40 and at 400 documents (the stock engine decodes every document to
    compare keys), and still refuses a duplicate."""

    async def steps(stock: bool) -> list[int]:
        server = EmbeddedServer(tmp_path_factory.mktemp("compound"), stock=stock)
        counter = SQLiteSteps(server)
        client: AsyncMongoClient = AsyncMongoClient(await server.start())
        collection = client["steps"]["slots"]
        await collection.create_indexes([IndexModel([("user", 1), ("slot", 1)], unique=True)])
        measured, written = [], 0
        for size in (40, 400):
            await collection.insert_many(
                [
                    {"_id": f"s{n}", "user": f"u{n % 7}", "slot": f"s{n}"}
                    for n in range(written, size)
                ]
            )
            written = size
            counter.count = 0
            await collection.insert_one({"_id": f"n{size}", "user": "u1", "slot": f"n{size}"})
            measured.append(counter.count)
        with pytest.raises(DuplicateKeyError):
            await collection.insert_one({"_id": "again", "user": "u3", "slot": "s3"})
        await client.close()
        await server.close()
        return measured

    small, big = await steps(stock=True)
    assert big > 5 * small  # a read of every document: the measure means something
    small, big = await steps(stock=False)
    assert big == small


class Transactions:
    """Counts the SQLite transactions that committed documents (an insert into the
    documents table, then a commit)."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.count = 0
        self._wrote = False
        make = server.engine._create_sqlite_connection

        def traced() -> Any:
            connection = make()
            connection.set_trace_callback(self._statement)
            return connection

        server.engine._create_sqlite_connection = traced

    def _statement(self, sql: str) -> None:
        statement = " ".join(sql.split()).upper()
        if statement.startswith("INSERT INTO DOCUMENTS"):
            self._wrote = True
        elif statement.startswith("COMMIT") and self._wrote:
            self.count += 1
            self._wrote = False


async def test_an_insert_of_many_documents_is_one_transaction(tmp_path_factory):
    """The wire server writes the documents of one insert command in one SQLite
    transaction (the stock server: one each), with the same uniqueness checks."""

    async def transactions(stock: bool) -> int:
        server = EmbeddedServer(tmp_path_factory.mktemp("batch"), stock=stock)
        counter = Transactions(server)
        client: AsyncMongoClient = AsyncMongoClient(await server.start())
        collection = client["batch"]["docs"]
        await collection.create_indexes([IndexModel([("k", 1)], unique=True)])
        await collection.insert_one({"_id": "first", "k": "first"})
        counter.count = 0
        await collection.insert_many([{"_id": f"d{n}", "k": f"k{n}"} for n in range(50)])
        counted = counter.count
        assert await collection.count_documents({}) == 51
        await client.close()
        await server.close()
        return counted

    assert await transactions(stock=True) >= 50
    assert await transactions(stock=False) == 1


BATCHES: dict[str, tuple[list[dict[str, Any]], bool]] = {
    "ordered, a duplicate id in the middle": (
        [{"_id": "n1"}, {"_id": "old"}, {"_id": "n2"}],
        True,
    ),
    "unordered, a duplicate id in the middle": (
        [{"_id": "n1"}, {"_id": "old"}, {"_id": "n2"}],
        False,
    ),
    "ordered, a duplicate key within the batch": (
        [{"_id": "n1", "k": "x"}, {"_id": "n2", "k": "x"}, {"_id": "n3", "k": "y"}],
        True,
    ),
    "unordered, duplicate keys old and new": (
        [
            {"_id": "n1", "k": "old"},
            {"_id": "n2", "k": "x"},
            {"_id": "n3", "k": "x"},
            {"_id": "n4", "k": "z"},
        ],
        False,
    ),
    "unordered, a compound key": (
        [{"_id": "n1", "u": "a", "c": 1}, {"_id": "n2", "u": "a", "c": 1.0}, {"_id": "n3"}],
        False,
    ),
    "numeric ids equal across types": ([{"_id": 5}, {"_id": Int64(5)}, {"_id": 6}], False),
    "all new": ([{"_id": "n1", "k": "a"}, {"_id": "n2", "k": "b"}], True),
}


@pytest.mark.parametrize("case", list(BATCHES))
async def test_a_batch_insert_reports_what_the_stock_engine_reports(clients, case):
    """Same write errors (index, code, key pattern and value, message), same count
    inserted, same documents left, ordered or not."""

    async def outcome(client: AsyncMongoClient) -> tuple[Any, list[dict[str, Any]]]:
        # One name on both servers: it is in the error messages.
        collection = client["equivalence"][f"batch{list(BATCHES).index(case)}"]
        await collection.create_indexes(
            [
                IndexModel([("k", 1)], unique=True, sparse=True),
                IndexModel([("u", 1), ("c", 1)], unique=True, sparse=True),
            ]
        )
        await collection.insert_one({"_id": "old", "k": "old"})
        documents, ordered = BATCHES[case]
        try:
            result: Any = (
                await collection.insert_many([dict(d) for d in documents], ordered=ordered)
            ).inserted_ids
        except BulkWriteError as exc:
            result = exc.details
        return result, sorted(await collection.find({}).to_list(), key=repr)

    stock = await outcome(clients["stock"])
    assert await outcome(clients["flat"]) == stock


async def test_the_tick_matchers_read_costs_the_same_whatever_the_filled_history(
    tmp_path_factory,
):
    """The matcher's read (`symbol`, `status $in`, the crossing filter) reads the
    symbol's open orders through the (symbol, status, price) indexes: the same SQLite
    work with 40 or 400 filled orders in the collection (the stock engine reads
    them all), and the same orders found."""
    from decimal import Decimal

    from cryptovault.documents.trading import OrderDocument
    from cryptovault.market.assets import ASSETS
    from cryptovault.market.ticks import quote
    from cryptovault.trading import matching

    now = datetime.now(UTC)
    tick = quote(ASSETS["BTC"], Decimal(91_000), Decimal(1), "test")
    query = {
        "symbol": "BTC",
        "status": {"$in": ["OPEN", "PARTIALLY_FILLED"]},
        "owner": None,
        **matching.crossing(tick, now),
    }

    def order(n: int, status: str, price: int) -> dict[str, Any]:
        doc = {
            "_id": f"o{status}{n}",
            "user_id": f"u{n % 7}",
            "idempotency_key": f"order:{status}{n}",
            "symbol": "BTC",
            "side": "BUY",
            "type": "LIMIT",
            "time_in_force": "GTC",
            "limit_price": Decimal128(str(price)),
            "stop_price": None,
            "expires_at": None,
            "status": status,
            "triggered": False,
            "owner": None,
            "created_at": now,
        }
        return {**doc, "match_key": matching.match_key_of(doc)}

    async def steps(stock: bool) -> tuple[list[int], list[list[str]]]:
        server = EmbeddedServer(tmp_path_factory.mktemp("matcher"), stock=stock)
        counter = SQLiteSteps(server)
        client: AsyncMongoClient = AsyncMongoClient(await server.start(), tz_aware=True)
        orders = client["steps"]["orders"]
        await orders.create_indexes(OrderDocument.Settings.indexes)
        # Resting: 5 far below the price, 2 above it (crossed by the tick).
        await orders.insert_many(
            [order(n, "OPEN", 40_000 + n) for n in range(5)]
            + [order(n, "PARTIALLY_FILLED", 95_000 + n) for n in range(2)]
        )
        measured, found, written = [], [], 0
        for size in (40, 400):
            await orders.insert_many([order(n, "FILLED", 95_000) for n in range(written, size)])
            written = size
            await orders.find(query).to_list()  # what the engine learns once
            counter.count = 0
            found.append(sorted([d["_id"] async for d in orders.find(query)]))
            measured.append(counter.count)
        await client.close()
        await server.close()
        return measured, found

    (small, big), stock_found = await steps(stock=True)
    assert big > 5 * small
    assert stock_found[0] == ["oPARTIALLY_FILLED0", "oPARTIALLY_FILLED1"]
    (small, big), found = await steps(stock=False)
    assert found == stock_found
    assert big == small


async def test_the_tick_matchers_read_costs_the_same_whatever_the_resting_book(
    tmp_path_factory,
):
    """The matcher's read costs the same SQLite work with 20 or 400 resting orders far
    from the price (limits and stops of both sides, GTC), and finds the same crossed
    ones: each branch of its filter is one range of the (symbol, status, match_key)
    index. The stock engine, which reads them all, proves the measure."""
    from decimal import Decimal

    from cryptovault.documents.trading import OrderDocument
    from cryptovault.market.assets import ASSETS
    from cryptovault.market.ticks import quote
    from cryptovault.trading import matching

    now = datetime.now(UTC)
    tick = quote(ASSETS["BTC"], Decimal(91_000), Decimal(1), "test")
    query = {
        "symbol": "BTC",
        "status": {"$in": ["OPEN", "PARTIALLY_FILLED"]},
        "owner": None,
        **matching.crossing(tick, now),
    }
    far = [  # (type, side, limit, stop): none of them crossed by the tick
        ("LIMIT", "BUY", 40_000, None),
        ("LIMIT", "SELL", 150_000, None),
        ("STOP", "BUY", None, 150_000),
        ("STOP", "SELL", None, 40_000),
        ("STOP_LIMIT", "BUY", 160_000, 150_000),
    ]

    def order(n: int, kind: str, side: str, limit: int | None, stop: int | None) -> dict:
        doc = {
            "_id": f"o{n}",
            "user_id": f"u{n % 7}",
            "idempotency_key": f"order:{n}",
            "symbol": "BTC",
            "side": side,
            "type": kind,
            "time_in_force": "GTC",
            "limit_price": Decimal128(str(limit)) if limit is not None else None,
            "stop_price": Decimal128(str(stop)) if stop is not None else None,
            "expires_at": None,
            "status": "OPEN",
            "triggered": False,
            "owner": None,
            "created_at": now,
        }
        return {**doc, "match_key": matching.match_key_of(doc)}

    async def steps(stock: bool) -> tuple[list[int], list[list[str]]]:
        server = EmbeddedServer(tmp_path_factory.mktemp("book"), stock=stock)
        counter = SQLiteSteps(server)
        client: AsyncMongoClient = AsyncMongoClient(await server.start(), tz_aware=True)
        orders = client["steps"]["orders"]
        await orders.create_indexes(OrderDocument.Settings.indexes)
        await orders.insert_many(  # crossed: a buy limit above the ask, a sell stop above
            [order(-1, "LIMIT", "BUY", 95_000, None), order(-2, "STOP", "SELL", None, 95_000)]
        )
        measured, found, written = [], [], 0
        for size in (20, 400):
            await orders.insert_many([order(n, *far[n % len(far)]) for n in range(written, size)])
            written = size
            await orders.find(query).to_list()  # what the engine learns once
            counter.count = 0
            found.append(sorted([d["_id"] async for d in orders.find(query)]))
            measured.append(counter.count)
        await client.close()
        await server.close()
        return measured, found

    (small, big), stock_found = await steps(stock=True)
    assert big > 5 * small
    assert stock_found[0] == ["o-1", "o-2"] == stock_found[1]
    (small, big), found = await steps(stock=False)
    assert found == stock_found
    assert big == small


def _or(*branches: dict[str, Any]) -> dict[str, Any]:
    return {"s": "x", "$or": list(branches)}


RANGES = _or(
    {"k": "A"},
    {"k": {"$gte": "B5", "$lt": "C"}},
    {"k": {"$gt": "S", "$lte": "S3"}},
    {"k": None},
    {"k": {"$in": ["U1", "U2"]}},
)
OR_STEPS: list[tuple[str, Any]] = [
    (
        "insert_many",
        [
            {"_id": f"d{n}", "s": "x" if n % 3 else "y", "k": k, "t": n}
            for n, k in enumerate(["A", "B1", "B5", "B9", "C", "S", "S2", "S3", "S4", "U1", "U3"])
        ],
    ),
    ("find", RANGES),
    ("sorted", RANGES),
    ("insert", {"_id": "missing", "s": "x", "t": 100}),  # no k: matches k None
    ("find", RANGES),
    ("insert", {"_id": "number", "s": "x", "k": 7, "t": 101}),  # k no longer all strings
    ("find", RANGES),
    ("by_t", RANGES),
    ("insert", {"_id": "later", "s": "x", "k": "B7", "t": True}),  # t not all numbers
    ("by_t", RANGES),
    ("insert", {"_id": "array", "s": "x", "k": ["A", "Z"], "t": 102}),  # an array at k
    ("find", RANGES),
    ("sorted", RANGES),
    ("delete_many", {"k": {"$type": "array"}}),
    ("find", RANGES),
    ("find", {"$or": [{"k": "A"}, {"t": 5}]}),  # a branch on a field no index holds
    ("find", {"$or": [{"k": {"$gte": "S"}}, {"s": "y"}]}),
]


async def run_or_steps(client: AsyncMongoClient) -> list[Any]:
    collection = client["equivalence"][f"o{uuid.uuid4().hex[:8]}"]
    await collection.create_indexes([IndexModel([("s", 1), ("k", 1)]), IndexModel([("t", 1)])])
    seen: list[Any] = []
    for kind, arg in OR_STEPS:
        if kind == "insert":
            await collection.insert_one(arg)
        elif kind == "insert_many":
            await collection.insert_many(arg)
        elif kind == "delete_many":
            seen.append((await collection.delete_many(arg)).deleted_count)
        elif kind == "sorted":
            seen.append([d["_id"] async for d in collection.find(arg).sort([("t", 1), ("_id", 1)])])
        elif kind == "by_t":
            seen.append([d["_id"] async for d in collection.find(arg).sort("t", -1)])
        else:
            seen.append(sorted([d["_id"] async for d in collection.find(arg)]))
    return seen


async def test_or_reads_by_index_find_what_the_stock_engine_finds(clients):
    """`$or` branches on string ranges, equalities, `$in` and null of an indexed field
    (read through one index range each) answer as the stock engine does, also after
    writes that put a number, an array or another type where strings were."""
    stock = await run_or_steps(clients["stock"])
    assert stock[0] == ["d2", "d7"]  # they mean something
    assert stock[2] == sorted([*stock[0], "missing"])
    assert await run_or_steps(clients["flat"]) == stock


def test_a_collection_answer_is_computed_once_for_concurrent_askers(tmp_path):
    """Two requests asking the same "does any document hold..." question at once: one
    scan; a document written while it runs is counted in the answer, which is kept."""
    import threading

    engine = EmbeddedServer(tmp_path).engine
    scans, running, release = [], threading.Event(), threading.Event()

    def scan() -> bool:
        scans.append(1)
        running.set()
        release.wait(30)  # a safeguard: set below
        return False  # the rows read held no array

    answers: list[bool] = []

    def ask() -> None:
        answers.append(engine._fact("db", "coll", "array", "f", scan))

    first = threading.Thread(target=ask)
    first.start()
    assert running.wait(30)
    second = threading.Thread(target=ask)
    second.start()
    engine._learn("db", "coll", {"f": [1, 2]})  # written while the scan runs
    release.set()
    first.join()
    second.join()
    assert scans == [1] and answers == [True, True]
    assert engine._fact("db", "coll", "array", "f", scan) is True and scans == [1]
