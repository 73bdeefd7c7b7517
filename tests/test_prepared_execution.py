"""A prepared execution (cryptovault/http/prepared.py) answers exactly what
graphql-core's `execute` does for the same document, variables and context: data,
errors with their messages, paths and locations, null propagation, variable coercion
errors (with and without suggestions), directives, fragments, async resolvers; and
again on the next request, from what it kept of the first."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from graphql import execute, parse, validate
from strawberry.execution import optimized_is_awaitable

from cryptovault.http.prepared import prepare
from cryptovault.resolvers.context import Context
from cryptovault.schema import build_schema
from tests.conftest import tick

CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ ping }", None),
    ("{ ping ping __typename }", None),
    ('{ a: prices(symbols: ["BTC", "ETH"]) { symbol price } b: ping }', None),
    ('{ prices(symbols: ["NOPE"]) { symbol } }', None),  # a field error, nulled up
    ('{ asset(symbol: "NOPE") { symbol } ping }', None),
    ("{ assets { symbol price { price high24h } } }", None),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": ["btc"]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": [5]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": ["BTC", "NOPE"]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", None),
    ("query($s: String!) { asset(symbol: $s) { symbol } }", {}),
    ("query($s: String!) { asset(symbol: $s) { symbl: symbol } }", {"s": {"x": 1}}),
    ("query($x: Boolean!) { ping prices @skip(if: $x) { symbol } }", {"x": True}),
    ("query($x: Boolean!) { ping prices @skip(if: $x) { symbol } }", {"x": False}),
    ("query($x: Boolean!) { ...F @include(if: $x) } fragment F on Query { ping }", {"x": False}),
    (
        "{ ...P prices { ... on Price { price } } } fragment P on Query { prices { symbol } }",
        None,
    ),
    (
        'query($c: String) { candles(symbol: "BTC", interval: ONE_MINUTE, first: 2, after: $c)'
        " { edges { node { close } } } }",
        {"c": "not a cursor"},
    ),
    (
        '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 2) { edges { node { close } } '
        "pageInfo { hasNextPage } } }",
        None,
    ),
    ("{ account { __typename } }", None),  # needs a viewer: UNAUTHENTICATED
]


async def _settled(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("hide", [False, True])
async def test_a_prepared_execution_answers_as_graphql_core(services, hide):
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "10.00"))
    schema = build_schema()
    core, executor = schema._schema, schema.execution_context_class
    compared = 0
    prepared_for: dict[str, Any] = {}
    # Twice over, a document's cases one after the other (variables that skip a field,
    # then keep it; an error, then none): each from what the earlier ones kept.
    for query, variables in CASES + CASES:
        document, prepared = prepared_for.get(query, (None, None))
        if prepared is None:
            document = parse(query)
            assert validate(core, document) == [], query
            operation = document.definitions[0]
            prepared = prepare(core, document, operation, executor, hide)  # type: ignore[arg-type]
            assert prepared is not None, query
            prepared_for[query] = (document, prepared)
        context = Context(services, None)  # type: ignore[arg-type]
        expected = await _settled(
            execute(
                core,
                document,  # type: ignore[arg-type]
                context_value=context,
                variable_values=variables,
                executor_class=executor,
                is_awaitable=optimized_is_awaitable,
                hide_suggestions=hide,
                operation_extensions=None,
            )
        )
        got = await _settled(prepared.execute(Context(services, None), variables, None))  # type: ignore[arg-type]
        assert got.formatted == expected.formatted, (query, variables)
        assert [e.original_error.__class__ for e in got.errors or ()] == [
            e.original_error.__class__ for e in expected.errors or ()
        ], query
        compared += 1
    shared = sum(p._shared for _, p in prepared_for.values())
    assert compared == 2 * len(CASES)
    assert 0 < shared < len(prepared_for)  # documents with directives collect fields each time


def test_what_it_does_not_cover_takes_graphql_core():
    schema = build_schema()
    core, executor = schema._schema, schema.execution_context_class

    class Unknown(executor):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.extra_state: list[Any] = []

    document = parse("{ ping }")
    operation = document.definitions[0]
    assert prepare(core, document, operation, executor, False) is not None  # type: ignore[arg-type]
    assert prepare(core, document, operation, Unknown, False) is None  # type: ignore[arg-type]
