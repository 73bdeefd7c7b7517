"""`cryptovault backup` and `cryptovault restore`: every collection of MONGODB_DB as
gzip-compressed Extended JSON lines, through pymongo, so the same file moves data
between the embedded store and MongoDB in either direction.

File format (version 1), one JSON value per line:
- line 1, the header: {"format": "cryptovault-backup", "version": 1, "created_at",
  "database", "app_version", "collections": {name: document count},
  "indexes": {name: [index specs]}};
- then one line per document: {"c": collection, "d": document}.
Everything is canonical Extended JSON, so Decimal128, dates, ObjectIds and int64
round-trip exactly. The header is its own gzip member, written once the counts are
known; gzip readers see one stream.

A backup taken while the app writes is not a point-in-time snapshot (use
`mongodump --oplog` on a replica set for that; see README): each collection is read
at its own moment. What it does keep: the header's counts are the documents written
to the file, and an order's audit entry the copier moves to audit_log during the
backup is in it (orders are read first: see `_collections`). A restore checks its
counts against the header, so it must not run while an app writes to the target."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from cryptovault import __version__
from cryptovault.db import init_models_and_indexes

log = logging.getLogger(__name__)

FORMAT = "cryptovault-backup"
VERSION = 1
JSON_OPTIONS = json_util.CANONICAL_JSON_OPTIONS.with_options(tz_aware=True)
INDEX_OPTIONS = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


class BackupError(Exception):
    """The backup cannot be written or restored; the message says why."""


@dataclass(frozen=True, slots=True)
class Summary:
    path: Path
    database: str
    counts: dict[str, int]

    @property
    def documents(self) -> int:
        return sum(self.counts.values())


def _dumps(value: Any) -> str:
    return json_util.dumps(value, json_options=JSON_OPTIONS)


def _skip(collection: str, doc: dict[str, Any]) -> bool:
    # A migration run's lock is state of that run, not data.
    return collection == "migrations" and doc.get("_id") == "lock"


# The order audit copier (trading/order_audit.py) stores an order's pending entries in
# audit_log, then clears them from the order. Read orders first: an entry copied during
# the backup is then still pending in the orders read, or already in audit_log when
# that is read (or both: a copy after the restore stores nothing twice), never in
# neither, as it could be with audit_log read first.
_READ_FIRST = ("orders",)


async def _collections(db: AsyncDatabase) -> list[str]:
    names = sorted(n for n in await db.list_collection_names() if not n.startswith("system."))
    return [n for n in _READ_FIRST if n in names] + [n for n in names if n not in _READ_FIRST]


async def _index_specs(db: AsyncDatabase, name: str) -> list[dict[str, Any]]:
    specs = []
    for index_name, info in (await db[name].index_information()).items():
        if index_name == "_id_":
            continue
        spec: dict[str, Any] = {"name": index_name, "key": [list(k) for k in info["key"]]}
        spec.update({o: info[o] for o in INDEX_OPTIONS if o in info})
        specs.append(spec)
    return specs


async def backup(db: AsyncDatabase, out: Path) -> Summary:
    """Write every collection of `db` to `out` (created 0600: it holds password
    hashes and personal data). The file appears only once complete."""
    out = Path(out)
    body_path = out.with_name(out.name + ".body.part")
    final_path = out.with_name(out.name + ".part")
    counts: dict[str, int] = {}
    indexes: dict[str, list[dict[str, Any]]] = {}
    try:
        with _private(body_path) as raw, gzip.open(raw, "wt", encoding="utf-8") as body:
            for name in await _collections(db):
                count = 0
                async for doc in db[name].find({}):
                    if _skip(name, doc):
                        continue
                    body.write(_dumps({"c": name, "d": doc}) + "\n")
                    count += 1
                counts[name] = count
                indexes[name] = await _index_specs(db, name)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "database": db.name,
            "app_version": __version__,
            "collections": counts,
            "indexes": indexes,
        }
        with _private(final_path) as final:
            final.write(gzip.compress((_dumps(header) + "\n").encode()))
            with body_path.open("rb") as body_in:
                shutil.copyfileobj(body_in, final)
        os.replace(final_path, out)
    finally:
        body_path.unlink(missing_ok=True)
        final_path.unlink(missing_ok=True)
    summary = Summary(out, db.name, counts)
    log.info(
        "backup written",
        extra={"path": str(out), "documents": summary.documents, "collections": len(counts)},
    )
    return summary


def _private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def read_header(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        try:
            header = json_util.loads(f.readline(), json_options=JSON_OPTIONS)
        except (OSError, ValueError, EOFError) as exc:
            raise BackupError(f"{path} is not a CryptoVault backup: {exc}") from None
    return _checked(header, path)


def _checked(header: Any, path: Path) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(f"{path} is not a CryptoVault backup")
    if header.get("version") != VERSION:
        raise BackupError(
            f"{path} is backup format version {header.get('version')}; this version reads {VERSION}"
        )
    return header


def _documents(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    number = 1
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            f.readline()
            for n, line in enumerate(f, start=2):
                number = n
                if not line.strip():
                    continue
                item = json_util.loads(line, json_options=JSON_OPTIONS)
                yield item["c"], item["d"]
    except (ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        # A cut-off file (gzip: EOFError) or a damaged line: the restore stops with
        # the place, and the final count check never passes on a partial load.
        raise BackupError(f"{path}, line {number}: {exc}") from None


def _batches(path: Path, size: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    collection = ""
    batch: list[dict[str, Any]] = []
    for name, doc in _documents(path):
        if batch and (name != collection or len(batch) >= size):
            yield collection, batch
            batch = []
        collection = name
        batch.append(doc)
    if batch:
        yield collection, batch


async def restore(
    db: AsyncDatabase, path: Path, *, drop: bool = False, batch_size: int = 500
) -> Summary:
    """Load a backup into `db`. Collections of the backup that already hold documents
    are refused unless `drop` (they are then dropped first). Documents are written
    as upserts by `_id` in batches (on the embedded store, cheaper than inserts into a
    growing collection, which it indexes as it goes), then the app's indexes and the backup's
    own are created and the counts checked against the header."""
    path = Path(path)
    header = read_header(path)
    expected: dict[str, int] = header["collections"]
    existing = set(await db.list_collection_names())
    occupied = [
        name
        for name in expected
        if name in existing and await db[name].count_documents({}, limit=1)
    ]
    if occupied and not drop:
        raise BackupError(
            f"{', '.join(occupied)} already hold documents in {db.name}: "
            "restore into an empty database, or pass --drop to replace them"
        )
    if drop:
        for name in expected:
            await db.drop_collection(name)
        existing = set(await db.list_collection_names())
    for name in expected:
        if name not in existing:
            await db.create_collection(name)
    for name, batch in _batches(path, batch_size):
        if name not in expected:
            raise BackupError(f"{path} has documents of {name}, which its header does not list")
        await db[name].bulk_write(
            [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in batch], ordered=False
        )
    counts = {name: await db[name].count_documents({}) for name in expected}
    if counts != expected:
        wrong = {n: (counts[n], expected[n]) for n in expected if counts[n] != expected[n]}
        more = sorted(n for n in wrong if counts[n] > expected[n])
        hint = (
            f"; {', '.join(more)} hold more documents than the backup: something writes "
            "to this database (stop the app while restoring)"
            if more
            else ""
        )
        raise BackupError(
            f"restored counts differ from the backup (restored, expected): {wrong}{hint}"
        )
    await init_models_and_indexes(db)
    for name, specs in (header.get("indexes") or {}).items():
        for spec in specs:
            options = {o: spec[o] for o in INDEX_OPTIONS if o in spec}
            try:
                await db[name].create_index(
                    [tuple(k) for k in spec["key"]], name=spec["name"], **options
                )
            except OperationFailure as exc:
                # E.g. the app now declares that index differently: the app wins.
                log.warning(
                    "index from the backup not created",
                    extra={"collection": name, "index": spec["name"], "reason": str(exc)},
                )
    summary = Summary(path, db.name, counts)
    log.info(
        "backup restored",
        extra={"path": str(path), "documents": summary.documents, "collections": len(counts)},
    )
    return summary
