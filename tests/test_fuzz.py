"""Generated operations and malformed requests: never a 500, never a stack trace, and
every error carries one of the documented codes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import http, running

CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "CONFLICT",
    "INSUFFICIENT_FUNDS",
    "RATE_LIMITED",
    "QUERY_TOO_COMPLEX",
    "ACCOUNT_LOCKED",
    "TWO_FACTOR_REQUIRED",
    "PERSISTED_QUERY_NOT_FOUND",
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NAMES = [
    "assets", "asset", "prices", "candles", "rateLimit", "symbol", "name", "price", "bid",
    "edges", "node", "open", "close", "pageInfo", "hasNextPage", "endCursor", "limit",
    "remaining", "__typename", "__schema", "__type", "types", "fields", "nope", "first",
]  # fmt: skip
ARGS = ["symbol", "symbols", "interval", "first", "after", "last", "name", "bogus"]

literal = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(["ONE_MINUTE", "ONE_DAY", "BOGUS", "null", "true", '"BTC"', '["ETH"]', "$v"]),
)
arguments = st.lists(st.tuples(st.sampled_from(ARGS), literal), max_size=3).map(
    lambda args: "(" + ", ".join(f"{k}: {v}" for k, v in args) + ")" if args else ""
)


def field(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(
        st.sampled_from(["", "a: ", "b: "]),
        st.sampled_from(NAMES),
        arguments,
        st.sampled_from(["", " @include(if: true)", " @skip(if: $v)", " @nope"]),
        st.one_of(st.just(""), children.map(lambda c: " { " + c + " }")),
    ).map("".join)


selection = st.recursive(
    field(st.just("symbol")),
    lambda inner: st.lists(field(inner), min_size=1, max_size=4).map(" ".join),
    max_leaves=12,
)
operation = st.one_of(
    st.tuples(
        st.sampled_from(["", "query Q($v: Boolean)", "subscription", "mutation"]), selection
    ).map(lambda t: f"{t[0]} {{ {t[1]} }}"),
    selection.map(lambda s: "{ ...F } fragment F on Query { " + s + " }"),
    st.text(max_size=80),  # not GraphQL at all
)
json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
async def fuzz_app(store_server):
    async with running(store_server.url, max_batch_operations=3) as (app, _):
        yield app


def check(response) -> None:
    assert response.status_code < 500 or response.status_code == 504, response.text
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text
    body = response.json()
    for item in body if isinstance(body, list) else [body]:
        for error in item.get("errors") or []:
            assert error["extensions"]["code"] in CODES, error


@FUZZ
@given(
    query=operation,
    variables=st.one_of(st.none(), st.dictionaries(st.sampled_from(["v", "x"]), json_value)),
)
async def test_generated_operations(fuzz_app, query, variables):
    async with http(fuzz_app) as client:
        check(await client.post("/graphql", json={"query": query, "variables": variables}))
        if len(query) < 300:
            check(await client.get("/graphql", params={"query": query}, headers={"Accept": "*/*"}))


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        json_value.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["query", "variables", "operationName", "extensions"]), json_value
        ).map(lambda v: json.dumps(v).encode()),
        st.lists(
            st.dictionaries(st.sampled_from(["query", "extensions"]), json_value), max_size=5
        ).map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "",
            "application/graphql",
        ]
    ),
    accept=st.sampled_from(
        ["*/*", "application/graphql-response+json", "text/html", "", "image/png"]
    ),
)
async def test_malformed_requests(fuzz_app, body, content_type, accept):
    headers = {"Content-Type": content_type, "Accept": accept}
    async with http(fuzz_app) as client:
        response = await client.post("/graphql", content=body, headers=headers)
        check(response)
        params = {
            "query": body.decode(errors="replace")[:200],
            "variables": "{",
            "extensions": "[]",
        }
        check(await client.get("/graphql", params=params, headers={"Accept": accept or "*/*"}))
