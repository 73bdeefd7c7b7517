"""Differential tests of the HTTP hot path against what it replaces: the prepared
execution against graphql-core's `execute` (random documents with fragments, aliases,
directives by variables, errors and null propagation, run again and concurrently on one
prepared execution), and the in-memory cost budget against `limits`' own strategy
(random steps across window boundaries)."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
from typing import Any

import pytest
from graphql import execute, get_named_type, is_leaf_type, parse, validate
from strawberry.execution import optimized_is_awaitable

from cryptovault.http.prepared import prepare
from cryptovault.protection.limiter import Limiter
from cryptovault.resolvers.context import Context
from cryptovault.schema import build_schema
from tests.conftest import make_settings, tick

# -- The prepared execution ---------------------------------------------

_ROOTS = [
    "ping",
    "prices",
    'prices(symbols: ["BTC", "eth"])',
    "prices(symbols: $s)",
    "assets",
    'asset(symbol: "BTC")',
    "asset(symbol: $one)",
    'candles(symbol: "BTC", interval: ONE_MINUTE, first: 2)',
    "rateLimit",
    "account",
    "viewer",
    'node(id: "bm9wZQ==")',
    "stats",
]
_VARIABLES: list[dict[str, Any] | None] = [
    {"x": True},
    {"x": False, "s": ["BTC"]},
    {"x": True, "s": ["NOPE"]},
    {"x": "yes"},
    None,
    {"x": True, "one": "XYZ"},
]
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+Z")


def _selection(type_: Any, rnd: random.Random, depth: int) -> str:
    named = get_named_type(type_)
    fields = list(named.fields.items())
    parts = []
    for name, field in rnd.sample(fields, min(len(fields), rnd.randint(1, 4))):
        if any(a.type.__class__.__name__ == "GraphQLNonNull" for a in field.args.values()):
            continue
        leaf = is_leaf_type(get_named_type(field.type))
        inner = "" if leaf or depth >= 4 else _selection(field.type, rnd, depth + 1)
        if not leaf and not inner:
            continue
        alias = f"a{rnd.randint(0, 9)}: " if rnd.random() < 0.2 else ""
        directive = rnd.choice(["", "", "", "", " @include(if: $x)", " @skip(if: $x)"])
        parts.append(f"{alias}{name}{directive} {inner}")
    if rnd.random() < 0.3 or not parts:
        parts.append("__typename")
    if rnd.random() < 0.2:
        return f"{{ ... on {named.name} {{ {' '.join(parts)} }} }}"
    return "{ " + " ".join(parts) + " }"


def _document(core: Any, rnd: random.Random) -> str:
    body = []
    for n, root in enumerate(rnd.sample(_ROOTS, rnd.randint(1, 3))):
        field = core.query_type.fields[root.split("(")[0]]
        inner = "" if is_leaf_type(get_named_type(field.type)) else _selection(field.type, rnd, 1)
        directive = rnd.choice(["", "", "", " @include(if: $x)"])
        body.append(f"r{n}: {root}{directive} {inner}")
    text = " ".join(body)
    definitions = [
        definition
        for variable, definition in (
            ("$x", "$x: Boolean = true"),
            ("$s", "$s: [String!]"),
            ("$one", '$one: String = "BTC"'),
        )
        if variable in text
    ]
    query = ("query(" + ", ".join(definitions) + ") " if definitions else "") + "{ " + text + " }"
    if rnd.random() < 0.3:
        query = query.replace("{ ", "{ ...F ", 1) + " fragment F on Query { __typename ping }"
    return query


async def _settled(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _normalised(result: Any) -> str:
    # resetAt and the like are read from the clock at each execution.
    return _TIMESTAMP.sub("T", json.dumps(result.formatted, sort_keys=True))


async def test_random_documents_answer_as_graphql_core_again_and_concurrently(services):
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "10.00"))
    schema = build_schema()
    core, executor = schema._schema, schema.execution_context_class
    rnd = random.Random(16)
    compared = shared = 0
    for _ in range(150):
        query = _document(core, rnd)
        document = parse(query)
        if validate(core, document):
            continue  # e.g. a variable only used under a skipped branch: not generated
        hide = rnd.random() < 0.5
        prepared = prepare(core, document, document.definitions[0], executor, hide)  # type: ignore[arg-type]
        assert prepared is not None, query
        shared += prepared._shared

        def expected(variables: dict[str, Any] | None, doc: Any = document, h: bool = hide) -> Any:
            return execute(
                core,
                doc,
                context_value=Context(services, None),  # type: ignore[arg-type]
                variable_values=variables,
                executor_class=executor,
                is_awaitable=optimized_is_awaitable,
                hide_suggestions=h,
                operation_extensions=None,
            )

        for variables in _VARIABLES:
            want = await _settled(expected(variables))
            got = await _settled(prepared.execute(Context(services, None), variables, None))  # type: ignore[arg-type]
            assert _normalised(got) == _normalised(want), (query, variables)
            compared += 1
        # Several executions of one prepared operation at once, with other variables.
        batch = [{"x": n % 2 == 0} for n in range(6)]
        results = await asyncio.gather(
            *[_settled(prepared.execute(Context(services, None), v, None)) for v in batch]  # type: ignore[arg-type]
        )
        for variables, got in zip(batch, results, strict=True):
            assert _normalised(got) == _normalised(await _settled(expected(variables))), query
            compared += 1
    assert compared > 500 and shared > 10


# -- The in-memory budget -----------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(40))
async def test_random_budget_steps_count_as_the_limits_strategy(monkeypatch, seed):
    """spend (incl. cost 0 and over the limit), charge (debts) and afford, at random
    times (window boundaries, expiry instants), on the fast and the stock path."""
    rnd = random.Random(seed)
    clock = _Clock(6000.0)
    monkeypatch.setattr("limits.aio.storage.memory.time", clock)
    window = rnd.choice([1, 7, 60])
    settings = make_settings(
        "mongodb://unused",
        cost_budget=100,
        cost_budget_anonymous=30,
        cost_window_seconds=window,
    )
    fast, stock = Limiter(settings), Limiter(settings)
    stock._in_memory = False
    keys = ["user:a", "user:b", "ip:1.2.3.4"]
    for step in range(150):
        if rnd.random() < 0.3:
            clock.now += rnd.choice([0.0, 0.001, window / 2, window, 2 * window, rnd.random()])
        key = rnd.choice(keys)
        cost = rnd.choice([0, 1, 5, 10, 29, 30, 31, 50, 99, 100, 101, 250])
        kind = rnd.random()
        if kind < 0.7:
            got, want = await fast.spend(key, cost), await stock.spend(key, cost)
        elif kind < 0.85:
            got, want = await fast.charge(key, cost), await stock.charge(key, cost)
        else:
            got, want = await fast.afford(key, cost), await stock.afford(key, cost)
        assert got == want, (seed, step, key, cost)

        def live(limiter: Limiter) -> dict[str, int]:
            storage = limiter.storage
            return {
                k: v
                for k, v in storage.storage.items()  # type: ignore[attr-defined]
                if storage.expirations.get(k, 0) > clock.now  # type: ignore[attr-defined]
            }

        assert live(fast) == live(stock), (seed, step)
