"""Shape limits (depth, aliases, tokens, directives, root fields, batches, body size),
the introspection policy and suggestions in production."""

from __future__ import annotations

import pytest
from graphql import get_introspection_query

from tests.auth import bearer
from tests.harness import codes, gql, http, running

CANDLES = '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 2) { edges { node { open } } } }'


@pytest.fixture(scope="module")
async def limited(store_server):
    overrides = dict(
        max_query_depth=3,
        max_aliases=2,
        max_tokens=200,
        max_directives_per_field=1,
        max_root_fields=3,
        max_batch_operations=2,
        max_body_bytes=2048,
    )
    async with running(store_server.url, **overrides) as (app, _):
        yield app


@pytest.fixture
async def client(limited):
    async with http(limited) as c:
        yield c


def refused(body: dict, limit: str) -> dict:
    assert codes(body) == ["QUERY_TOO_COMPLEX"], body
    extensions = body["errors"][0]["extensions"]
    assert extensions["limit"] == limit
    return extensions


async def test_depth_limit(client):
    assert codes((await gql(client, "{ assets { price { price } } }")).json()) == []
    body = (await gql(client, CANDLES)).json()
    assert refused(body, "depth") == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "depth",
        "actual": 4,
        "maximum": 3,
    }


async def test_depth_counts_fields_inside_fragments(client):
    query = """{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 2) { ...C } }
    fragment C on CandleConnection { edges { node { open } } }"""
    refused((await gql(client, query)).json(), "depth")


async def test_alias_limit(client):
    assert codes((await gql(client, "{ a: assets { symbol } b: assets { symbol } }")).json()) == []
    body = (await gql(client, "{ a: assets { s: symbol } b: assets { symbol } }")).json()
    assert refused(body, "aliases")["actual"] == 3


async def test_token_limit(client):
    query = "{ " + " ".join(f"a{i}: rateLimit {{ limit }}" for i in range(60)) + " }"
    body = (await gql(client, query)).json()
    assert codes(body) == ["QUERY_TOO_COMPLEX"]
    assert body["errors"][0]["extensions"]["limit"] == "tokens"
    assert "200 tokens" in body["errors"][0]["message"]
    comments = "{ rateLimit { limit } }\n" + "#\n" * 300
    assert codes((await gql(client, comments)).json()) == ["QUERY_TOO_COMPLEX"]


async def test_directives_per_field_limit(client):
    ok = "{ assets @include(if: true) { symbol } }"
    assert codes((await gql(client, ok)).json()) == []
    body = (await gql(client, "{ assets @include(if: true) @skip(if: false) { symbol } }")).json()
    assert refused(body, "directives")["maximum"] == 1


async def test_root_field_limit(client):
    three = "{ assets { symbol } rateLimit { limit } prices { price } }"
    assert codes((await gql(client, three)).json()) == []
    four = (
        '{ assets { symbol } rateLimit { limit } prices { price } asset(symbol: "BTC") { name } }'
    )
    assert refused((await gql(client, four)).json(), "rootFields")["actual"] == 4


async def test_batches_are_limited(client):
    op = {"query": "{ rateLimit { limit } }"}
    response = await client.post("/graphql", json=[op, op])
    assert response.status_code == 200
    assert [b["data"]["rateLimit"]["limit"] for b in response.json()] == [10_000_000] * 2
    response = await client.post("/graphql", json=[op, op, op])
    assert response.status_code == 400
    assert codes(response.json()) == ["BAD_USER_INPUT"]
    response = await client.post("/graphql", json=[op, 42])
    assert response.status_code == 400


async def test_batches_are_refused_when_disabled(store_server):
    async with running(store_server.url, max_batch_operations=0) as (app, _), http(app) as c:
        response = await c.post("/graphql", json=[{"query": "{ rateLimit { limit } }"}])
        assert response.status_code == 400
        assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_body_size_limit(client):
    big = {"query": "{ rateLimit { limit } }", "variables": {"pad": "x" * 3000}}
    response = await client.post("/graphql", json=big)
    assert response.status_code == 413
    assert codes(response.json()) == ["BAD_USER_INPUT"]

    async def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"query": "{ rateLimit { limit } }", "variables": {"pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    response = await client.post(
        "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


INTROSPECTION = "{ __schema { queryType { name } } }"


async def test_introspection_is_off_in_production_for_anonymous_callers(store_server):
    async with running(store_server.url, environment="production") as (app, _), http(app) as c:
        body = (await gql(c, INTROSPECTION)).json()
        assert codes(body) == ["FORBIDDEN"]
        assert "schema:read" in body["errors"][0]["message"]
        type_query = '{ rateLimit { limit } __type(name: "Query") { name } }'
        assert codes((await gql(c, type_query)).json()) == ["FORBIDDEN"]
        # Hidden in a fragment, behind an alias: still introspection.
        sneaky = "{ ...F } fragment F on Query { s: __schema { types { name } } }"
        assert codes((await gql(c, sneaky)).json()) == ["FORBIDDEN"]
        # __typename is not introspection.
        assert codes((await gql(c, "{ __typename rateLimit { limit } }")).json()) == []

        # A user session, or an API key with the schema:read scope, may explore.
        for headers in (bearer("u1"), bearer("u2", "schema:read")):
            body = (await gql(c, INTROSPECTION, headers=headers)).json()
            assert body["data"]["__schema"]["queryType"]["name"] == "Query"
        body = (await gql(c, INTROSPECTION, headers=bearer("u3", "market:read"))).json()
        assert codes(body) == ["FORBIDDEN"]


async def test_introspection_is_bounded_by_its_own_rule_not_by_the_depth_limit(client):
    # GraphiQL's introspection query is 15 levels deep; this app allows depth 3.
    body = (await gql(client, get_introspection_query(input_value_deprecation=True))).json()
    assert codes(body) == []
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_deep_introspection_is_refused(client):
    deep = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    body = (await gql(client, deep)).json()
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "introspection depth" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    ("environment", "suggests"), [("production", False), ("development", True)]
)
async def test_no_field_suggestions_in_production(store_server, environment, suggests):
    async with running(store_server.url, environment=environment) as (app, _), http(app) as c:
        body = (await gql(c, "{ assets { symbl } }")).json()
        assert codes(body) == ["BAD_USER_INPUT"]
        assert ("Did you mean" in body["errors"][0]["message"]) is suggests
        query = """query($i: CandleInterval!) {
          candles(symbol: "BTC", interval: $i) { pageInfo { hasNextPage } }
        }"""
        body = (await gql(c, query, {"i": "ONE_MINUTES"})).json()
        assert codes(body) == ["BAD_USER_INPUT"]
        assert ("Did you mean" in body["errors"][0]["message"]) is suggests
