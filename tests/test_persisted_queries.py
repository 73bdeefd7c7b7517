"""Automatic persisted queries (Apollo's protocol), bounded, registered only once
validated and paid for; trusted documents."""

from __future__ import annotations

import json
import uuid

import pytest

from cryptovault.config import ConfigError, load_settings
from cryptovault.protection.persisted import (
    MemoryQueryStore,
    RedisQueryStore,
    load_manifest,
    registration_cost,
    sha256_hex,
)
from tests.conftest import REDIS_URL
from tests.harness import codes, http, running

QUERY = "{ rateLimit { limit } }"
OTHER = "{ assets { symbol } }"


def pq(query: str) -> dict:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}


async def test_apq_registers_then_runs_by_hash_over_post_and_get(store_server):
    async with running(store_server.url) as (app, _), http(app) as client:
        miss = (await client.post("/graphql", json={"extensions": pq(QUERY)})).json()
        assert codes(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
        assert miss["errors"][0]["message"] == "PersistedQueryNotFound"

        registered = await client.post("/graphql", json={"query": QUERY, "extensions": pq(QUERY)})
        assert registered.json()["data"]["rateLimit"]["limit"] == 10_000_000

        by_hash = await client.post("/graphql", json={"extensions": pq(QUERY)})
        assert by_hash.json()["data"]["rateLimit"]["limit"] == 10_000_000

        params = {"extensions": json.dumps(pq(QUERY))}
        got = await client.get("/graphql", params=params, headers={"Accept": "*/*"})
        assert got.status_code == 200
        assert got.json()["data"]["rateLimit"]["limit"] == 10_000_000


async def test_apq_rejects_a_hash_that_does_not_match(store_server):
    async with running(store_server.url) as (app, _), http(app) as client:
        body = (
            await client.post("/graphql", json={"query": OTHER, "extensions": pq(QUERY)})
        ).json()
        assert codes(body) == ["BAD_USER_INPUT"]
        miss = (await client.post("/graphql", json={"extensions": pq(QUERY)})).json()
        assert codes(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
        for bad in ({"version": 2, "sha256Hash": "a" * 64}, {"version": 1, "sha256Hash": 5}, "x"):
            body = (
                await client.post("/graphql", json={"extensions": {"persistedQuery": bad}})
            ).json()
            assert codes(body) == ["BAD_USER_INPUT"]


async def test_the_apq_store_is_bounded(store_server):
    async with running(store_server.url, apq_cache_size=2) as (app, services), http(app) as c:
        queries = [QUERY, OTHER, "{ prices { symbol } }"]
        for query in queries:
            await c.post("/graphql", json={"query": query, "extensions": pq(query)})
        assert len(services.persisted_queries.store) == 2  # type: ignore[arg-type]
        first = (await c.post("/graphql", json={"extensions": pq(QUERY)})).json()
        assert codes(first) == ["PERSISTED_QUERY_NOT_FOUND"]
        last = (await c.post("/graphql", json={"extensions": pq(queries[2])})).json()
        assert codes(last) == []


@pytest.mark.redis
async def test_apq_in_redis_is_shared_by_every_instance(store_server):
    shared = {"redis_url": REDIS_URL, "mongodb_db": f"test_{uuid.uuid4().hex[:12]}"}
    async with (
        running(store_server.url, **shared) as (one, _),
        running(store_server.url, **shared) as (two, _),
        http(one) as a,
        http(two) as b,
    ):
        await a.post("/graphql", json={"query": QUERY, "extensions": pq(QUERY)})
        body = (await b.post("/graphql", json={"extensions": pq(QUERY)})).json()
        assert body["data"]["rateLimit"]["limit"] == 10_000_000


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({sha256_hex(QUERY): QUERY, "custom-id-1": OTHER}))
    return path


async def test_trusted_documents_only(store_server, manifest):
    overrides = {"persisted_queries": "only", "persisted_queries_manifest": manifest}
    async with running(store_server.url, **overrides) as (app, _), http(app) as client:
        by_hash = (await client.post("/graphql", json={"extensions": pq(QUERY)})).json()
        assert by_hash["data"]["rateLimit"]["limit"] == 10_000_000
        custom = {"persistedQuery": {"version": 1, "sha256Hash": "custom-id-1"}}
        by_id = (await client.post("/graphql", json={"extensions": custom})).json()
        assert len(by_id["data"]["assets"]) >= 10
        # The full text of a manifest document is accepted too.
        assert codes((await client.post("/graphql", json={"query": QUERY})).json()) == []

        other = "{ prices { symbol } }"
        for _ in range(2):  # the same body again is refused again (the lean path's memo)
            refused = (await client.post("/graphql", json={"query": other})).json()
            assert codes(refused) == ["FORBIDDEN"]
            assert codes((await client.post("/graphql", json={"query": QUERY})).json()) == []
        register = {"query": other, "extensions": pq(other)}
        assert codes((await client.post("/graphql", json=register)).json()) == ["FORBIDDEN"]
        unknown = (await client.post("/graphql", json={"extensions": pq(other)})).json()
        assert codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_manifests_are_validated(tmp_path):
    apollo = tmp_path / "apollo.json"
    apollo.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": "abc", "name": "Q", "type": "query", "body": QUERY}],
            }
        )
    )
    assert load_manifest(apollo) == {"abc": QUERY}
    broken = tmp_path / "broken.json"
    for content in ("{", "[1, 2]", '{"a": 1}'):
        broken.write_text(content)
        with pytest.raises(ConfigError, match="PERSISTED_QUERIES_MANIFEST"):
            load_manifest(broken)
    # A development config writes its generated secrets to DATA_DIR, even when it is
    # then refused: never the working tree's ./data.
    data_dir = {"DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="PERSISTED_QUERIES_MANIFEST"):
        load_settings({"PERSISTED_QUERIES": "only", **data_dir}, env_file=None)
    with pytest.raises(ConfigError, match="PERSISTED_QUERIES"):
        load_settings({"PERSISTED_QUERIES": "sometimes", **data_dir}, env_file=None)
    settings = load_settings(
        {"PERSISTED_QUERIES": "only", "PERSISTED_QUERIES_MANIFEST": str(apollo), **data_dir},
        env_file=None,
    )
    assert settings.persisted_queries == "only"


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ bad", "BAD_USER_INPUT"),  # does not parse
        ("{ nope }", "BAD_USER_INPUT"),  # does not validate
        (
            '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 500) { edges { node { open } } } }',
            "QUERY_TOO_COMPLEX",
        ),
    ],
)
async def test_only_documents_that_run_are_registered(store_server, document, code):
    async with running(store_server.url, max_query_cost=100) as (app, _), http(app) as client:
        body = (
            await client.post("/graphql", json={"query": document, "extensions": pq(document)})
        ).json()
        assert codes(body) == [code]
        by_hash = (await client.post("/graphql", json={"extensions": pq(document)})).json()
        assert codes(by_hash) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_registration_is_charged_and_refused_without_budget(store_server):
    document = "{ rateLimit { limit remaining } }" + " " * 250  # 283 bytes: 3 points
    # Slots of 100 bytes: a document of more than one pays for its bytes.
    limits = {"cost_budget_anonymous": 5, "max_query_cost": 5, "apq_cache_bytes": 1_000_000}
    async with running(store_server.url, **limits) as (app, _), http(app) as client:
        registered = await client.post(
            "/graphql", json={"query": document, "extensions": pq(document)}
        )
        body = registered.json()
        assert (
            body["extensions"]["cost"]["persistedQueryCost"]
            == registration_cost(document, 100)
            == 3
        )
        assert body["data"]["rateLimit"]["remaining"] == 5 - 3
        by_hash = (await client.post("/graphql", json={"extensions": pq(document)})).json()
        assert "persistedQueryCost" not in by_hash["extensions"]["cost"]  # once only

        # 2 points left: the next registration (3) is refused and nothing is kept.
        other = document.replace("limit remaining", "remaining limit")
        refused = await client.post("/graphql", json={"query": other, "extensions": pq(other)})
        assert refused.status_code == 429 and codes(refused.json()) == ["RATE_LIMITED"]
        missing = (await client.post("/graphql", json={"extensions": pq(other)})).json()
        assert codes(missing) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_flushing_the_store_with_small_documents_costs_what_filling_its_bytes_does(
    store_server,
):
    """Each registration pushes the least recently used document out once the store is
    full: flushing everyone's documents with tiny ones must not be cheaper than with
    big ones. A registration costs at least one slot's share of APQ_CACHE_BYTES."""
    limits = {"apq_cache_size": 10, "apq_cache_bytes": 10_000}  # slots of 1,000 bytes
    async with running(store_server.url, **limits) as (app, _), http(app) as client:
        spent = 0
        for n in range(10):
            tiny = f"query Q{n} {{ __typename }}"
            body = (
                await client.post("/graphql", json={"query": tiny, "extensions": pq(tiny)})
            ).json()
            assert codes(body) == []
            spent += body["extensions"]["cost"]["persistedQueryCost"]
        assert spent == 10_000 // 100  # the store's bytes at 1 point per 100 bytes
        big = "{ rateLimit { limit } }" + " " * 2_000  # more than a slot: its bytes
        body = (await client.post("/graphql", json={"query": big, "extensions": pq(big)})).json()
        assert body["extensions"]["cost"]["persistedQueryCost"] == 21


async def test_the_memory_store_is_bounded_by_entries_and_bytes():
    store = MemoryQueryStore(max_entries=3, max_bytes=100)
    for name in "abc":
        await store.set(name, name * 40)  # 40 bytes each: the third pushes "a" out
    assert len(store) == 2 and store.bytes == 80
    assert await store.get("a") is None and await store.get("b") == "b" * 40
    await store.set("d", "d" * 10)
    await store.set("e", "e" * 10)  # four entries: the least recently used ("c") goes
    assert [await store.get(k) is not None for k in "bcde"] == [True, False, True, True]
    await store.set("huge", "x" * 101)  # larger than the whole store: never kept
    assert await store.get("huge") is None and store.bytes == 60


@pytest.mark.redis
async def test_the_redis_store_is_bounded_by_entries_and_bytes():
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"test_{uuid.uuid4().hex[:12]}:apq:"
    store = RedisQueryStore(client, prefix, max_entries=3, max_bytes=100)
    try:
        for name in "abc":
            await store.set(name, name * 40)
        assert await store.get("a") is None and await store.get("b") == "b" * 40
        assert int(await client.get(f"{prefix}bytes")) == 80
        await store.set("d", "d" * 10)
        await store.set("e", "e" * 10)
        assert [await store.get(k) is not None for k in "bcde"] == [True, False, True, True]
        assert await client.hlen(f"{prefix}documents") == 3
        await store.set("huge", "x" * 101)
        assert await store.get("huge") is None
    finally:
        await client.delete(*store.keys)
        await client.aclose()
