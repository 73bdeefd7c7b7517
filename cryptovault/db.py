"""The store: MongoDB when MONGODB_URL is set, otherwise the embedded mongoeco engine
served over the MongoDB wire protocol. Either way the app talks to it through the real
pymongo async driver and Beanie: one code path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.documents import DOCUMENT_MODELS

log = logging.getLogger(__name__)

EMBEDDED_FILE = "cryptovault.sqlite3"


def flat_engine(path: str) -> Any:
    """mongoeco's SQLite engine without the scans of the whole collection that every
    write (and the next query) paid. mongoeco 4.11:

    - checks `_id` uniqueness of a single-document write by decoding every document
      (`scan_payload_id`), and again for the `_id_` index (it has no scalar entries,
      so it falls through to the generic scan), although the `documents` table's
      primary key (the id's typed storage key) already refuses a duplicate. Only
      numeric ids need the scan (1, 1.0, Int64(1) and Decimal128("1") are one `_id`
      with four storage keys): they keep it.
    - answers "does any document hold an array / a Decimal / bytes / undefined at this
      field" (query planning, multikey unique checks) by a query that reads the whole
      collection when none does, cached only until the collection's next write. Here
      the answers are kept: a write can only turn one from no to yes, and each written
      document is checked for that (conservatively: anything it holds at the field's
      path counts); any other invalidation (a delete, a drop, a rename) forgets them.
    - selects the document a conditional write targets (`{_id: x, fence: n}`, the
      shape of every fenced write here) by translating the whole filter to SQL over
      every document, using the `_id` primary key only when `_id` is the sole
      condition. Here such a filter reads the one document with that `_id` and
      matches the rest in Python.

    - reads with a filter such as `{account: u}` or `{account: u, created_at: {$gte:
      t}}` (count_documents, the ledger since a checkpoint, the expiry sweep's
      `{time_in_force: "GTD", ...}`) by evaluating the filter's JSON on every document
      of the collection: its SQL never names the expressions the indexes are built
      on, so SQLite cannot use them. Here an equality on a string, on a top-level
      field that leads an index, also states the condition in the index's own terms
      (its type expression is '' and its value expression is the string), so SQLite
      reads only the documents with that value, as MongoDB would through the same
      index. The original condition stays: the extra one only narrows the rows it is
      checked on, and is implied by it while no document holds an array there.

    Measured through the wire server in bench/embedded.py; tests/test_embedded_engine.py
    proves it answers every write and query of its cases as the stock engine does."""
    import threading
    from decimal import Decimal

    from mongoeco.core.filtering import QueryEngine
    from mongoeco.core.identity import id_contains_numeric_value
    from mongoeco.core.query_plan import AndCondition, EqualsCondition
    from mongoeco.engines import SQLiteEngine
    from mongoeco.engines._sqlite_connection import sqlite_read_scope
    from mongoeco.engines._sqlite_plan_heuristics import sort_requires_python
    from mongoeco.engines.sqlite_query import (
        json_path_for_field,
        translate_query_plan,
        type_expression_sql,
        value_expression_sql,
    )

    def by_id(plan: Any) -> Any:
        """The `_id` an AND of conditions pins down (a non-numeric one), or None."""
        if isinstance(plan, AndCondition):
            for clause in plan.clauses:
                if (
                    isinstance(clause, EqualsCondition)
                    and clause.field == "_id"
                    and not id_contains_numeric_value(clause.value)
                ):
                    return clause
        return None

    def holds(kind: str, document: Any, field: str) -> bool:
        values: list[Any] = [document]
        for part in field.split("."):
            found: list[Any] = []
            for value in values:
                items = value if isinstance(value, list) else [value]
                found += [v[part] for v in items if isinstance(v, dict) and part in v]
            values = found
        if kind == "array":
            return any(isinstance(v, list) for v in values)
        flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
        if kind.startswith("decimal"):
            return any(isinstance(v, Decimal) or "Decimal" in type(v).__name__ for v in flat)
        if kind == "bytes":
            return any(isinstance(v, (bytes, bytearray)) for v in flat)
        return any(kind.lower() in type(v).__name__.lower() for v in flat)

    class FlatSQLiteEngine(SQLiteEngine):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # (db, collection) -> {(kind, field): whether some document holds it}
            self._facts: dict[tuple[str, str], dict[tuple[str, str], bool]] = {}
            self._facts_lock = threading.Lock()
            self._written = threading.local()

        def _fact(self, db: str, coll: str, kind: str, field: str, compute: Any) -> bool:
            with self._facts_lock:
                known = self._facts.get((db, coll), {}).get((kind, field))
            if known is not None:
                return known
            found = bool(compute())
            with self._facts_lock:
                facts = self._facts.setdefault((db, coll), {})
                facts[(kind, field)] = facts.get((kind, field), False) or found
                return facts[(kind, field)]

        def _learn(self, db: str, coll: str, document: Any) -> None:
            with self._facts_lock:
                facts = self._facts.get((db, coll), {})
                for kind, field in [k for k, known in facts.items() if not known]:
                    if holds(kind, document, field):
                        facts[(kind, field)] = True

        def _field_contains_tagged_value_type_in_collection(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, field, value_type
        ):
            parent = super()._field_contains_tagged_value_type_in_collection
            return self._fact(
                db_name,
                coll_name,
                value_type,
                field,
                lambda: parent(db_name, coll_name, field, value_type),
            )

        def _field_is_top_level_array_in_collection(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, field
        ):
            parent = super()._field_is_top_level_array_in_collection
            return self._fact(
                db_name, coll_name, "array", field, lambda: parent(db_name, coll_name, field)
            )

        def _invalidate_collection_features_cache(  # type: ignore[no-untyped-def]
            self, db_name=None, coll_name=None
        ):
            super()._invalidate_collection_features_cache(db_name, coll_name)
            written = getattr(self._written, "documents", None) or []
            self._written.documents = []
            if db_name is not None and coll_name is not None and written:
                # After the write committed: what a concurrent reader computed
                # before it now learns of it too.
                for db, coll, document in written:
                    self._learn(db, coll, document)
                return
            with self._facts_lock:  # not a write seen here: forget
                if db_name is None or coll_name is None:
                    self._facts.clear()
                else:
                    self._facts.pop((db_name, coll_name), None)

        def _validate_document_against_unique_indexes(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, document, **options
        ):
            self._learn(db_name, coll_name, document)
            written = getattr(self._written, "documents", None)
            if written is None:
                written = self._written.documents = []
            written.append((db_name, coll_name, document))
            if options.get("scan_payload_id") and not id_contains_numeric_value(
                document.get("_id")
            ):
                options["scan_payload_id"] = False
            return super()._validate_document_against_unique_indexes(
                db_name, coll_name, document, **options
            )

        def _select_first_document_for_plan(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, plan, **options
        ):
            pinned = by_id(plan)
            if pinned is None:
                return super()._select_first_document_for_plan(db_name, coll_name, plan, **options)
            conn = self._require_connection(options.get("context"))
            with self._bind_connection(conn), sqlite_read_scope(conn):
                row = conn.execute(
                    "SELECT storage_key, document FROM documents "
                    "WHERE db_name = ? AND coll_name = ? AND storage_key = ?",
                    (db_name, coll_name, self._storage_key(pinned.value)),
                ).fetchone()
            if row is None:
                return None
            document = self._deserialize_document(row[1])
            return (row[0], document) if QueryEngine.match_plan(document, plan) else None

        def _translate_query_plan_with_multikey(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, plan
        ):
            sql, params = super()._translate_query_plan_with_multikey(db_name, coll_name, plan)
            if not isinstance(plan, EqualsCondition):
                return sql, params  # an AND's clauses came through here one by one
            return self._narrowed(db_name, coll_name, plan, sql, params)

        def _sort_requires_python(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, plan, sort
        ):
            # Asks "does a matching document hold an array or an object at a sort
            # field" with a SQL filter of its own: narrowed the same way.
            def translate(node: Any) -> tuple[str, list[Any]]:
                sql, params = translate_query_plan(node)
                return self._narrowed(db_name, coll_name, node, sql, params)

            return sort_requires_python(
                db_name=db_name,
                coll_name=coll_name,
                plan=plan,
                sort=sort,
                plan_has_array_traversing_paths=self._plan_has_array_traversing_paths,
                translate_query_plan=translate,
                field_traverses_array_in_collection=self._field_traverses_array_in_collection,
                field_contains_tagged_bytes_in_collection=self._field_contains_tagged_bytes_in_collection,
                field_contains_tagged_undefined_in_collection=self._field_contains_tagged_undefined_in_collection,
                fetchone=lambda sql, params: (
                    self._require_connection().execute(sql, params).fetchone()
                ),
                type_expression_sql=type_expression_sql,
                json_path_for_field=json_path_for_field,
            )

        def _narrowed(
            self, db_name: str, coll_name: str, plan: Any, sql: str, params: list[Any]
        ) -> tuple[str, list[Any]]:
            """`sql` (the translation of `plan`) and, for each equality on a string of
            a top-level field that leads an index (the plan, or a clause of the AND
            it is), the same condition in the index's expressions."""
            clauses = plan.clauses if isinstance(plan, AndCondition) else (plan,)
            extra: list[str] = []
            values: list[Any] = []
            for clause in clauses:
                if (
                    isinstance(clause, EqualsCondition)
                    and type(clause.value) is str
                    and "." not in clause.field
                    and clause.field != "_id"
                    and self._leads_an_index(db_name, coll_name, clause.field)
                    and not self._field_is_top_level_array_in_collection(
                        db_name, coll_name, clause.field
                    )
                ):
                    # Literally the index's expressions: SQLite matches them as written.
                    extra.append(
                        f"{type_expression_sql(clause.field)} = '' "
                        f"AND {value_expression_sql(clause.field)} = ?"
                    )
                    values.append(clause.value)
            if not extra:
                return sql, params
            return " AND ".join([f"({sql})", *extra]), [*params, *values]

        def _leads_an_index(self, db_name: str, coll_name: str, field: str) -> bool:
            return any(
                index.get("physical_name")
                and not index.get("hidden")
                and index.get("collation") is None
                and index.get("fields", [None])[0] == field
                for index in self._load_indexes(db_name, coll_name)
            )

        def _unique_index_conflict_via_scalar_entries(  # type: ignore[no-untyped-def]
            self, conn, collection_id, index, document, **options
        ):
            if (
                index.get("name") == "_id_"
                and "_id" in document
                and not id_contains_numeric_value(document["_id"])
            ):
                return False  # the primary key check before it decided
            return super()._unique_index_conflict_via_scalar_entries(
                conn, collection_id, index, document, **options
            )

    return FlatSQLiteEngine(path)


class EmbeddedServer:
    """mongoeco's wire server over its SQLite engine (a file in `data_dir`)."""

    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, *, stock: bool = False
    ) -> None:
        from mongoeco.engines import SQLiteEngine
        from mongoeco.wire import AsyncMongoEcoProxyServer

        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / EMBEDDED_FILE
        engine = SQLiteEngine(str(self.path)) if stock else flat_engine(str(self.path))
        self.engine = engine
        self._server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port)
        self.url = ""

    async def start(self) -> str:
        address = await self._server.start()
        self.url = f"mongodb://{address.host}:{address.port}/?directConnection=true"
        return self.url

    async def close(self) -> None:
        try:
            await self._server.close()
        except Exception as exc:
            # mongoeco's engine can report "database is locked" from a housekeeping
            # thread while disconnecting under load; every write was committed before.
            log.warning("embedded store closed with a cleanup error", extra={"error": repr(exc)})


async def init_models_and_indexes(db: AsyncDatabase) -> None:
    await init_beanie(database=db, document_models=DOCUMENT_MODELS)


@dataclass
class Store:
    client: AsyncMongoClient
    db: AsyncDatabase
    embedded: EmbeddedServer | None = field(default=None)

    async def ping(self) -> None:
        await self.db.command("ping")

    async def close(self) -> None:
        await self.client.close()
        if self.embedded is not None:
            await self.embedded.close()


async def open_store(
    url: str | None,
    db_name: str,
    data_dir: Path,
    *,
    event_listeners: list[object] | None = None,
    init_models: bool = True,
) -> Store:
    """Connect (starting the embedded engine when no URL is given) and init Beanie,
    which also creates every document's indexes. Tools that work on raw documents
    (migrate, backup, restore) pass `init_models=False`."""
    embedded = None
    if url is None:
        embedded = EmbeddedServer(data_dir)
        url = await embedded.start()
        log.info("embedded store started", extra={"path": str(embedded.path)})
    client: AsyncMongoClient = AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        event_listeners=event_listeners or [],
    )
    db = client[db_name]
    try:
        if init_models:
            await init_models_and_indexes(db)
    except BaseException:
        await client.close()
        if embedded is not None:
            await embedded.close()
        raise
    return Store(client=client, db=db, embedded=embedded)
