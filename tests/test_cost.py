"""Static query cost: the rules partners plan with, computed before any resolver runs."""

from __future__ import annotations

import strawberry
from graphql import get_operation_ast, parse

from cryptovault.extensions.cost import (
    DEFAULT_LIST_SIZE,
    MUTATION_BASE_COST,
    SUBSCRIPTION_BASE_COST,
    CostAnalyzer,
    cost,
)
from cryptovault.market.assets import ASSETS
from cryptovault.schema.pagination import Connection
from tests.harness import codes, gql, http, running


@strawberry.type
class Item:
    name: str

    @strawberry.field(metadata=cost(5))
    def expensive(self) -> str:
        return "x"

    @strawberry.field
    def children(self) -> list[Item]:
        return []


@strawberry.type
class Q:
    @strawberry.field
    def item(self) -> Item:
        return Item(name="a")

    @strawberry.field
    def items(self) -> list[Item]:
        return []

    @strawberry.field(metadata=cost(list_size=3))
    def few(self) -> list[Item]:
        return []

    @strawberry.field(metadata=cost(max_page=50))
    def page(self, first: int | None = None, last: int | None = None) -> Connection[Item]:
        raise NotImplementedError

    @strawberry.field
    def names(self) -> list[str]:
        return []


@strawberry.type
class M:
    @strawberry.mutation
    def rename(self, name: str) -> Item:
        return Item(name=name)

    @strawberry.mutation(metadata=cost(1))
    def cheap(self) -> bool:
        return True


@strawberry.type
class S:
    @strawberry.subscription
    async def ticks(self) -> Item:  # pragma: no cover - never run
        yield Item(name="a")


SCHEMA = strawberry.Schema(query=Q, mutation=M, subscription=S)._schema


def analyze(query: str, variables: dict | None = None):
    document = parse(query)
    analyzer = CostAnalyzer(SCHEMA, document, get_operation_ast(document), variables)
    return analyzer.analyze()


def test_objects_cost_one_and_scalars_nothing():
    assert analyze("{ names }").cost == 0
    assert analyze("{ item { name } }").cost == 1
    assert analyze("{ item { name expensive } }").cost == 6  # a declared override
    assert analyze("{ __typename item { __typename } }").cost == 1


def test_lists_multiply_by_their_size():
    assert analyze("{ items { name } }").cost == DEFAULT_LIST_SIZE
    assert analyze("{ few { name } }").cost == 3
    assert analyze("{ few { children { name } } }").cost == 3 * (1 + DEFAULT_LIST_SIZE)


def test_connections_cost_their_page():
    # connection 1 + edges free + one node per item + pageInfo 1
    query = """query($n: Int) {
      page(first: $n) { edges { cursor node { name } } pageInfo { hasNextPage } }
    }"""
    assert analyze(query, {"n": 10}).cost == 1 + 10 + 1
    assert analyze(query, {}).cost == 1 + 50 + 1  # absent: the declared maximum
    assert analyze(query, {"n": 10_000}).cost == 1 + 50 + 1  # the resolver refuses more
    assert analyze("{ page(last: 7) { edges { node { name } } } }").cost == 1 + 7
    assert analyze("query($n: Int = 4) { page(first: $n) { edges { node { name } } } }").cost == 5


def test_mutations_and_subscriptions_have_a_base_cost():
    assert analyze('mutation { rename(name: "b") { name } }').cost == MUTATION_BASE_COST + 1
    assert analyze("mutation { cheap }").cost == 1
    assert analyze("subscription { ticks { name } }").cost == SUBSCRIPTION_BASE_COST + 1


def test_fragments_aliases_and_skip_are_expanded():
    query = """
    query($skip: Boolean!) {
      a: few { ...F }
      b: few { ...F }
      c: item @skip(if: $skip) { name }
      d: item @include(if: false) { name }
    }
    fragment F on Item { expensive children { name } }
    """
    stats = analyze(query, {"skip": True})
    assert stats.cost == 2 * 3 * (1 + 5 + DEFAULT_LIST_SIZE)
    assert stats.aliases == 2  # skipped fields are not counted
    assert stats.root_fields == 2
    included = analyze(query, {"skip": False})
    assert included.cost == stats.cost + 1
    assert (included.aliases, included.root_fields, included.directives) == (3, 3, 1)


def test_shape_is_measured():
    stats = analyze(
        "{ item { children { children { name @include(if: true) @skip(if: false) } } } }"
    )
    assert stats.depth == 4
    assert stats.directives == 2
    assert not stats.introspection
    assert analyze("{ __schema { types { name } } }").introspection
    assert analyze('{ item { name } __type(name: "Item") { name } }').introspection


def test_fragment_bombs_are_walked_once_per_fragment():
    # 2^30 leaves once expanded: the walk is memoized per fragment.
    fragments = "\n".join(
        f"fragment F{i} on Item {{ a: children {{ ...F{i + 1} }} b: children {{ ...F{i + 1} }} }}"
        for i in range(30)
    )
    query = "{ item { ...F0 } }\n" + fragments + "\nfragment F30 on Item { name }"
    stats = analyze(query)
    assert stats.cost > 10**60
    assert stats.aliases > 2**30


async def test_responses_report_requested_and_actual_cost(store_server, services):
    async with running(store_server.url) as (app, _), http(app) as client:
        body = (await gql(client, "{ assets { symbol price { price } } }")).json()
        reported = body["extensions"]["cost"]
        # Every asset is an object; their prices are null until the first tick.
        assert reported["requestedQueryCost"] == 2 * len(ASSETS)
        assert reported["actualQueryCost"] == len(ASSETS)
        throttle = reported["throttleStatus"]
        assert throttle["maximumAvailable"] == 10_000_000
        assert throttle["currentlyAvailable"] == 10_000_000 - 2 * len(ASSETS)
        assert throttle["restoreRate"] == round(10_000_000 / 60, 2)

        body = (
            await gql(
                client,
                '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 50) '
                "{ edges { node { open } } pageInfo { hasNextPage } } }",
            )
        ).json()
        assert body["extensions"]["cost"]["requestedQueryCost"] == 52
        assert body["extensions"]["cost"]["actualQueryCost"] == 2  # no candles yet


async def test_operations_over_the_maximum_are_refused_before_any_resolver(
    store_server, monkeypatch
):
    async with running(store_server.url, max_query_cost=600) as (app, services), http(app) as c:
        calls = []

        async def candle_page(*args):
            calls.append(args)
            return [], False

        monkeypatch.setattr(services.market, "candle_page", candle_page)
        query = """{
          a: candles(symbol: "BTC", interval: ONE_MINUTE, first: 300) { edges { node { open } } }
          b: candles(symbol: "ETH", interval: ONE_MINUTE, first: 300) { edges { node { open } } }
        }"""
        response = await gql(c, query)
        body = response.json()
        assert codes(body) == ["QUERY_TOO_COMPLEX"]
        error = body["errors"][0]
        assert error["extensions"]["cost"] == 602
        assert error["extensions"]["maximum"] == 600
        assert "602" in error["message"]
        assert body["extensions"]["cost"]["requestedQueryCost"] == 602
        assert calls == []
        assert "data" not in body or body["data"] is None

        small = await gql(c, query.replace("300", "100"))
        assert codes(small.json()) == []
        assert len(calls) == 2


async def test_the_same_document_is_charged_by_its_variables_every_time(store_server, services):
    """The static analysis is cached per document and variables: a hot query is
    analysed once, and the page size in a variable still sets each request's cost."""
    page = (
        'query($n: Int!) { candles(symbol: "BTC", interval: ONE_MINUTE, first: $n) '
        "{ edges { node { open } } } }"
    )
    async with running(store_server.url) as (app, _), http(app) as client:
        costs = []
        for n in (10, 50, 10, 50):
            body = (await gql(client, page, {"n": n})).json()
            costs.append(body["extensions"]["cost"]["requestedQueryCost"])
        assert costs == [11, 51, 11, 51]
        for _ in range(2):  # scalars only: each returned item costs 1, nothing more
            body = (await gql(client, "{ assets { symbol name } }")).json()
            assert body["extensions"]["cost"]["actualQueryCost"] == len(ASSETS)
