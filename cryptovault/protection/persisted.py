"""Persisted queries.

- Automatic persisted queries (Apollo's protocol): a client sends
  `extensions.persistedQuery {version: 1, sha256Hash}` without the query; an unknown
  hash answers PERSISTED_QUERY_NOT_FOUND, the client sends the query with the hash
  once, and later requests (GET too) carry only the hash. The store is bounded: an
  LRU in memory, or Redis keys with a time to live.
- Trusted documents (`PERSISTED_QUERIES=only`): only the documents of a manifest file
  (a JSON object mapping hash -> document, or Apollo's persisted query manifest) run,
  whether sent by hash or in full.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from cryptovault.config import ConfigError, Settings
from cryptovault.errors import BadUserInput, Forbidden, PersistedQueryNotFound

# sha256 hex digests, or the ids of a manifest (some tools use other hashes).
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
REDIS_TTL_SECONDS = 7 * 24 * 3600


def sha256_hex(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class QueryStore(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, query: str) -> None: ...


class MemoryQueryStore:
    """Least recently used documents, at most `maxsize` of them."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, str] = OrderedDict()

    async def get(self, key: str) -> str | None:
        query = self._items.get(key)
        if query is not None:
            self._items.move_to_end(key)
        return query

    async def set(self, key: str, query: str) -> None:
        self._items[key] = query
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RedisQueryStore:
    """Shared by every instance; each document expires a week after its last use."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def get(self, key: str) -> str | None:
        raw = await self.redis.getex(self.prefix + key, ex=REDIS_TTL_SECONDS)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def set(self, key: str, query: str) -> None:
        await self.redis.set(self.prefix + key, query, ex=REDIS_TTL_SECONDS)


def load_manifest(path: Path) -> dict[str, str]:
    """Read a manifest: `{"<sha256>": "<document>", ...}` or Apollo's
    `{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body"}]}`."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"PERSISTED_QUERIES_MANIFEST is invalid: {exc}") from None
    if isinstance(raw, dict) and raw.get("format") == "apollo-persisted-query-manifest":
        operations = raw.get("operations")
        if not isinstance(operations, list):
            raise ConfigError("PERSISTED_QUERIES_MANIFEST is invalid: no operations list")
        raw = {op.get("id"): op.get("body") for op in operations if isinstance(op, dict)}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(
            "PERSISTED_QUERIES_MANIFEST is invalid: expected a JSON object of id -> document"
        )
    return dict(raw)


class PersistedQueries:
    def __init__(
        self, mode: str, store: QueryStore, manifest: Mapping[str, str] | None = None
    ) -> None:
        self.mode = mode
        self.store = store
        self.manifest = dict(manifest or {})
        # In trusted mode a full document is accepted when it is one of the manifest's.
        self._trusted_hashes = {sha256_hex(q) for q in self.manifest.values()}

    @classmethod
    def from_settings(cls, settings: Settings, redis: aioredis.Redis | None) -> PersistedQueries:
        manifest = (
            load_manifest(settings.persisted_queries_manifest)
            if settings.persisted_queries_manifest
            else None
        )
        store: QueryStore = (
            RedisQueryStore(redis, f"{settings.mongodb_db}:apq:")
            if redis is not None
            else MemoryQueryStore(settings.apq_cache_size)
        )
        return cls(settings.persisted_queries, store, manifest)

    async def resolve(self, query: str | None, extensions: object) -> str | None:
        """The document to run for a request's `query` and `extensions`; raises
        PersistedQueryNotFound, BadUserInput or (trusted mode) Forbidden."""
        requested = _persisted_hash(extensions)
        if self.mode == "off":
            if requested is not None and not query:
                raise BadUserInput("Persisted queries are not enabled on this server")
            return query
        if requested is None:
            if (
                self.mode == "only"
                and query is not None
                and sha256_hex(query) not in self._trusted_hashes
            ):
                raise Forbidden(
                    "Only trusted documents are accepted: send a document of the "
                    "manifest (or its hash in extensions.persistedQuery)"
                )
            return query
        if query:
            if self.mode == "only":
                if self.manifest.get(requested) != query and (
                    sha256_hex(query) not in self._trusted_hashes
                ):
                    raise Forbidden("Only trusted documents are accepted")
                return query
            if sha256_hex(query) != requested:
                raise BadUserInput("The provided sha256Hash does not match the query")
            await self.store.set(requested, query)
            return query
        found = self.manifest.get(requested)
        if found is None and self.mode == "apq":
            found = await self.store.get(requested)
        if found is None:
            # Apollo clients look for this exact message, then send the query.
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return found


def _persisted_hash(extensions: object) -> str | None:
    if not isinstance(extensions, Mapping) or "persistedQuery" not in extensions:
        return None
    pq = extensions["persistedQuery"]
    if not isinstance(pq, Mapping) or pq.get("version") != 1:
        raise BadUserInput("extensions.persistedQuery must be {version: 1, sha256Hash}")
    value = pq.get("sha256Hash")
    if not isinstance(value, str) or not _DOCUMENT_ID.match(value):
        raise BadUserInput("extensions.persistedQuery.sha256Hash must be a sha256 hex digest")
    return value
