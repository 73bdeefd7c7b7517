"""Persisted queries.

- Automatic persisted queries (Apollo's protocol): a client sends
  `extensions.persistedQuery {version: 1, sha256Hash}` without the query; an unknown
  hash answers PERSISTED_QUERY_NOT_FOUND, the client sends the query with the hash
  once, and later requests (GET too) carry only the hash. The store is bounded by
  entries and bytes (least recently used out first), in memory or in Redis.
  Registration is part of the operation: the document is kept only once it parsed,
  validated and its operation was charged (with the registration's own cost,
  `registration_cost`); a document that fails any of these is never stored. Once the
  store is full each registration pushes others' documents out, so a registration
  costs at least its slot (APQ_CACHE_BYTES / APQ_CACHE_SIZE): flushing the store with
  tiny documents costs what filling its bytes does.
- Trusted documents (`PERSISTED_QUERIES=only`): only the documents of a manifest file
  (a JSON object mapping hash -> document, or Apollo's persisted query manifest) run,
  whether sent by hash or in full.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from cryptovault.config import ConfigError, Settings
from cryptovault.errors import BadUserInput, Forbidden, PersistedQueryNotFound

# sha256 hex digests, or the ids of a manifest (some tools use other hashes).
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
REDIS_TTL_SECONDS = 7 * 24 * 3600
# Registering a document costs 1 point per this many bytes (at least 1), counting at
# least a slot's bytes.
REGISTRATION_BYTES_PER_POINT = 100


def sha256_hex(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def registration_cost(query: str, slot_bytes: float = 0) -> int:
    """Points for keeping `query`: its bytes, or a slot's (`slot_bytes`: the store's
    bytes per entry) if more, at REGISTRATION_BYTES_PER_POINT; at least 1."""
    size = max(len(query.encode()), slot_bytes)
    return max(1, math.ceil(size / REGISTRATION_BYTES_PER_POINT))


@dataclass(frozen=True, slots=True)
class Registration:
    """A document this request asked to persist, pending its validation and charge."""

    key: str
    query: str
    cost: int


# Set by `resolve` for the request (or WebSocket message) being handled; the
# operation's extensions read it once the document validated. Reset on every resolve.
_pending: ContextVar[Registration | None] = ContextVar("apq_pending", default=None)


class QueryStore(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, query: str) -> None: ...


class MemoryQueryStore:
    """Least recently used documents: at most `max_entries` of them, `max_bytes` of
    text in all."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, str] = OrderedDict()

    async def get(self, key: str) -> str | None:
        query = self._items.get(key)
        if query is not None:
            self._items.move_to_end(key)
        return query

    async def set(self, key: str, query: str) -> None:
        size = len(query.encode())
        if size > self.max_bytes:
            return
        previous = self._items.pop(key, None)
        if previous is not None:
            self.bytes -= len(previous.encode())
        self._items[key] = query
        self.bytes += size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= len(evicted.encode())

    def __len__(self) -> int:
        return len(self._items)


# KEYS: documents (hash), last use (sorted set, ms), bytes (counter).
# ARGV: key, document, now ms, time to live ms, max entries, max bytes.
# Last-use scores are kept strictly increasing (a burst within one millisecond moves
# them a little ahead of the clock), so "least recently used" is exact.
_REDIS_SET = """
local docs, index, total = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[3])
local newest = redis.call('ZREVRANGE', index, 0, 0, 'WITHSCORES')[2]
if newest and tonumber(newest) >= now then now = tonumber(newest) + 1 end
if redis.call('HSETNX', docs, ARGV[1], ARGV[2]) == 1 then
  redis.call('INCRBY', total, string.len(ARGV[2]))
end
redis.call('ZADD', index, now, ARGV[1])
local function drop(victim)
  local size = redis.call('HSTRLEN', docs, victim)
  redis.call('HDEL', docs, victim)
  redis.call('ZREM', index, victim)
  redis.call('DECRBY', total, size)
end
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - tonumber(ARGV[4]))) do
  drop(victim)
end
while redis.call('ZCARD', index) > tonumber(ARGV[5])
    or tonumber(redis.call('GET', total) or '0') > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest then break end
  drop(oldest)
end
return 1
"""
# KEYS: documents, last use. ARGV: key, now ms, time to live ms.
_REDIS_GET = """
local now = tonumber(ARGV[2])
local used = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not used or tonumber(used) <= now - tonumber(ARGV[3]) then
  return false
end
local newest = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]
if tonumber(newest) >= now then now = tonumber(newest) + 1 end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class RedisQueryStore:
    """Shared by every instance, with the same bounds as in memory; a document also
    goes a week after its last use. Each call is one atomic script."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, max_entries: int, max_bytes: int
    ) -> None:
        self.keys = [f"{prefix}documents", f"{prefix}used", f"{prefix}bytes"]
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._set = redis.register_script(_REDIS_SET)
        self._get = redis.register_script(_REDIS_GET)

    async def get(self, key: str) -> str | None:
        now = int(time.time() * 1000)
        raw = await self._get(keys=self.keys[:2], args=[key, now, REDIS_TTL_SECONDS * 1000])
        return raw.decode() if isinstance(raw, bytes) else raw

    async def set(self, key: str, query: str) -> None:
        if len(query.encode()) > self.max_bytes:
            return
        now = int(time.time() * 1000)
        await self._set(
            keys=self.keys,
            args=[key, query, now, REDIS_TTL_SECONDS * 1000, self.max_entries, self.max_bytes],
        )


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
        self,
        mode: str,
        store: QueryStore,
        manifest: Mapping[str, str] | None = None,
        slot_bytes: float = 0,
    ) -> None:
        self.mode = mode
        self.store = store
        # The store's bytes per entry: what a registration displaces at least.
        self.slot_bytes = slot_bytes
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
            RedisQueryStore(
                redis,
                f"{settings.mongodb_db}:apq:",
                settings.apq_cache_size,
                settings.apq_cache_bytes,
            )
            if redis is not None
            else MemoryQueryStore(settings.apq_cache_size, settings.apq_cache_bytes)
        )
        slot = settings.apq_cache_bytes / settings.apq_cache_size
        return cls(settings.persisted_queries, store, manifest, slot)

    async def resolve(self, query: str | None, extensions: object) -> str | None:
        """The document to run for a request's `query` and `extensions`; raises
        PersistedQueryNotFound, BadUserInput or (trusted mode) Forbidden. A document
        sent with its hash is only registered once its operation passed (`pending`)."""
        _pending.set(None)
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
            _pending.set(Registration(requested, query, registration_cost(query, self.slot_bytes)))
            return query
        found = self.manifest.get(requested)
        if found is None and self.mode == "apq":
            found = await self.store.get(requested)
        if found is None:
            # Apollo clients look for this exact message, then send the query.
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return found

    def pending(self, query: str | None) -> Registration | None:
        """The registration the current request asked for, if it is of `query`."""
        registration = _pending.get()
        if registration is None or registration.query != query:
            return None
        return registration

    async def register(self, registration: Registration) -> None:
        """Keep a document whose operation validated and was charged."""
        _pending.set(None)
        await self.store.set(registration.key, registration.query)


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
