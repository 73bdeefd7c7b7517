"""mongoeco's SQLite engine without the work that grew with the collection on every
write, for exactly the mongoeco release it was written against.

The invariant: every write and query answers as the stock engine does
(tests/test_embedded_engine.py runs each case on both); only the rows read to reach
that answer change. The corrections override private methods of mongoeco 4.11, so
they are pinned: `PINNED_VERSION` and a hash of the source of every mongoeco function
they override, call with private arguments, or depend on the behaviour of
(`RECORDED_SOURCES`). If the installed mongoeco differs in any of them, `engine()`
does not apply the corrections: it logs a warning naming what changed and returns
the stock engine, which is slow on large collections but correct, because a
correction applied to code it was not written for could accept a duplicate key;
tests/test_mongoeco_compat.py fails with the same message, so the upgrade is
noticed. To upgrade: read each changed function, adapt the overrides, then
`python -m cryptovault.db.mongoeco_compat` prints the new hashes to record.

mongoeco 4.11, and what the engine here does instead:

- It checks `_id` uniqueness of a single-document write by decoding every document
  (`scan_payload_id`), and again for the `_id_` index (no scalar entries, so the
  generic scan), although the `documents` table's primary key (the id's typed storage
  key) already refuses a duplicate. Only numeric ids need the scan (1, 1.0, Int64(1)
  and Decimal128("1") are one `_id` with four storage keys): they keep it.
- It answers "does any document hold an array / a Decimal / bytes / undefined / a
  type other than the one compared at this field" and "which scalar type do all
  documents hold at this sort field" (query planning, multikey unique checks) by a
  query that reads the whole collection (when none does; a COUNT for the sort type),
  cached only until the collection's next write. Here the answers are kept and each
  written document moves them towards the general path (a yes; no uniform type),
  conservatively: anything it holds at the field's path counts, a subclass counts as
  another type; any other invalidation (a delete, a drop, a rename) forgets them. Each
  is computed once: concurrent askers wait for the computation under way, and the
  documents written while it runs are applied to its answer.
- It selects the document a conditional write targets (`{_id: x, fence: n}`, every
  fenced write) by translating the whole filter to SQL over every document, using the
  `_id` primary key only when `_id` is the sole condition. Here such a filter reads
  the one document with that `_id` and matches the rest in Python.
- It checks a compound unique index (and any unique index it has no scalar entries
  for) by decoding every document of the collection. Here, when the written document
  holds a string at the index's leading field (top level, no array there in the
  collection), the documents table's own SQLite index for it (built on the same
  expressions) finds the candidates, and the stock comparison runs on those only.
  Any document with an equal key holds the same string there, so none is missed.
- Its reads state a filter such as `{account: u}` or `{status: {$in: [...]}}` in SQL
  that never names the expressions its indexes are built on, so SQLite reads every
  document. Here an equality on a string (or `$in` of strings) of a top-level indexed
  field is also stated in the index's own terms (type expression '' and value
  expression the string), so SQLite reads only the matching documents. The original
  condition stays: the extra one only narrows the rows it is checked on and is implied
  by it while no document holds an array there.
- An `$or` is translated branch by branch, and SQLite (no statistics) reads every row
  the AND's equalities around it allow, testing the `$or` on each. Here, when every
  branch names a string, a string range or null of a top-level indexed field, the
  read is also restricted to `documents.storage_key IN (one index read per branch,
  UNION ALL)`, each read with the AND's own string conditions: implied by the filter,
  so only the rows read change (the tick matcher's filter by match key).
- Its wire server inserts the documents of one `insert` command one by one, each in a
  transaction of its own. Here a command with several documents goes through the
  collection's batch insert: one SQLite transaction, the same per-document uniqueness
  checks and the same write errors (ordered: the documents before the first error are
  inserted; unordered: every valid one).
- Its change-outbox dispatcher (every write is recorded for change streams and
  delivered to an in-process hub) commits the consumer's checkpoint after each
  change. Here once per batch read (up to 1,000): delivery stays at least once.

What does not use an index, and why: a range on a Decimal128 field (the tick
matcher filters on a string key instead, trading.matching.match_key). The engine stores a Decimal128 as a tagged string
(`{"$mongoeco": {"type": "decimal128_public", "value": "40123.5"}}`) and indexes that
string, whose order is not the numbers' ("9" > "10000"), so no key range of the index
holds exactly the numbers in a price range. Serving it would take a second SQLite index
on a numeric expression of the value, a translation of `$gt/$lt` on Decimal128 to
that expression with a rounding margin (REAL has 53 bits, Decimal128 34 digits) and
a recheck in Python, maintained in step with the engine's own planner: more of
mongoeco's private planner than this layer should pin. The equality prefix of the
same index (`symbol`, `status $in`) is used, so such a read reads the open orders of
the symbol, never the filled history.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import sqlite3
import threading
from decimal import Decimal
from functools import cache
from importlib import import_module
from typing import Any

log = logging.getLogger(__name__)

PINNED_VERSION = "4.11.0"

# "module:qualname" -> sha256 of inspect.getsource, for mongoeco 4.11.0.
RECORDED_SOURCES: dict[str, str] = {
    "mongoeco.engines.sqlite:SQLiteEngine._field_contains_tagged_value_type_in_collection": "daf633059f94499c53efe79cec01d1309be1503d568e13bef3d402cc2ae4eb39",
    "mongoeco.engines.sqlite:SQLiteEngine._field_is_top_level_array_in_collection": "fb4a72a41afc93b6d458254c7c37bf330dd3a6ff0dd82c0f745cbbd7dac5d765",
    "mongoeco.engines.sqlite:SQLiteEngine._invalidate_collection_features_cache": "e1bdccc952ff5ab3c0a58979b84087006b7f1bd7d7dd45da278dd21b83ef3cde",
    "mongoeco.engines.sqlite:SQLiteEngine._validate_document_against_unique_indexes": "f50e60835a1d8144657b7e0538a0ba7c77dc28f9dd1e10f0056175d53fe62b54",
    "mongoeco.engines.sqlite:SQLiteEngine._unique_index_conflict_via_scalar_entries": "9e9f569bfc7d6d1b7bd37f8c0661ff83993710731d4f3bc9c10ee0a11447db48",
    "mongoeco.engines.sqlite:SQLiteEngine._dispatch_committed_changes_serial": "41f823c470ede835f4553be93fd7e63532c43269776e030473a754e4467eac9b",
    "mongoeco.engines._sqlite_outbox:consumer_checkpoint": "c4e915aa9cfe0f05e1ee58246bcee606775daee82fc992627429f4ed28fbfb66",
    "mongoeco.engines._sqlite_outbox:checkpoint_consumer": "3b83231938d414bc9a49300620cbce24ec344270842a7d88c3fa4bc85f348b2c",
    "mongoeco.engines._sqlite_outbox:read_committed_changes": "b5d20da386753b24091714f6356e61edbcf6e080e2ebd8020b04968891dc3ab2",
    "mongoeco.engines._sqlite_outbox:compact_change_outbox": "4b5d2e546927cf1531fd1dca853a9d3db1de5afd53b760109609eacc98e0101c",
    "mongoeco.engines._change_dispatch:ConsumerDispatchCoordinator.hold": "9f53702d56d5ef33fa2884e5f9c1f9fbacc3651b9d4e276a9d00eeb8fbbfc30e",
    "mongoeco.engines.adapter:EngineSpiAdapter._deliver_committed_change": "8364f821ac64589dbb1338d6665538a472f49c43d82908d4bf719a206aced19a",
    "mongoeco.engines.sqlite:SQLiteEngine._field_contains_tagged_undefined_in_collection": "baa2ec4cefe5acb83129a07baf4668520f4fa5b44d96bd6a7cce20dc767c30b8",
    "mongoeco.engines.sqlite:SQLiteEngine._field_has_comparison_type_mismatch_in_collection": "cc65f94c105535653b6fd0939fd965d9adc141a4b916b7af306448243f366dc7",
    "mongoeco.engines.sqlite:SQLiteEngine._field_has_uniform_scalar_sort_type_in_collection": "b4ad649774909a6a81a06008eb5d0ec4c28f2679480f7d4e773ca50a673a007b",
    "mongoeco.engines.sqlite:SQLiteEngine._select_first_document_for_plan": "cf2d409d2f48e1c31479667cb8fac87817527acec20db8ced1968c94646328ef",
    "mongoeco.engines.sqlite:SQLiteEngine._translate_query_plan_with_multikey": "703ebc7ee809fce9109507c426b1da34f5432151cae2bd6f074cd85cc1f78932",
    "mongoeco.engines.sqlite:SQLiteEngine._sort_requires_python": "40df45295b763ee5d93460df5736fec596308f6d0ef8b462f37a1b86a79cdf03",
    "mongoeco.engines.sqlite:SQLiteEngine._unique_index_uses_multikey_values": "38c10ef7ffffcd0f9140b970c254d2615d507009f9353388c5884ee3f3175d63",
    "mongoeco.engines.sqlite:SQLiteEngine._index_value": "b706ed8e817e63b41c36c1cc167fdb26aec78d0246a1ad7801ec36d04f75854e",
    "mongoeco.engines.sqlite:SQLiteEngine._unique_key_error": "d3d48f53845e2c3b6314c285fbbd2f59119bb413911e8714f3023f3b1504cdf5",
    "mongoeco.engines.sqlite:SQLiteEngine._storage_key": "3af61312918fe8a47eb33c5c9b5680032b8a08de1494388be587c8d2630b5109",
    "mongoeco.engines.sqlite:SQLiteEngine._open_scan_documents_sync": "44bfbf05f032aa4ae5595fc425098b318253980d2bef8966be3ebb921144ba63",
    "mongoeco.engines.sqlite:SQLiteEngine._load_documents": "4c98f932625a98ad504725ff6bff1308a31b348704bdc53710502c655053e899",
    "mongoeco.engines.sqlite:SQLiteEngine._insert_documents_sync": "322f1c1a2cf8dda4789439fe9b0af1fe9249c5c63f1d5632bee9c76efa7c0030",
    "mongoeco.engines._sqlite_plan_heuristics:sort_requires_python": "43dde6499e2b40fad3c891c3f964c20ccc0d1af736d2aa71a852ff0eb1550fc4",
    "mongoeco.engines.sqlite_query:type_expression_sql": "45236b27346dcd33d0d9db91dc62ee4cc7303541b23b83ccb2a1f3588b4aab93",
    "mongoeco.engines.sqlite_query:value_expression_sql": "682f10d55c3023a9fa93cb5788bdd365d97d60f5ea2e6fc84e2dc845dbf83866",
    "mongoeco.engines.sqlite_query:_tagged_paths": "4363492f6c788b058edbf4c8398d3d40c9b6493e3486058371f233b58dc213b5",
    "mongoeco.engines._sqlite_index_admin:create_index": "ab9cdd5a6338fca3668106d0f27a490fa08faf1fb13e66fa48baebb9f8db0d61",
    "mongoeco.api._async._database_admin_write_commands:DatabaseAdminWriteCommandService.command_insert": "0cf8f18e356f6ec8e2fbe2c799b2e3eb515532131953c9747409c1f4820e1e49",
    "mongoeco.api._async._collection_insert:execute_insert_many": "07246e25b06bb9face942135b7498f720389bfbfd510ace4ae6bf5d84cf3177e",
}


def _resolve(name: str) -> Any:
    module_name, qualname = name.split(":")
    target: Any = import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def source_hashes() -> dict[str, str]:
    """The hash of the installed source of every function in RECORDED_SOURCES."""
    found = {}
    for name in RECORDED_SOURCES:
        try:
            source = inspect.getsource(_resolve(name))
        except (AttributeError, ImportError, OSError, TypeError) as exc:
            found[name] = f"missing ({type(exc).__name__})"
            continue
        found[name] = hashlib.sha256(source.encode()).hexdigest()
    return found


@cache
def compat_problems() -> tuple[str, ...]:
    """Why the corrections must not be applied to the installed mongoeco (empty: they
    may)."""
    import mongoeco

    problems = []
    if mongoeco.__version__ != PINNED_VERSION:
        problems.append(
            f"mongoeco {mongoeco.__version__} is installed; the compatibility layer "
            f"was written for {PINNED_VERSION}"
        )
    installed = source_hashes()
    problems += [
        f"{name} changed since mongoeco {PINNED_VERSION} (source hash {installed[name][:12]}, "
        f"recorded {recorded[:12]})"
        for name, recorded in RECORDED_SOURCES.items()
        if installed[name] != recorded
    ]
    return tuple(problems)


def engine(path: str) -> Any:
    """The corrected engine over the SQLite file at `path`, or the stock one (with a
    warning) when the installed mongoeco is not the one the corrections were written
    for."""
    from mongoeco.engines import SQLiteEngine

    problems = compat_problems()
    if problems:
        log.warning(
            "mongoeco compatibility layer not applied: the embedded store runs "
            "mongoeco's stock SQLite engine (correct, but writes slow down as "
            "collections grow). Adapt cryptovault/db/mongoeco_compat.py to: " + "; ".join(problems)
        )
        return SQLiteEngine(path)
    _install_batch_insert()
    return _engine_class()(path)


def holds(kind: str, document: Any, field: str) -> bool:
    """Whether `document` holds something of `kind` (an array, a Decimal, bytes, ...)
    at `field`, conservatively: any value along the path counts."""
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


def _values_at(document: Any, field: str) -> list[Any]:
    values: list[Any] = [document]
    for part in field.split("."):
        found: list[Any] = []
        for value in values:
            items = value if isinstance(value, list) else [value]
            found += [v[part] for v in items if isinstance(v, dict) and part in v]
        values = found
    return values


def _json_kind(value: Any) -> str:
    """The JSON type mongoeco stores `value` as, for the types these answers name;
    exact types only (a subclass such as Int64 or Code may be stored tagged): "other"
    is always the safe answer."""
    if type(value) is bool:
        return "bool"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    return "other"  # null, an array, an object, a tagged value (Decimal128, a date...)


def updated(kind: str, answer: Any, document: Any, field: str) -> Any:
    """A kept answer about a collection after `document` was written to it, erring
    towards the answer that takes mongoeco's general path (a yes; no uniform type)."""
    if kind == "uniform":  # every document holds a `answer` at field (a JSON path)
        values: list[Any] = [document]
        for part in field.split("."):
            values = [v[part] for v in values if isinstance(v, dict) and part in v]
        if answer is None or len(values) != 1 or _json_kind(values[0]) != answer:
            return None
        return answer
    if answer:
        return answer
    if kind.startswith("mismatch:"):  # some document holds something else there
        expected = kind.removeprefix("mismatch:")
        return any(_json_kind(v) != expected for v in _values_at(document, field))
    return holds(kind, document, field)


class _Computation:
    """A "does any document hold..." answer being computed (FlatSQLiteEngine._fact)."""

    __slots__ = ("done", "written")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.written: list[Any] = []  # documents written meanwhile


@cache
def _engine_class() -> type:
    from mongoeco.core.filtering import QueryEngine
    from mongoeco.core.identity import id_contains_numeric_value
    from mongoeco.core.query_plan import (
        AndCondition,
        EqualsCondition,
        GreaterThanCondition,
        GreaterThanOrEqualCondition,
        InCondition,
        LessThanCondition,
        LessThanOrEqualCondition,
        OrCondition,
    )
    from mongoeco.engines import SQLiteEngine
    from mongoeco.engines import _sqlite_outbox as outbox
    from mongoeco.engines._sqlite_connection import sqlite_read_scope
    from mongoeco.engines._sqlite_plan_heuristics import sort_requires_python
    from mongoeco.engines.sqlite_query import (
        json_path_for_field,
        translate_query_plan,
        type_expression_sql,
        value_expression_sql,
    )
    from mongoeco.engines.virtual_indexes import document_in_virtual_index
    from mongoeco.types import is_ordered_index_spec

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

    ranges = {
        GreaterThanCondition: ">",
        GreaterThanOrEqualCondition: ">=",
        LessThanCondition: "<",
        LessThanOrEqualCondition: "<=",
    }

    def in_index_terms(field: str, values: list[str]) -> tuple[str, list[Any]]:
        """`field` is one of `values` (strings), literally in the index's expressions:
        SQLite matches them as written."""
        marks = ", ".join("?" for _ in values)
        value = value_expression_sql(field)
        test = "= ?" if len(values) == 1 else f"IN ({marks})"
        return f"{type_expression_sql(field)} = '' AND {value} {test}", list(values)

    class FlatSQLiteEngine(SQLiteEngine):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # (db, collection) -> {(kind, field): whether some document holds it}
            self._facts: dict[tuple[str, str], dict[tuple[str, str], bool]] = {}
            # (db, coll, kind, field) -> the one computation of it under way: set when
            # it ends; and whether a document written meanwhile holds it.
            self._computing: dict[tuple[str, str, str, str], _Computation] = {}
            self._facts_lock = threading.Lock()
            self._written = threading.local()

        def _fact(
            self,
            db: str,
            coll: str,
            kind: str,
            field: str,
            compute: Any,
            keep: Any = None,
        ) -> Any:
            """The kept answer, else computed once: requests asking while it is being
            computed wait for that computation instead of scanning the collection too.
            The computation takes no lock (a read; WAL readers never wait for a
            writer), so a writer waiting here cannot deadlock it. `keep(answer)`:
            whether to keep it (default: always)."""
            key = (db, coll, kind, field)
            while True:
                with self._facts_lock:
                    facts = self._facts.get((db, coll), {})
                    if (kind, field) in facts:
                        return facts[(kind, field)]
                    computation = self._computing.get(key)
                    if computation is None:
                        computation = self._computing[key] = _Computation()
                        break
                computation.done.wait()
            try:
                answer = compute()
                if kind != "uniform":
                    answer = bool(answer)
                kept = keep is None or keep(answer)
                with self._facts_lock:
                    # A document written while the read ran may be missing from it.
                    for document in computation.written:
                        answer = updated(kind, answer, document, field)
                    if kept:
                        self._facts.setdefault((db, coll), {})[(kind, field)] = answer
                    return answer
            finally:
                with self._facts_lock:
                    del self._computing[key]
                computation.done.set()

        def _learn(self, db: str, coll: str, document: Any) -> None:
            with self._facts_lock:
                facts = self._facts.get((db, coll), {})
                for (kind, field), answer in facts.items():
                    if answer is True or answer is None:
                        continue  # a yes, or no uniform type: no write changes it
                    facts[(kind, field)] = updated(kind, answer, document, field)
                for (cdb, ccoll, _kind, _field), computation in self._computing.items():
                    if (cdb, ccoll) == (db, coll):
                        computation.written.append(document)

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

        def _field_has_comparison_type_mismatch_in_collection(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, field, expected_type
        ):
            parent = super()._field_has_comparison_type_mismatch_in_collection
            return self._fact(
                db_name,
                coll_name,
                f"mismatch:{expected_type}",
                field,
                lambda: parent(db_name, coll_name, field, expected_type),
            )

        def _field_has_uniform_scalar_sort_type_in_collection(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, field
        ):
            # Kept as long as every written document holds that type there; "none" on
            # an empty collection is not kept (its first documents may all agree).
            parent = super()._field_has_uniform_scalar_sort_type_in_collection
            return self._fact(
                db_name,
                coll_name,
                "uniform",
                field,
                lambda: parent(db_name, coll_name, field),
                keep=lambda answer: answer is not None or self._holds_documents(db_name, coll_name),
            )

        def _holds_documents(self, db_name: str, coll_name: str) -> bool:
            row = (
                self._require_connection()
                .execute(
                    "SELECT 1 FROM documents WHERE db_name = ? AND coll_name = ? LIMIT 1",
                    (db_name, coll_name),
                )
                .fetchone()
            )
            return row is not None

        def _invalidate_collection_features_cache(  # type: ignore[no-untyped-def]
            self, db_name=None, coll_name=None
        ):
            if db_name is None or coll_name is None:
                super()._invalidate_collection_features_cache(db_name, coll_name)
            else:
                # Stock mongoeco iterates the cache with a comprehension while the
                # engine's executor threads add to it: "dictionary changed size
                # during iteration" failed a write under load. Its keys are taken in
                # one step (a tuple of a dict's keys is made without a thread switch).
                cache = self._collection_features_cache
                prefix = (db_name, coll_name)
                for key in [key for key in tuple(cache) if key[:2] == prefix]:
                    cache.pop(key, None)
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
            self._written.namespace = (db_name, coll_name)
            try:
                return super()._validate_document_against_unique_indexes(
                    db_name, coll_name, document, **options
                )
            finally:
                self._written.namespace = None

        def _unique_index_conflict_via_scalar_entries(  # type: ignore[no-untyped-def]
            self, conn, collection_id, index, document, **options
        ):
            if (
                index.get("name") == "_id_"
                and "_id" in document
                and not id_contains_numeric_value(document["_id"])
            ):
                return False  # the primary key check before it decided
            found = super()._unique_index_conflict_via_scalar_entries(
                conn, collection_id, index, document, **options
            )
            if found is not None:
                return found
            return self._unique_conflict_via_documents_index(
                conn, index, document, options.get("exclude_storage_key")
            )

        def _unique_conflict_via_documents_index(
            self, conn: Any, index: Any, document: Any, exclude_storage_key: str | None
        ) -> bool | None:
            """The stock engine's last resort (decode every document, compare the
            index keys), run only on the documents SQLite's index for `index` finds
            with the written document's string at the leading field. None: not
            applicable, the stock scan follows."""
            namespace = getattr(self._written, "namespace", None)
            fields = index.get("fields") or []
            if (
                namespace is None
                or not index.get("physical_name")
                or index.get("collation") is not None
                or not is_ordered_index_spec(index["key"])
                or not fields
                or "." in fields[0]
                or type(document.get(fields[0])) is not str
            ):
                return None
            db_name, coll_name = namespace
            conditions, params = [], [db_name, coll_name]
            for field in fields:  # the index's leading fields that hold strings
                if "." in field or type(document.get(field)) is not str:
                    break
                condition, strings = in_index_terms(field, [document[field]])
                conditions.append(condition)
                params += strings
            sql = (
                "SELECT storage_key, document FROM documents "
                f"WHERE db_name = ? AND coll_name = ? AND {' AND '.join(conditions)}"
            )
            if exclude_storage_key is not None:
                sql += " AND storage_key != ?"
                params.append(exclude_storage_key)
            key = tuple(self._index_value(document, field) for field in fields)
            for _storage_key, payload in conn.execute(sql, params):
                existing = self._deserialize_document(payload)
                if not document_in_virtual_index(existing, index):
                    continue
                if tuple(self._index_value(existing, field) for field in fields) == key:
                    raise self._unique_key_error(
                        f"Duplicate key for unique index '{index['name']}': {fields}={key!r}",
                        f"{db_name}.{coll_name}",
                        document,
                        index=index,
                        conflict=key,
                    )
            return False

        def _dispatch_committed_changes_serial(  # type: ignore[no-untyped-def]
            self, consumer_id, consumer, *, generation, heartbeat
        ):
            # The stock loop, with the consumer's checkpoint committed once per batch
            # read (up to 1,000 changes) instead of once per change: an insert of
            # 5,000 documents was 5,000 commits after its own. Delivery stays at
            # least once: after a crash the batch is delivered again, and the
            # change hub skips the sequences it has seen.
            with self._change_delivery_storage() as conn:
                checkpoint = outbox.consumer_checkpoint(conn, consumer_id)
                through_sequence = outbox.outbox_info(conn)["newestSequence"]
            while checkpoint < through_sequence:
                with self._change_delivery_storage() as conn:
                    checkpoint = outbox.consumer_checkpoint(conn, consumer_id)
                    changes = outbox.read_committed_changes(
                        conn,
                        after_sequence=checkpoint,
                        through_sequence=through_sequence,
                        deserialize_document=self._deserialize_document,
                    )
                if not changes:
                    break
                for change in changes:
                    heartbeat.raise_if_failed()
                    consumer(change.for_delivery())
                heartbeat.raise_if_failed()
                last = changes[-1].sequence
                with self._change_delivery_storage() as conn:
                    outbox.checkpoint_consumer(
                        conn,
                        consumer_id,
                        last,
                        lease_owner=self._change_dispatch_owner,
                        lease_generation=generation,
                    )
                    conn.commit()
                with self._lock:
                    self._change_outbox_checkpoints[consumer_id] = last
                    checkpoint = last
            heartbeat.raise_if_failed()
            with self._change_delivery_storage() as conn:
                outbox.compact_change_outbox(conn, max_entries=self._change_outbox_max_entries)
                conn.commit()

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

        def _open_scan_documents_sync(self, reader):  # type: ignore[no-untyped-def]
            # A read the engine evaluates in Python (a Decimal128 range, an array
            # comparison...) loads the collection through _load_documents: let that
            # load know the read's filter, so it can be narrowed.
            semantics = reader.semantics
            if semantics.collation is None:  # a collation changes what equals a string
                self._written.scan = (reader.db_name, reader.coll_name, semantics.query_plan)
            try:
                return super()._open_scan_documents_sync(reader)
            finally:
                self._written.scan = None

        def _load_documents(self, db_name: str, coll_name: str) -> Any:
            scan = getattr(self._written, "scan", None)
            self._written.scan = None
            if scan is None or scan[:2] != (db_name, coll_name):
                return super()._load_documents(db_name, coll_name)
            narrowing, params = self._narrowed(db_name, coll_name, scan[2], "1 = 1", [])
            if not params:
                return super()._load_documents(db_name, coll_name)
            # The rows the filter's equalities allow; the engine then evaluates the
            # whole filter in Python on them, as it would have on every row. Lazy,
            # like the stock generator: the reader binds the connection per fetch.
            return self._load_narrowed(db_name, coll_name, narrowing, params)

        def _load_narrowed(
            self, db_name: str, coll_name: str, narrowing: str, params: list[Any]
        ) -> Any:
            cursor = self._require_connection().execute(
                "SELECT storage_key, document FROM documents "
                f"WHERE db_name = ? AND coll_name = ? AND {narrowing}",
                (db_name, coll_name, *params),
            )
            try:
                for storage_key, payload in cursor:
                    yield storage_key, self._deserialize_document(payload)
            finally:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    cursor.close()  # the connection may be closed already

        def _translate_query_plan_with_multikey(  # type: ignore[no-untyped-def]
            self, db_name, coll_name, plan
        ):
            translate = super()._translate_query_plan_with_multikey
            if getattr(self._written, "plain", False):  # a clause of an OR narrowing
                return translate(db_name, coll_name, plan)
            if isinstance(plan, (AndCondition, OrCondition)):
                narrowing = self._or_narrowing(db_name, coll_name, plan)
                if narrowing is None:
                    # an AND's clauses come through here one by one
                    return translate(db_name, coll_name, plan)
                self._written.plain = True  # no clause narrowed on its own: see below
                try:
                    sql, params = translate(db_name, coll_name, plan)
                finally:
                    self._written.plain = False
                return f"({sql}) AND {narrowing[0]}", [*params, *narrowing[1]]
            sql, params = translate(db_name, coll_name, plan)
            if not isinstance(plan, (EqualsCondition, InCondition)):
                return sql, params
            return self._narrowed(db_name, coll_name, plan, sql, params)

        def _or_narrowing(
            self, db_name: str, coll_name: str, plan: Any
        ) -> tuple[str, list[Any]] | None:
            """For an `$or` (alone, or in an AND with other conditions) each of whose
            branches states a string of an indexed field (equal, `$in`, a range) or
            a null: the documents that can match, as the union of one index read per
            branch, `documents.storage_key IN (SELECT ... UNION ALL ...)`, each read
            with the AND's own string conditions. SQLite then reads each branch's
            rows through an index (the tick matcher: the orders a tick crosses);
            with the AND's equalities stated on their own instead, it would read
            every row they allow and test the `$or` on each. Implied by the plan, so
            only the rows read change. None: some branch states nothing indexable."""
            clauses = plan.clauses if isinstance(plan, AndCondition) else (plan,)
            ors = [clause for clause in clauses if isinstance(clause, OrCondition)]
            if len(ors) != 1:
                return None
            shared: list[tuple[str, list[Any]]] = []
            for clause in clauses:
                if not isinstance(clause, OrCondition):
                    common = self._index_terms(db_name, coll_name, clause)
                    if common is not None:
                        shared.append(common)
            reads: list[str] = []
            params: list[Any] = []
            for branch in ors[0].clauses:
                conditions = branch.clauses if isinstance(branch, AndCondition) else (branch,)
                stated = [self._index_terms(db_name, coll_name, c) for c in conditions]
                own = [t for t in stated if t is not None]
                if not own:
                    return None
                terms = shared + own
                reads.append(
                    "SELECT storage_key FROM documents WHERE db_name = ? AND coll_name = ? "
                    + "".join(f"AND {sql} " for sql, _ in terms)
                )
                params += [db_name, coll_name, *(v for _, values in terms for v in values)]
            return f"documents.storage_key IN ({' UNION ALL '.join(reads)})", params

        def _index_terms(
            self, db_name: str, coll_name: str, clause: Any
        ) -> tuple[str, list[Any]] | None:
            """`clause` in the expressions of the indexes that hold its field, when it
            is a string equality, `$in` of strings, a range with a string bound or an
            equality with null on a top-level indexed field (no array, no undefined
            there); else None. What it states is implied by the clause: a string is
            compared as SQLite compares text (code point order, as Python does), and
            only plain strings are of the string type here; a null or missing field
            has no type tag and no value."""
            field = getattr(clause, "field", None)
            if (
                not isinstance(field, str)
                or "." in field
                or field == "_id"
                or not self._indexes(db_name, coll_name, field, -1)
            ):
                return None
            kind, value = type_expression_sql(field), value_expression_sql(field)
            if isinstance(clause, EqualsCondition) and clause.value is None:
                if self._field_contains_tagged_undefined_in_collection(db_name, coll_name, field):
                    return None
                found: tuple[str, list[Any]] = (f"{kind} = '' AND {value} IS NULL", [])
            elif isinstance(clause, (EqualsCondition, InCondition)):
                values = (
                    [clause.value] if isinstance(clause, EqualsCondition) else list(clause.values)
                )
                strings = [v for v in values if type(v) is str]
                if not strings or len(strings) != len(values):
                    return None
                found = in_index_terms(field, strings)
            elif type(clause) in ranges and type(clause.value) is str:
                found = (f"{kind} = '' AND {value} {ranges[type(clause)]} ?", [clause.value])
            else:
                return None
            if self._field_is_top_level_array_in_collection(db_name, coll_name, field):
                return None
            return found

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
            a top-level field that leads an index, and each `$in` of strings of a
            top-level indexed field (the plan, or a clause of the AND it is), the same
            condition in the index's expressions."""
            narrowing = self._or_narrowing(db_name, coll_name, plan)
            if narrowing is not None:
                return f"({sql}) AND {narrowing[0]}", [*params, *narrowing[1]]
            clauses = plan.clauses if isinstance(plan, AndCondition) else (plan,)
            extra: list[str] = []
            values: list[Any] = []
            for clause in clauses:
                if isinstance(clause, EqualsCondition) and type(clause.value) is str:
                    strings, position = [clause.value], 0
                elif (
                    isinstance(clause, InCondition)
                    and clause.values
                    and all(type(v) is str for v in clause.values)
                ):
                    strings, position = [str(v) for v in clause.values], -1
                else:
                    continue
                if (
                    "." not in clause.field
                    and clause.field != "_id"
                    and self._indexes(db_name, coll_name, clause.field, position)
                    and not self._field_is_top_level_array_in_collection(
                        db_name, coll_name, clause.field
                    )
                ):
                    condition, strings = in_index_terms(clause.field, strings)
                    extra.append(condition)
                    values += strings
            if not extra:
                return sql, params
            return " AND ".join([f"({sql})", *extra]), [*params, *values]

        def _indexes(self, db_name: str, coll_name: str, field: str, position: int) -> bool:
            """Whether an index SQLite can use holds `field` first (position 0) or
            anywhere (-1)."""
            return any(
                index.get("physical_name")
                and not index.get("hidden")
                and index.get("collation") is None
                and field in (index.get("fields") or [])
                and (position < 0 or index["fields"][0] == field)
                for index in self._load_indexes(db_name, coll_name)
            )

    return FlatSQLiteEngine


_BATCH_INSERT_LOCK = threading.Lock()


def _install_batch_insert() -> None:
    """The wire server's `insert` command, for a corrected engine and several
    documents: the collection's batch insert (one SQLite transaction) instead of one
    insert_one each. Other engines keep the stock command."""
    from mongoeco.api._async import _database_admin_write_commands as commands

    service = commands.DatabaseAdminWriteCommandService
    with _BATCH_INSERT_LOCK:
        if getattr(service.command_insert, "_cryptovault_batch", False):
            return
        stock = service.command_insert

        async def command_insert(self: Any, spec: dict[str, object], *, session: Any = None) -> Any:
            documents = spec.get("documents")
            if (
                not isinstance(self._admin._engine, _engine_class())
                or not isinstance(documents, list)
                or len(documents) < 2
            ):
                return await stock(self, spec, session=session)
            return await _batch_insert(self, spec, session=session)

        command_insert._cryptovault_batch = True  # type: ignore[attr-defined]
        command_insert.__wrapped__ = stock  # type: ignore[attr-defined]  # its source stays hashed
        service.command_insert = command_insert  # type: ignore[method-assign]


_ENTRY_KEYS = ("index", "code", "errmsg", "op")


async def _batch_insert(service: Any, spec: dict[str, object], *, session: Any) -> Any:
    """The stock `command_insert` with its loop of insert_one replaced by one
    insert_many (same validation of the command, same reply)."""
    from mongoeco.api._async import _database_admin_write_commands as commands
    from mongoeco.errors import BulkWriteError
    from mongoeco.types import WriteCommandResult, WriteErrorEntry

    admin = service._admin
    collection_name = admin._require_collection_name(spec.get("insert"), "insert")
    documents = admin._normalize_insert_documents(spec.get("documents"))
    ordered = admin._normalize_ordered_from_command(spec.get("ordered"))
    bypass = commands.command_boolean(
        spec.get("bypassDocumentValidation", False), "bypassDocumentValidation", numeric=True
    )
    acknowledged = commands.write_command_acknowledged(spec, dialect=admin._mongodb_dialect.key)
    collection = admin._database.get_collection(collection_name)
    try:
        await collection.insert_many(
            documents, ordered=ordered, bypass_document_validation=bypass, session=session
        )
    except BulkWriteError as exc:
        details: dict[str, Any] = getattr(exc, "details", None) or {}
        errors = [
            WriteErrorEntry(
                index=error["index"],
                code=error.get("code"),
                errmsg=error.get("errmsg", ""),
                details={k: v for k, v in error.items() if k not in _ENTRY_KEYS} or None,
            )
            for error in details.get("writeErrors", [])
        ]
        result = WriteCommandResult(count=int(details.get("nInserted", 0)), write_errors=errors)
    else:
        result = WriteCommandResult(count=len(documents))
    return commands._write_command_result(result, acknowledged=acknowledged)


def _record() -> None:
    """Print RECORDED_SOURCES for the installed mongoeco (after adapting the layer)."""
    for name, digest in source_hashes().items():
        print(f'    "{name}": "{digest}",')


if __name__ == "__main__":
    _record()
