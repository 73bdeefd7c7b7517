"""The store: MongoDB when MONGODB_URL is set, otherwise the embedded mongoeco engine
served over the MongoDB wire protocol. Either way the app talks to it through the real
pymongo async driver and Beanie: one code path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.documents import DOCUMENT_MODELS

log = logging.getLogger(__name__)

EMBEDDED_FILE = "cryptovault.sqlite3"


def flat_engine(path: str) -> Any:
    """mongoeco's SQLite engine over the file at `path`, with the corrections of
    `cryptovault.db.mongoeco_compat` when the installed mongoeco is the version they
    were written against (otherwise the stock engine, with a warning)."""
    from cryptovault.db.mongoeco_compat import engine

    return engine(path)


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

    async def close(self, timeout: float = 5.0) -> None:
        """Close the client within `timeout` seconds: pymongo's close sends
        endSessions (and killCursors) and waits for the answers with no time limit
        of its own, so a store that stopped answering would hold the caller (a
        worker's shutdown) forever. Past the deadline pymongo gives those up (as it
        ignores their errors) and still closes its pools and monitors."""
        with pymongo.timeout(timeout):
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
