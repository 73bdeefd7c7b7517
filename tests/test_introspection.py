"""Introspection is priced like any other selection (aliases included), except that a
plain introspection (what GraphiQL and code generators send) is answered from one
cached result per schema, at a small fixed cost, exactly as graphql-core would."""

from __future__ import annotations

import pytest
from graphql import get_introspection_query, get_operation_ast, graphql_sync, parse

from bench.introspection import probe
from cryptovault.extensions import introspection
from cryptovault.extensions.cost import CostAnalyzer, introspection_list_sizes
from cryptovault.extensions.introspection import CACHED_INTROSPECTION_COST
from cryptovault.schema import build_schema
from tests.auth import bearer
from tests.harness import codes, gql, http, running

SCHEMA = build_schema()._schema


def analyze(query: str):
    document = parse(query)
    return CostAnalyzer(SCHEMA, document, get_operation_ast(document), None).analyze()


def test_introspection_lists_are_sized_from_the_schema_and_aliases_count():
    sizes = introspection_list_sizes(SCHEMA)
    types = sizes[("__Schema", "types")]
    assert types == len(SCHEMA.type_map)
    assert analyze("{ __schema { types { name } } }").cost == 1 + types
    fields = sizes[("__Type", "fields")]
    assert fields == max(len(t.fields) for t in SCHEMA.type_map.values() if hasattr(t, "fields"))
    one = analyze("{ __schema { types { fields { args { name } type { ofType { name } } } } } }")
    args = sizes[("__Field", "args")]
    per_field = 1 + args + 1 + 1
    assert one.cost == 1 + types * (1 + fields * per_field)
    assert one.aliases == 0

    stats = analyze(probe(24))
    assert stats.aliases == 24 + 24 * 24
    assert stats.cost == 1 + 24 * types * (1 + 24 * fields * per_field)
    assert stats.introspection
    # The depth limit still leaves introspection to MaxIntrospectionDepthRule.
    assert stats.depth == 1


async def test_the_probe_is_refused_before_anything_runs(store_server):
    async with running(store_server.url) as (app, _), http(app) as client:
        body = (await gql(client, probe(24))).json()
        assert codes(body) == ["QUERY_TOO_COMPLEX"]
        assert body["errors"][0]["extensions"]["limit"] == "aliases"
        assert body.get("data") is None
    # Allowed every alias, it is still far over the maximum cost.
    async with (
        running(store_server.url, max_aliases=10_000) as (app, _),
        http(app) as client,
    ):
        body = (await gql(client, probe(24), headers=bearer("prober"))).json()
        assert codes(body) == ["QUERY_TOO_COMPLEX"]
        extensions = body["errors"][0]["extensions"]
        assert extensions["limit"] == "cost" and extensions["cost"] > 1_000_000


@pytest.mark.parametrize(
    "options",
    [
        {},  # graphql-core's (and GraphiQL's) defaults
        {"descriptions": False},
        {"input_value_deprecation": True, "specified_by_url": True},
        {"one_of": True, "directive_is_repeatable": True, "schema_description": True},
    ],
)
async def test_a_plain_introspection_is_answered_from_the_cache_exactly(store_server, options):
    query = get_introspection_query(**options)
    expected = graphql_sync(SCHEMA, query).data
    async with (
        running(store_server.url, max_query_depth=3, max_aliases=0) as (app, _),
        http(app) as client,
    ):
        for _ in range(2):
            body = (await gql(client, query)).json()
            assert codes(body) == []
            assert body["data"] == expected
            cost = body["extensions"]["cost"]
            assert cost["requestedQueryCost"] == CACHED_INTROSPECTION_COST
            assert cost["actualQueryCost"] == CACHED_INTROSPECTION_COST


async def test_plain_introspections_do_not_execute_the_schema(store_server, monkeypatch):
    """One full result per schema: once it exists, answers are projections of it."""
    async with running(store_server.url) as (app, _), http(app) as client:
        assert codes((await gql(client, "{ __schema { queryType { name } } }")).json()) == []

        def executed(*args, **kwargs):
            raise AssertionError("a plain introspection was executed")

        monkeypatch.setattr(introspection, "graphql_sync", executed)
        monkeypatch.setattr("strawberry.schema.schema.execute", executed)
        query = """query($deprecated: Boolean) { __typename __schema {
          types { kind name fields(includeDeprecated: $deprecated) { name } }
          directives { name locations } } }"""
        body = (await gql(client, query, {"deprecated": False})).json()
        assert codes(body) == []
        assert (
            body["data"] == graphql_sync(SCHEMA, query, variable_values={"deprecated": False}).data
        )


async def test_other_introspection_runs_and_is_charged_by_its_cost(store_server):
    query = '{ __type(name: "Query") { name fields { name type { kind ofType { name } } } } }'
    fields = introspection_list_sizes(SCHEMA)[("__Type", "fields")]
    async with running(store_server.url) as (app, _), http(app) as client:
        body = (await gql(client, query)).json()
        assert codes(body) == []
        assert body["data"] == graphql_sync(SCHEMA, query).data
        assert body["extensions"]["cost"]["requestedQueryCost"] == 1 + fields * (1 + 1 + 1)
        returned = len(body["data"]["__type"]["fields"])
        actual = 1 + sum(
            1 + 1 + (field["type"]["ofType"] is not None)
            for field in body["data"]["__type"]["fields"]
        )
        assert returned > 0 and body["extensions"]["cost"]["actualQueryCost"] == actual


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        # A required variable missing.
        ("query($d: Boolean!) { __schema { queryType @include(if: $d) { name } } }", {}),
        # A variable of the wrong type, used by a directive.
        ("query($d: Boolean!) { __schema { queryType @include(if: $d) { name } } }", {"d": "yes"}),
        # A variable of the wrong type, as an argument.
        (
            "query($d: Boolean) { __schema { queryType { fields(includeDeprecated: $d) { name } } } }",
            {"d": {"not": "a boolean"}},
        ),
        # null for a non-null variable.
        ("query($d: Boolean!) { __schema { queryType @skip(if: $d) { name } } }", {"d": None}),
    ],
)
async def test_a_plain_introspection_with_bad_variables_gets_the_uncached_errors(
    store_server, monkeypatch, query, variables
):
    """GraphQL coerces an operation's variables before executing it: the cached answer
    must not skip that, and its errors are the ones executing it would give."""
    async with running(store_server.url) as (app, _), http(app) as client:
        cached = (await gql(client, query, variables)).json()
        monkeypatch.setattr(introspection, "answer", lambda *args: None)
        executed = (await gql(client, query, variables)).json()
    assert codes(executed) == ["BAD_USER_INPUT"]
    assert cached.get("data") == executed.get("data") is None
    assert cached["errors"] == executed["errors"]
