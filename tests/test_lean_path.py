"""The lean HTTP path (cryptovault/http/lean.py) answers exactly what Strawberry's view
does: each operation runs once through each path (the document cached first, each
path from its own client address so that both start from a full budget), and the
status, headers, body and metrics are compared. Only what the clock or chance makes
differ between two requests is normalised: error ids and the seconds until a refill."""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
import pytest

from cryptovault.http.lean import LeanPath
from tests.auth import bearer
from tests.harness import codes, gql, http, running

PRICES = "{ prices { symbol price } }"
CANDLES = """query($first: Int) { candles(symbol: "BTC", interval: ONE_MINUTE, first: $first) {
  edges { node { openTime close } } pageInfo { hasNextPage } } }"""
OPERATIONS: list[tuple[str, str, dict[str, Any] | None, dict[str, str], bool, list[str]]] = [
    # (case, query, variables, headers, served by the lean path, error codes)
    ("ok", "{ ping }", None, {}, True, []),
    ("ok, a list", PRICES, {}, {}, True, []),
    ("ok, named, signed in", "query Prices { prices { symbol } }", None, bearer("{who}"), True, []),
    ("unauthenticated", "{ account { __typename } }", {}, {}, True, ["UNAUTHENTICATED"]),
    ("an empty credential", "{ ping }", None, {"Authorization": ""}, True, []),
    ("a bad credential", "{ ping }", None, {"Authorization": "Basic x"}, True, []),
    (
        "a bad credential, a private field",
        "{ account { __typename } }",
        None,
        {"Authorization": "Basic x"},
        True,
        ["UNAUTHENTICATED"],
    ),
    ("forbidden", "{ stats { users } }", {}, bearer("{who}"), True, ["FORBIDDEN"]),
    (
        "bad variables",
        "query($s: String!) { asset(symbol: $s) { symbol } }",
        {"s": 5},
        {},
        True,
        ["BAD_USER_INPUT"],
    ),
    (
        "missing variable",
        "query($s: String!) { asset(symbol: $s) { symbol } }",
        {},
        {},
        True,
        ["BAD_USER_INPUT"],
    ),
    ("kept answer", CANDLES, {"first": 3}, {}, True, []),
    (
        "skipped by a variable",
        "query($x: Boolean!) { ping prices @skip(if: $x) { symbol } }",
        {"x": True},
        {},
        True,
        [],
    ),
    (
        "a fragment, aliases",
        '{ p: prices(symbols: ["BTC"]) { ...F } q: ping } fragment F on Price { symbol price }',
        None,
        {},
        True,
        [],
    ),
    (
        "a field error",
        '{ prices(symbols: ["NOPE"]) { symbol } }',
        None,
        {},
        True,
        ["BAD_USER_INPUT"],
    ),
    ("over the cost limit", PRICES, {}, {}, False, ["QUERY_TOO_COMPLEX"]),
    ("over the depth limit", "{ prices { symbol } }", {}, {}, False, ["QUERY_TOO_COMPLEX"]),
    ("not validated", "{ nope }", {}, {}, False, ["BAD_USER_INPUT"]),
    ("introspection", "{ __schema { queryType { name } } }", {}, {}, False, []),
]
_TIMED = [
    (re.compile(rb'"errorId":"[0-9a-f]{32}"'), b'"errorId":"-"'),
    (re.compile(rb'"retryAfter":\d+'), b'"retryAfter":-'),
    (re.compile(rb"retry in \d+ s"), b"retry in - s"),
]
_TIMED_HEADERS = {"x-ratelimit-reset", "retry-after", "ratelimit"}


def _normalised(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    body = response.content
    for pattern, replacement in _TIMED:
        body = pattern.sub(replacement, body)
    headers = [
        (k, re.sub(r"t=\d+|^\d+$", "-", v) if k in _TIMED_HEADERS else v)
        for k, v in response.headers.multi_items()
    ]
    return response.status_code, headers, body


def _graphql_samples(services: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in services.metrics.registry.collect():
        if family.name.startswith("cryptovault_graphql_"):
            for sample in family.samples:
                if not sample.name.endswith(("_sum", "_bucket", "_created")):
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def _both_paths(app, services, monkeypatch, query, variables, headers, n: int):
    """The operation through the lean path, then through the view: (lean, view),
    each (normalised response, metric deltas, served by the lean path)."""
    served: list[int] = []
    real_run = LeanPath.run

    async def counting_run(self, *args: Any) -> Any:
        served.append(1)
        return await real_run(self, *args)

    monkeypatch.setattr(LeanPath, "run", counting_run)
    # Each run its own user (a signed-in caller's budget is the user's).
    headers = {"X-Request-ID": "same-id", **headers}
    async with http(app, ip=f"10.7.{n}.1") as client:
        warm = {k: v.format(who="warm") for k, v in headers.items()}
        await gql(client, query, variables, headers=warm)  # parsed and validated once
    outcomes = []
    for ip, lean, user in ((f"10.7.{n}.2", True, 1), (f"10.7.{n}.3", False, 2)):
        if not lean:

            async def view_only(self: Any, request: Any, accept: Any) -> None:
                return None

            monkeypatch.setattr(LeanPath, "prepare", view_only)
        served.clear()
        before = _graphql_samples(services)
        async with http(app, ip=ip) as client:
            who = {k: v.format(who=f"u{user}") for k, v in headers.items()}
            response = await gql(client, query, variables, headers=who)
        outcomes.append((_normalised(response), _delta(before, _graphql_samples(services)), served))
        served = []
    monkeypatch.undo()
    return outcomes


@pytest.mark.parametrize(
    ("case", "query", "variables", "headers", "lean", "expected"),
    OPERATIONS,
    ids=[o[0] for o in OPERATIONS],
)
async def test_the_lean_path_answers_what_the_view_does(
    store_server, monkeypatch, case, query, variables, headers, lean, expected
):
    overrides: dict[str, Any] = {}
    if case == "over the cost limit":
        overrides["max_query_cost"] = 1
    if case == "over the depth limit":
        overrides["max_query_depth"] = 1
    async with running(store_server.url, **overrides) as (app, services):
        (lean_run, view_run) = await _both_paths(
            app, services, monkeypatch, query, variables, headers, 1
        )
    assert codes(orjson.loads(view_run[0][2])) == expected
    assert lean_run[0] == view_run[0]
    assert lean_run[1] == view_run[1] and view_run[1]
    assert bool(lean_run[2]) is lean
    assert not view_run[2]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"X-API-Key": ""},
        {"X-API-Key": "cv_nope"},
        {"Authorization": "x"},
    ],
    ids=["none", "empty Authorization", "empty X-API-Key", "unknown key", "bad scheme"],
)
async def test_the_real_authenticator_alike(store_server, monkeypatch, headers):
    """With the app's own authenticator (the harness's is the tests' stand-in): an
    anonymous request (TokenAuthenticator.anonymous, no `authenticate`) and refused
    credentials, through both paths."""
    from cryptovault.security.authenticator import TokenAuthenticator

    async with running(store_server.url) as (app, services):
        services.authenticator = TokenAuthenticator(
            services.identity.tokens, services.identity.sessions, services.api_keys
        )
        for query in ("{ ping }", "{ account { __typename } }"):
            (lean_run, view_run) = await _both_paths(
                app, services, monkeypatch, query, None, headers, 4
            )
            assert lean_run[0] == view_run[0], query
            assert lean_run[1] == view_run[1]
            assert lean_run[2] and not view_run[2]


async def test_a_rate_limited_operation_is_refused_alike(store_server, monkeypatch):
    async with running(store_server.url, cost_budget_anonymous=1) as (app, services):
        (lean_run, view_run) = await _both_paths(app, services, monkeypatch, PRICES, {}, {}, 2)
    status, _, body = lean_run[0]
    assert status == 429 and b'"RATE_LIMITED"' in body and b'"data"' not in body
    assert lean_run[0] == view_run[0]
    assert lean_run[1] == view_run[1]
    assert lean_run[2] and not view_run[2]


async def test_the_negotiated_media_type_alike(store_server, monkeypatch):
    accept = {"Accept": "application/graphql-response+json"}
    async with running(store_server.url) as (app, services):
        (lean_run, view_run) = await _both_paths(
            app, services, monkeypatch, "{ ping }", None, accept, 3
        )
        assert lean_run[0] == view_run[0] and lean_run[2]
        assert ("content-type", "application/graphql-response+json") in lean_run[0][1]


DIRECT_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("ok", {"json": {"query": "{ ping }"}}),
    ("PUT", {"json": {"query": "{ ping }"}, "method": "PUT"}),
    ("another path", {"json": {"query": "{ ping }"}, "url": "/graphql/"}),
    ("a kept answer", {"json": {"query": PRICES}}),
    ("an error", {"json": {"query": '{ prices(symbols: ["NOPE"]) { symbol } }'}}),
    ("not validated", {"json": {"query": "{ nope }"}}),
    ("bad JSON", {"content": b"{", "headers": {"content-type": "application/json"}}),
    ("not JSON", {"content": b"query=x", "headers": {"content-type": "text/plain"}}),
    ("a batch", {"json": [{"query": "{ ping }"}]}),
    ("no Accept we serve", {"json": {"query": "{ ping }"}, "headers": {"accept": "text/html"}}),
    ("CORS", {"json": {"query": "{ ping }"}, "headers": {"origin": "https://evil.example"}}),
    ("headers set by a resolver", {"json": {"query": "{ ping }"}}),
]


def _setting_headers(self: Any, real: Any, prepared: Any, context: Any) -> Any:
    # As a resolver setting headers the edge also sets (Vary, Cache-Control).
    result = real(self, prepared, context)
    context.response.headers["Cache-Control"] = "private, max-age=5"
    context.response.headers["Vary"] = "Accept"
    context.response.set_cookie("seen", "1")
    return result


@pytest.mark.parametrize(
    ("case", "request_args"), DIRECT_REQUESTS, ids=[c for c, _ in DIRECT_REQUESTS]
)
async def test_the_edge_hands_post_graphql_to_the_view_as_the_router_would(
    store_server, monkeypatch, case, request_args
):
    """POST /graphql goes from the edge middleware straight to the view
    (middleware.DirectRoute): the same status, headers and body as through the
    router, and the access log's operation names."""
    from cryptovault.middleware import DirectRoute

    taken: list[bool] = []
    real = DirectRoute.matches

    def spying(self: Any, scope: Any) -> bool:
        taken.append(real(self, scope))
        return taken[-1]

    async with running(store_server.url) as (app, _):
        async with http(app, ip="10.8.0.1") as client:
            await client.post("/graphql", json={"query": PRICES})  # cached
            await client.post("/graphql", json={"query": "{ ping }"})
        outcomes = []
        real_started = LeanPath._started
        for n, direct in ((2, True), (3, False)):
            if case == "headers set by a resolver":
                monkeypatch.setattr(
                    LeanPath, "_started", functools.partialmethod(_setting_headers, real_started)
                )
            if direct:
                monkeypatch.setattr(DirectRoute, "matches", spying)
            else:
                monkeypatch.setattr(DirectRoute, "matches", lambda self, scope: False)
            args = {"method": "POST", "url": "/graphql", **request_args}
            args["headers"] = {"X-Request-ID": "same-id", **args.get("headers", {})}
            async with http(app, ip=f"10.8.0.{n}") as client:
                outcomes.append(_normalised(await client.request(**args)))
        monkeypatch.undo()
    # Only POST /graphql is handed on directly.
    assert taken == [case not in ("PUT", "another path")]
    assert outcomes[0] == outcomes[1]
    if case == "headers set by a resolver":
        headers = [name for name, _ in outcomes[0][1]]
        assert headers.count("cache-control") == 1 and headers.count("vary") == 1
        assert ("set-cookie", "seen=1; Path=/; SameSite=lax") in outcomes[0][1]


async def test_a_body_sent_again_is_answered_as_its_first_time(store_server, monkeypatch):
    """The lean path remembers a body of a query alone (LeanPath._bodies): the same
    bytes again are the same operation, served without decoding them; a body with
    variables is never taken for another, nor one operation name for another."""
    served: list[str] = []
    real_run = LeanPath.run

    async def counting_run(self: Any, prepared: Any, *args: Any) -> Any:
        served.append(prepared.query)
        return await real_run(self, prepared, *args)

    monkeypatch.setattr(LeanPath, "run", counting_run)
    asset = "query($s: String!) { asset(symbol: $s) { symbol } }"
    two = "query A { ping } query B { assets { symbol } }"
    async with running(store_server.url) as (app, _), http(app) as client:
        for _ in range(3):
            for symbol in ("BTC", "ETH"):
                body = (await gql(client, asset, {"s": symbol})).json()
                assert body["data"]["asset"]["symbol"] == symbol
            ping = await client.post("/graphql", json={"query": "{ ping }"})
            assert ping.json()["data"] == {"ping": "pong"}
            by_name = {
                name: (await client.post("/graphql", json={"query": two, "operationName": name}))
                for name in ("A", "B")
            }
            assert by_name["A"].json()["data"] == {"ping": "pong"}
            assert len(by_name["B"].json()["data"]["assets"]) >= 10
    # The first of each document parsed and validated it (the view); then lean.
    assert served.count("{ ping }") == 2 and served.count(asset) == 5
